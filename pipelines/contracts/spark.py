"""Spark schemas derived from the JSON Schemas of `pipelines.contracts.events`.

The envelope's `payload` is read as a string: Spark's JSON reader keeps a nested object
as its JSON text when the field is typed string, so bronze keeps the payload as sent and
each payload is parsed against its own type's schema.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from pipelines.contracts.events import PAYLOADS, payload_schema

_SCALARS: dict[str, DataType] = {
    "string": StringType(),
    "integer": LongType(),
    "number": DoubleType(),
    "boolean": BooleanType(),
}


def _json_type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        concrete = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _json_type(concrete[0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    return kind


def to_spark_type(schema: dict[str, Any]) -> DataType:
    if "anyOf" in schema:
        concrete = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return to_spark_type(concrete[0])
    kind = _json_type(schema)
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            return StringType()
        return StructType([StructField(name, to_spark_type(sub), True) for name, sub in properties.items()])
    if kind == "array":
        return ArrayType(to_spark_type(schema.get("items", {"type": "string"})), True)
    return _SCALARS[kind]


def payload_spark_schema(event_type: str, schema_version: int) -> StructType:
    schema = payload_schema(event_type, schema_version)
    if schema is None:
        raise KeyError(f"no payload schema for {event_type} v{schema_version}")
    return to_spark_type(schema)  # type: ignore[return-value]


def union_payload_schema(event_types: tuple[str, ...]) -> StructType:
    """One struct holding every field the payloads of `event_types` (every version) may
    carry, for reading several types' payloads with one `from_json`: a type that lacks
    a field reads it as null. Two types that give one field different types are refused."""
    fields: dict[str, StructField] = {}
    for event_type in event_types:
        for schema in PAYLOADS[event_type].values():
            for field in to_spark_type(schema).fields:  # type: ignore[attr-defined]
                known = fields.setdefault(field.name, field)
                if known.dataType != field.dataType:
                    raise TypeError(f"payload field {field.name!r} is {known.dataType.simpleString()} in one "
                                    f"type and {field.dataType.simpleString()} in {event_type}")
    return StructType(list(fields.values()))
