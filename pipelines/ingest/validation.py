"""Validate raw records against the event contract with Spark expressions only.

The JSON Schemas of `pipelines.contracts.events` are compiled into Spark SQL expressions
over the VARIANT type (`try_parse_json`, `variant_get`, `schema_of_variant`), so the hot
path stays in the JVM: no Python UDF runs per record. The compiler writes SQL text in
plain Python and Spark parses it once per query: building the same rules as PySpark
Column objects took tens of thousands of py4j calls, over ten seconds per query start.
The checks and their precedence mirror the Python validator
(`pipelines.contracts.validate_event`); a test holds the two to the same answers on the
same corpus.

Everything here is a pure `DataFrame -> DataFrame` function, safe on streaming frames.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.config import CrmTableConfig
from pipelines.contracts.events import (
    BLANK_PATTERN,
    CONTRACT_VERSION,
    DEBEZIUM_OPS,
    EARLIEST_OCCURRED_AT,
    ENVELOPE,
    EVENTS_WITHOUT_USER,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_HOURS,
    OCCURRED_AT_PATTERN,
    PAYLOADS,
)
from pipelines.ingest.crm import (
    CUSTOMERS_TABLE,
    CrmRows,
    cleared_row,
    kept_source,
    position_id,
    position_sort,
    snapshot_read_time,
)

CRM_EVENT_TYPE = "crm_customer_change"

# Columns every source hands to validation (see pipelines.sources.raw).
SOURCE_COORDINATES = ("source_kind", "source_stream", "source_partition", "source_offset")
RAW_COLUMNS = ("raw", *SOURCE_COORDINATES, "source_timestamp")

_PROBLEM_TYPE = "struct<code:string,message:string>"
_NO_PROBLEM = f"CAST(NULL AS {_PROBLEM_TYPE})"
_INTEGER_TYPES = ("BIGINT", "INT", "SMALLINT", "TINYINT")
# Integers that fit a long are BIGINT; DECIMAL(p,0) with p < 19 is a literal such as 2.0
# whose scale the variant encoding dropped: a number, not an integer.
_WIDE_INTEGER = r"^DECIMAL\((19|[23][0-9]),0\)$"


def sql_literal(value: Any) -> str:
    """A Python value as a Spark SQL literal (strings with Spark's default escaping)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no SQL literal")
        return f"{value!r}D"  # a DOUBLE, not the DECIMAL that 2.5 alone would be
    text = str(value)
    if "${" in text:
        # F.expr substitutes ${name} variables before parsing.
        raise ValueError(f"{text[:40]!r}: '${{' would be read as a variable")
    text = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


# Conditions are written in the form Spark's optimiser would rewrite them to (negations
# pushed inward, no repeated or absorbed terms), and remember their parts: a rewrite left
# to the optimiser costs one more round of every rule over the whole plan, in every query,
# and a `NOT` over a tree of ORs takes a round per level of the tree.


class _Conjunction(str):
    """SQL text of conditions joined by AND, which remembers them: a guard built from a
    parent's guard repeats none of its conditions."""

    parts: tuple[str, ...]


class _Disjunction(str):
    """SQL text of conditions joined by OR, which remembers them."""

    parts: tuple[str, ...]


class _NotNull(str):
    """SQL text `(expression IS NOT NULL)`, which remembers the expression."""

    expression: str


class _Negation(str):
    """SQL text `NOT condition`, which remembers the condition."""

    operand: str


def _joined(kind: type, word: str, conditions: tuple[str, ...], unit: str) -> str:
    zero = "FALSE" if unit == "TRUE" else "TRUE"
    kept: list[str] = []
    for condition in conditions:
        for part in condition.parts if isinstance(condition, kind) else (condition,):
            if part == zero:
                return zero
            if part != unit and part not in kept:
                kept.append(part)
    # Absorption: a AND (a OR b) is a, and a OR (a AND b) is a (NULLs included).
    dual = _Disjunction if kind is _Conjunction else _Conjunction
    kept = [part for part in kept if not (isinstance(part, dual) and any(inner in kept for inner in part.parts))]
    if not kept:
        return unit
    if len(kept) == 1:
        return kept[0]
    joined = kind("(" + f" {word} ".join(kept) + ")")
    joined.parts = tuple(kept)
    return joined


def _all(*conditions: str) -> str:
    return _joined(_Conjunction, "AND", conditions, "TRUE")


def _any(conditions: list[str]) -> str:
    return _joined(_Disjunction, "OR", tuple(conditions), "FALSE")


def _not_null(expression: str) -> str:
    condition = _NotNull(f"({expression} IS NOT NULL)")
    condition.expression = expression
    return condition


def _differs(expression: str, value: str) -> str:
    return _not(f"({expression} = {value})")


def _not(condition: str) -> str:
    """SQL: NOT `condition`, with the negation pushed inward as Spark's optimiser would."""
    if isinstance(condition, _Conjunction):
        return _any([_not(part) for part in condition.parts])
    if isinstance(condition, _Disjunction):
        return _all(*[_not(part) for part in condition.parts])
    if isinstance(condition, _NotNull):
        return f"({condition.expression} IS NULL)"
    if isinstance(condition, _Negation):
        return condition.operand
    if condition in ("TRUE", "FALSE"):
        return "FALSE" if condition == "TRUE" else "TRUE"
    negation = _Negation(f"NOT {condition}")
    negation.operand = condition
    return negation


def _in(expression: str, values: Any) -> str:
    literals = list(dict.fromkeys(sql_literal(v) for v in values))
    if len(literals) == 1:
        return f"({expression} = {literals[0]})"
    return f"({expression} IN ({', '.join(literals)}))"


@dataclass(frozen=True)
class _Check:
    """A SQL condition that holds when the record breaks a rule, and the SQL message."""

    condition: str
    message: str


def _text(message: str) -> str:
    return sql_literal(message)


class _Node(ABC):
    """A JSON value inside a record: its type name (null when absent) and typed reads, as SQL."""

    @abstractmethod
    def type_name(self) -> str: ...

    @abstractmethod
    def string(self) -> str: ...

    @abstractmethod
    def double(self) -> str: ...

    @abstractmethod
    def elements(self) -> str: ...

    @abstractmethod
    def child(self, name: str) -> _Node: ...

    def element(self, variable: str) -> _Node:
        """The node an array element bound to `variable` in a lambda reads through."""
        return _Inline(variable)

    def present(self) -> str:
        return _not_null(self.type_name())


class _Inline(_Node):
    """A variant expression read where it is used: array elements inside a lambda."""

    def __init__(self, expression: str):
        self.expression = expression

    def type_name(self) -> str:
        return f"schema_of_variant({self.expression})"

    def string(self) -> str:
        return f"try_variant_get({self.expression}, '$', 'string')"

    def double(self) -> str:
        return f"try_variant_get({self.expression}, '$', 'double')"

    def elements(self) -> str:
        return f"try_variant_get({self.expression}, '$', 'array<variant>')"

    def child(self, name: str) -> _Node:
        return _Inline(f"variant_get({self.expression}, {sql_literal('$.' + name)}, 'variant')")


class _Reads:
    """Per-row reads of the parsed record, each computed once, for the full checks.

    The checks refer to these reads, not to fresh variant lookups: the rule set stays
    small enough for Spark to compile, and a path read by ten checks is read once. The
    reads live either in a column `_reads` computed only where `gate` holds, or, with
    `variable`, in a struct bound to that lambda variable by `bound`: an expression of
    its own, evaluated only where it is used."""

    def __init__(self, root: str, gate: str | None = None, variable: str | None = None):
        self.root, self.gate, self.variable = root, gate, variable
        self.expressions: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def column(self, kind: str, path: str) -> str:
        key = f"{kind}:{path}"
        if key not in self.names:
            name = self.names[key] = f"_read{len(self.names)}"
            at = sql_literal(path)
            variant = self.root if path == "$" else f"variant_get({self.root}, {at}, 'variant')"
            expression = {
                "type": f"schema_of_variant({variant})",
                "string": f"try_variant_get({self.root}, {at}, 'string')",
                "double": f"try_variant_get({self.root}, {at}, 'double')",
                "elements": f"try_variant_get({self.root}, {at}, 'array<variant>')",
            }[kind]
            self.expressions[name] = expression
        if self.variable:
            return f"{self.variable}.{self.names[key]}"
        return f"_reads.{self.names[key]}" if self.gate else self.names[key]

    def _struct(self) -> str:
        return "named_struct(" + ", ".join(f"{sql_literal(name)}, {expression}"
                                           for name, expression in self.expressions.items()) + ")"

    def bound(self, expression: str) -> str:
        """SQL: `expression`, which refers to the reads through `variable`, with the reads
        computed once. Evaluated by the interpreter, as any lambda is (see `interpreted`)."""
        if not self.expressions:
            return expression
        return f"element_at(transform(array({self._struct()}), {self.variable} -> {expression}), 1)"

    def add_to(self, df: DataFrame) -> DataFrame:
        if self.gate:
            # One struct behind one condition: a row the gate leaves out pays for one test,
            # not one per read. Only the few gated rows read it (see `interpreted`).
            return df.withColumn("_reads", F.expr(f"CASE WHEN {self.gate} THEN {interpreted(self._struct())} END"))
        return df.select("*", *[F.expr(expression).alias(name) for name, expression in self.expressions.items()])


class _Path(_Node):
    def __init__(self, reads: _Reads, path: str = "$"):
        self.reads, self.path = reads, path

    def type_name(self) -> str:
        return self.reads.column("type", self.path)

    def string(self) -> str:
        return self.reads.column("string", self.path)

    def double(self) -> str:
        return self.reads.column("double", self.path)

    def elements(self) -> str:
        return self.reads.column("elements", self.path)

    def child(self, name: str) -> _Node:
        return _Path(self.reads, f"{self.path}.{name}")


class _Direct(_Node):
    """A path of the parsed record read where it is used, for the fast path: only the rows
    that take it pay for the read."""

    def __init__(self, root: str, path: str = "$"):
        self.root, self.path = root, path

    def _get(self, kind: str) -> str:
        return f"try_variant_get({self.root}, {sql_literal(self.path)}, {sql_literal(kind)})"

    def type_name(self) -> str:
        return f"schema_of_variant(variant_get({self.root}, {sql_literal(self.path)}, 'variant'))"

    def string(self) -> str:
        return self._get("string")

    def double(self) -> str:
        return self._get("double")

    def elements(self) -> str:
        return self._get("array<variant>")

    def child(self, name: str) -> _Node:
        return _Direct(self.root, f"{self.path}.{name}")


class _Typed(_Node):
    """A value of a record already parsed into Spark types (`from_json`), for the fast
    path: the record's shape is known to match, so a field reads directly. A variant read
    to a type builds a Literal and a Cast expression per value (Spark 4.1's
    VariantGet.cast), which cost most of validation's time."""

    def __init__(self, expression: str):
        self.expression = expression

    def type_name(self) -> str:
        raise TypeError("a typed value has no JSON type name: only value checks read it")

    def string(self) -> str:
        return self.expression

    def double(self) -> str:
        return self.expression

    def elements(self) -> str:
        return self.expression

    def child(self, name: str) -> _Node:
        return _Typed(f"{self.expression}.`{name}`")

    def element(self, variable: str) -> _Node:
        return _Typed(variable)


def _spark_type(schema: dict[str, Any]) -> str | None:
    """The Spark type `from_json` reads a value of this schema into, on the fast path:
    every number as DOUBLE (what the range checks compare), an object without properties
    as its JSON text. None when no one type fits (several JSON types besides null)."""
    kinds = [kind for kind in _kinds(schema) if kind != "null"]
    if len(kinds) != 1:
        return None
    kind = kinds[0]
    if kind == "object" and "properties" in schema:
        fields = []
        for name, sub in schema["properties"].items():
            field_type = _spark_type(sub)
            if field_type is None or not _PLAIN_KEY.fullmatch(name):
                return None
            fields.append(f"`{name}`: {field_type}")
        return f"STRUCT<{', '.join(fields)}>"
    if kind == "array" and "items" in schema:
        inner = _spark_type(schema["items"])
        return None if inner is None else f"ARRAY<{inner}>"
    return {"string": "STRING", "integer": "DOUBLE", "number": "DOUBLE", "boolean": "BOOLEAN",
            "object": "STRING"}.get(kind)


def _kinds(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    return kind if isinstance(kind, list) else [kind] if kind else []


def _has_json_type(node: _Node, kind: str | list[str]) -> str:
    kinds = kind if isinstance(kind, list) else [kind]
    name = node.type_name()
    tests = []
    for one in kinds:
        if one == "string":
            tests.append(f"({name} = 'STRING')")
        elif one == "integer":
            tests.append(_any([_in(name, _INTEGER_TYPES), f"({name} RLIKE {sql_literal(_WIDE_INTEGER)})"]))
        elif one == "number":
            tests.append(_any([_in(name, (*_INTEGER_TYPES, "DOUBLE", "FLOAT")), f"startswith({name}, 'DECIMAL')"]))
        elif one == "boolean":
            tests.append(f"({name} = 'BOOLEAN')")
        elif one == "object":
            tests.append(f"startswith({name}, 'OBJECT')")
        elif one == "array":
            tests.append(f"startswith({name}, 'ARRAY')")
        elif one == "null":
            tests.append(f"({name} = 'VOID')")
        else:
            raise ValueError(f"JSON type {one!r} has no Spark check")
    return _any(tests)


def _value_checks(schema: dict[str, Any], node: _Node, where: str, typed: bool = False) -> list[_Check]:
    """Constraints on a value of the right type: enum, length, pattern, range, size.

    `typed`: the record's shape is already known to match the schema (the fast path), so
    no type guard is needed: a typed read of an absent or null value is SQL NULL, and a
    comparison with NULL never holds."""
    checks: list[_Check] = []
    kinds = _kinds(schema)
    not_null = "TRUE" if typed else _differs(node.type_name(), "'VOID'")
    if "enum" in schema:
        checks.append(_Check(_all(not_null, _not(_in(node.string(), schema['enum']))),
                             _text(f"'{where}' breaks enum")))
    if "string" in kinds:
        is_string = "TRUE" if typed else f"({node.type_name()} = 'STRING')"
        # Counting characters walks the string; its byte length is stored. A character is
        # 1 to 4 bytes, so the byte length settles most records without the count.
        if schema.get("minLength", 0) > 0:
            shortest = schema["minLength"]
            checks.append(_Check(_all(is_string, f"(octet_length({node.string()}) < {4 * shortest})",
                                      f"(char_length({node.string()}) < {shortest})"),
                                 _text(f"'{where}' breaks minLength {shortest}")))
        if "maxLength" in schema:
            longest = schema["maxLength"]
            checks.append(_Check(_all(is_string, f"(octet_length({node.string()}) > {longest})",
                                      f"(char_length({node.string()}) > {longest})"),
                                 _text(f"'{where}' breaks maxLength {longest}")))
        if "pattern" in schema:
            checks.append(_Check(_all(is_string, f"NOT ({node.string()} RLIKE {sql_literal(schema['pattern'])})"),
                                 _text(f"'{where}' breaks pattern")))
    if "minimum" in schema:
        checks.append(_Check(_all(not_null, f"({node.double()} < {sql_literal(schema['minimum'])})"),
                             _text(f"'{where}' breaks minimum {schema['minimum']}")))
    if "maximum" in schema:
        checks.append(_Check(_all(not_null, f"({node.double()} > {sql_literal(schema['maximum'])})"),
                             _text(f"'{where}' breaks maximum {schema['maximum']}")))
    if "minItems" in schema:
        is_array = f"({node.elements()} IS NOT NULL)" if typed else _has_json_type(node, "array")
        checks.append(_Check(_all(is_array, f"(size({node.elements()}) < {schema['minItems']})"),
                             _text(f"'{where}' breaks minItems {schema['minItems']}")))
    return checks


def _compile(schema: dict[str, Any], node: _Node, where: str, guard: str, depth: int = 0
             ) -> tuple[list[_Check], list[_Check], list[_Check]]:
    """(missing, wrong_type, invalid) checks for `node`, which is known present when `guard`."""
    missing: list[_Check] = []
    wrong: list[_Check] = []
    invalid: list[_Check] = []
    kind = schema.get("type")
    kinds = _kinds(schema)
    if kind is not None:
        wrong.append(_Check(_all(guard, _not(_has_json_type(node, kind))),
                            _text(f"'{where or 'record'}' must be {kind}")))
    well_typed = _all(guard, _has_json_type(node, kind)) if kind is not None else guard
    invalid += [_Check(_all(well_typed, check.condition), check.message)
                for check in _value_checks(schema, node, where or "record")]

    properties = schema.get("properties", {})
    if properties:
        is_object = _all(well_typed, _has_json_type(node, "object"))
        for name, sub in properties.items():
            child = node.child(name)
            sub_missing, sub_wrong, sub_invalid = _compile(
                sub, child, f"{where}.{name}".strip("."), _all(is_object, child.present()), depth)
            missing += sub_missing
            wrong += sub_wrong
            invalid += sub_invalid
        for name in schema.get("required", []):
            field = f"{where}.{name}".strip(".")
            missing.append(_Check(_all(is_object, _not(node.child(name).present())),
                                  _text(f"required field '{field}' is missing")))
    items = schema.get("items")
    if items and "array" in kinds:
        # Each check an element gets becomes `exists(elements, x -> check)`, the lambda's
        # variable bound to the element (one name per nesting depth).
        is_array = _all(well_typed, _has_json_type(node, "array"))
        element = f"_element{depth}"
        shape = _compile(items, _Inline(element), f"{where}[]", "TRUE", depth + 1)
        for bucket, template in zip((missing, wrong, invalid), shape, strict=True):
            bucket += [_Check(_all(is_array, f"exists({node.elements()}, {element} -> {check.condition})"),
                              check.message) for check in template]
    return missing, wrong, invalid


def _typed_checks(schema: dict[str, Any], node: _Node, where: str, depth: int = 0) -> list[_Check]:
    """The invalid-value checks of `_compile`, in its order, for a record whose shape is
    known to match the schema: nothing missing, nothing of the wrong type."""
    checks = _value_checks(schema, node, where or "record", typed=True)
    for name, sub in schema.get("properties", {}).items():
        checks += _typed_checks(sub, node.child(name), f"{where}.{name}".strip("."), depth)
    items = schema.get("items")
    if items and "array" in _kinds(schema):
        element = f"_element{depth}"
        checks += [_Check(f"exists({node.elements()}, {element} -> {check.condition})", check.message)
                   for check in _typed_checks(items, node.element(element), f"{where}[]", depth + 1)]
    return checks


# The fast path. `schema_of_variant` of a whole record is one cheap string, such as
# OBJECT<event_id: STRING, ..., payload: OBJECT<quantity: BIGINT, ...>, ...>, with keys
# sorted. A regular expression built from an event type's schema matches exactly the
# shapes in which no required field is missing and no field has the wrong type, so a
# record that matches needs only its value checks (enum, length, pattern, range); any
# other record takes the full check list, which names what is wrong. One exception:
# an array's shape merges its elements (a missing key or a null in one element is hidden
# by the others), so each element is also checked for its required and non-null keys.
_FIELD_START = "(?:(?<=<)|, )"
_ANY_KEY = r"(?:[A-Za-z0-9_]++|`(?:[^`]|``)*+`)"
_SCALAR_SHAPE = r"(?:STRING|BOOLEAN|VOID|BIGINT|INT|SMALLINT|TINYINT|DOUBLE|FLOAT|DECIMAL\(\d+,\d+\))"
_INTEGER_SHAPE = "BIGINT|INT|SMALLINT|TINYINT"
_SHAPES = {"string": "STRING", "boolean": "BOOLEAN", "null": "VOID",
           "number": rf"{_INTEGER_SHAPE}|DOUBLE|FLOAT|DECIMAL\(\d+,\d+\)",
           "integer": rf"{_INTEGER_SHAPE}|DECIMAL\((?:19|[23][0-9]),0\)"}
_PLAIN_KEY = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_FAST_SHAPE = 4096


def _shape_regex(schema: dict[str, Any], in_array: bool = False, tolerant: bool = True) -> str | None:
    """The regular expression of the valid shapes of `schema`, or None when the fast path
    does not cover it (anyOf, untyped objects, arrays of arrays, objects inside arrays'
    elements): those records take the full checks. `tolerant`: objects may carry scalar
    fields the schema does not name."""
    alternatives = []
    for kind in _kinds(schema) or [None]:
        if kind == "integer" and in_array:
            # Elements merge: [1, 2.0] is ARRAY<DECIMAL(20,0)>, though 2.0 is not an integer.
            alternatives.append(_INTEGER_SHAPE)
        elif kind in _SHAPES:
            alternatives.append(_SHAPES[kind])
        elif kind == "object" and "properties" in schema:
            fields = _object_regex(schema, in_array, tolerant)
            if fields is None:
                return None
            alternatives.append(fields)
        elif kind == "array" and "items" in schema and not in_array:
            inner = _shape_regex(schema["items"], True, tolerant)
            if inner is None:
                return None
            alternatives.append(f"ARRAY<{inner}>")
        else:
            return None
    return "(?:" + "|".join(f"(?:{alternative})" for alternative in alternatives) + ")"


def _object_regex(schema: dict[str, Any], in_array: bool, tolerant: bool) -> str | None:
    properties, required = schema["properties"], set(schema.get("required", []))
    names = sorted(properties)
    if not all(_PLAIN_KEY.fullmatch(name) for name in names):
        return None
    if in_array and any("object" in _kinds(sub) or "array" in _kinds(sub) for sub in properties.values()):
        return None
    # Fields the schema does not name are carried along (tolerant readers), when scalar;
    # the lookahead keeps a named field of the wrong type from passing as one of them.
    unnamed = f"{_FIELD_START}(?!(?:{'|'.join(names)}): ){_ANY_KEY}: {_SCALAR_SHAPE}" if names else \
        f"{_FIELD_START}{_ANY_KEY}: {_SCALAR_SHAPE}"
    # Possessive (*+): Java's regex recurses once per repeat of a backtracking loop, and a
    # record with hundreds of unnamed fields would overflow a task's stack.
    between = f"(?:{unnamed})*+" if tolerant else ""
    parts = ["OBJECT<", between]
    for name in names:
        shape = _shape_regex(properties[name], in_array, tolerant)
        if shape is None:
            return None
        field = f"{_FIELD_START}{name}: {shape}"
        parts += [field if name in required else f"(?:{field})?", between]
    return "".join(parts) + ">"


def _element_conditions(schema: dict[str, Any], node: _Node, depth: int = 0) -> list[str]:
    """SQL conditions that hold when every element of every array under `schema` has its
    required keys and no null where the schema allows none (what a merged shape hides)."""
    conditions = []
    for name, sub in schema.get("properties", {}).items():
        conditions += _element_conditions(sub, node.child(name), depth)
    items = schema.get("items")
    if items and "array" in _kinds(schema):
        element = f"_element{depth}"
        each = [] if "null" in _kinds(items) else [f"NOT is_variant_null({element})"]
        for key, sub in items.get("properties", {}).items():
            value = f"variant_get({element}, {sql_literal('$.' + key)}, 'variant')"
            if key in items.get("required", []):
                each.append(f"({value} IS NOT NULL)")
            if "null" not in _kinds(sub):
                each.append(f"NOT coalesce(is_variant_null({value}), FALSE)")
        if each:
            conditions.append(f"coalesce(forall({node.elements()}, {element} -> {_all(*each)}), TRUE)")
    return conditions


def _fast_path(event_type: str, version: int, payload: dict[str, Any]) -> str:
    """SQL: TRUE when a record of this type and version has a valid shape (see above)."""
    envelope = {**ENVELOPE, "properties": {**ENVELOPE["properties"], "payload": payload}}
    shape = _shape_regex(envelope)
    if shape is None:
        return "FALSE"
    # Most records carry only the fields the contract names: the expression without room
    # for others settles them at a fraction of the cost of the one with it.
    exact = _shape_regex(envelope, tolerant=False)
    # A shape longer than any valid record of the contract has reason to be takes the
    # full checks (a bound on the regex's work, whatever a record holds).
    matches = (f"(octet_length(_shape) <= {_MAX_FAST_SHAPE} AND (_shape RLIKE {sql_literal('^' + exact + '$')} "
               f"OR _shape RLIKE {sql_literal('^' + shape + '$')}))")
    return _all(matches, *_element_conditions(payload, _Direct("_v", "$.payload")))


def _per_payload(then: Callable[[str, int, dict[str, Any], str], str], event_type: str = "event_type",
                 version: str = "schema_version") -> str:
    """SQL: CASE over every registered (event_type, schema_version), each branch
    `then(event_type, version, payload schema, condition)`; NULL for any other record."""
    branches = []
    for name, versions in PAYLOADS.items():
        for number, schema in versions.items():
            matches = f"({event_type} = {sql_literal(name)} AND {version} = {number})"
            branches.append(f"WHEN {matches} THEN {then(name, number, schema, matches)}")
    return f"CASE {' '.join(branches)} END"


# The envelope as `from_json` reads it on the fast path, without the payload (its text
# comes from the variant, its values from `_typed_payloads`); schema_version is the INT
# the bronze column holds.
_ENVELOPE_DDL = ", ".join(f"`{name}` {'INT' if name == 'schema_version' else _spark_type(schema)}"
                          for name, schema in ENVELOPE["properties"].items() if name != "payload")


def _typed_payload_column(name: str, number: int) -> str:
    return f"_payload_{name}_v{number}"


def _payload_node(name: str, number: int, schema: dict[str, Any]) -> _Node:
    """Where the fast path's value checks read a payload: its typed column, or the variant
    when no Spark type fits the schema."""
    if _spark_type(schema) is None:
        return _Direct("_v", "$.payload")
    return _Typed(_typed_payload_column(name, number))


def _typed_payloads() -> dict[str, str]:
    """A column per registered payload with a Spark type: a fast-path record's payload
    parsed into it, null for any other record."""
    columns = {}
    for name, versions in PAYLOADS.items():
        for number, schema in versions.items():
            spark_type = _spark_type(schema)
            if spark_type is not None:
                columns[_typed_payload_column(name, number)] = (
                    f"CASE WHEN _fast AND event_type = {sql_literal(name)} AND schema_version = {number} "
                    f"THEN from_json(payload, {sql_literal(spark_type)}) END")
    return columns


def interpreted(expression: str) -> str:
    """SQL: `expression`, evaluated by Spark's interpreter instead of generated Java.

    For the full checks, which only the few records that fail the shape check need: Spark
    generates a projection's Java again in every task, and for rules this size that took
    longer than interpreting them for those few records (and the generated methods grew
    past what the JIT compiles). A lambda's body is interpreted (Spark's higher-order
    functions have no generated form), so the expression goes in one, called once."""
    return f"element_at(transform(array(0), _interpreted -> {expression}), 1)"


def first_problem(checks: list[tuple[str, _Check]]) -> str:
    """SQL: struct(code, message) of the first check that holds, or null."""
    if not checks:
        return _NO_PROBLEM
    branches = " ".join(f"WHEN {check.condition} THEN named_struct('code', {sql_literal(code)}, "
                        f"'message', {check.message})" for code, check in checks)
    return f"CASE {branches} ELSE {_NO_PROBLEM} END"


def _schema_checks(schema: dict[str, Any], node: _Node, where: str) -> list[tuple[str, _Check]]:
    missing, wrong, invalid = _compile(schema, node, where, node.present())
    return ([("missing_field", c) for c in missing] + [("wrong_type", c) for c in wrong]
            + [("invalid_value", c) for c in invalid])


def _envelope_unknown_version(event_type: str, version: str) -> str:
    """SQL: TRUE unless `version` is registered for `event_type` (a CASE: an OR of one AND
    per type is what the optimiser would spend rounds factoring)."""
    branches = " ".join(f"WHEN {sql_literal(name)} THEN {_in(version, versions)}"
                        for name, versions in PAYLOADS.items())
    return f"coalesce(NOT CASE {event_type} {branches} ELSE FALSE END, TRUE)"


_EARLIEST = f"CAST({sql_literal(EARLIEST_OCCURRED_AT)} AS TIMESTAMP)"


def _out_of_range(timestamp: str) -> str:
    # A difference, not `unix_micros(t) > _latest_micros`: Spark would turn that comparison
    # back into one with a BIGINT constant (see `_parsed`).
    return f"(({timestamp} < {_EARLIEST}) OR (CAST(unix_micros({timestamp}) AS DECIMAL(20,0)) - _latest_micros > 0))"


def _occurred_at_problems(text: str, timestamp: str) -> list[tuple[str, _Check]]:
    return [
        ("bad_timestamp", _Check(f"(NOT ({text} RLIKE {sql_literal(OCCURRED_AT_PATTERN)}) OR {timestamp} IS NULL)",
                                 _text("occurred_at must be ISO-8601 with a zone, e.g. 2026-11-27T08:00:00Z"))),
        ("bad_timestamp", _Check(_out_of_range(timestamp),
                                 _text(f"occurred_at is outside the accepted range ({EARLIEST_OCCURRED_AT} "
                                       f"to {MAX_FUTURE_SKEW_HOURS}h from now)"))),
    ]


def _raw_problems(record: _Node) -> list[tuple[str, _Check]]:
    """Checks on the bytes, before any field: `raw` is the record, `_text` its string."""
    return [
        ("malformed_json", _Check("(raw IS NULL)", _text("empty message (null value)"))),
        ("oversized", _Check(f"(octet_length(raw) > {MAX_EVENT_BYTES})",
                             f"format_string({sql_literal(f'record is %d bytes; the limit is {MAX_EVENT_BYTES}')}, "
                             "octet_length(raw))")),
        ("not_utf8", _Check("NOT is_valid_utf8(_text)", _text("record is not UTF-8"))),
        ("malformed_json", _Check(_not(record.present()), _text("not JSON"))),
        ("malformed_json", _Check(_not(_has_json_type(record, 'object')), _text("record must be a JSON object"))),
        _TRAILING_DATA,
    ]


# Spark's parser stops after the first value; Python's (the reference) refuses the rest.
_TRAILING_DATA = ("malformed_json", _Check("NOT endswith(trim(_text), '}')",
                                           _text("not JSON: extra data after the object")))


def _parsed(df: DataFrame, name: str, now: Column | None) -> DataFrame:
    """Adds `_text` (the bytes as a string), `_latest_micros` (the latest time accepted,
    `now` plus the allowed skew), and the record parsed as a VARIANT in `name` (null when it
    is not a parsable JSON record)."""
    parsable = f"raw IS NOT NULL AND octet_length(raw) <= {MAX_EVENT_BYTES} AND is_valid_utf8(_text)"
    latest = F.unix_micros(F.current_timestamp() if now is None else now) + MAX_FUTURE_SKEW_HOURS * 3_600_000_000
    return (df.withColumn("_text", F.col("raw").cast("string"))
            # A DECIMAL, not a timestamp: Spark writes a timestamp or BIGINT constant into the
            # generated Java, so every batch's time would make new code, compiled again
            # (seconds, for rules this size); a DECIMAL constant is passed to the code instead.
            .withColumn("_latest_micros", latest.cast("decimal(20,0)"))
            .withColumn(name, F.expr(f"CASE WHEN {parsable} THEN try_parse_json(_text) END")))


OUTPUT_COLUMNS = (
    "event_id", "event_type", "schema_version", "user_id", "occurred_at", "source", "payload",
    "event_date", *RAW_COLUMNS, "stream", "control", "error_code", "error_message",
)


def _with_columns(df: DataFrame, columns: dict[str, str]) -> DataFrame:
    return df.withColumns({name: F.expr(expression) for name, expression in columns.items()})


def _finish(df: DataFrame, reads: _Reads, problem: str) -> DataFrame:
    return (reads.add_to(df)
            .withColumn("_problem", F.expr(problem))
            .withColumn("error_code", F.col("_problem.code"))
            .withColumn("error_message", F.col("_problem.message"))
            .withColumn("event_date", F.to_date("occurred_at"))
            .select(*OUTPUT_COLUMNS))


def _payload_problem(schema: dict[str, Any]) -> str:
    """SQL: the first problem of a payload of this schema, for the full checks. Each event
    type's checks and reads are an expression of their own, evaluated only for records of
    that type: the cost of a record does not grow with the number of types registered."""
    reads = _Reads("_v", variable="_payload_reads")
    problem = first_problem(_schema_checks(schema, _Path(reads, "$.payload"), "payload"))
    return reads.bound(problem)


def validate_events(df: DataFrame, now: Column | None = None) -> DataFrame:
    """Raw first-party records -> envelope columns plus error_code / error_message.

    A valid record has a null error_code; an invalid one keeps its raw bytes and source
    coordinates for the quarantine. `now` bounds future timestamps (default: batch time).
    """
    df = _parsed(df, "_v", now)
    # The shape, and the envelope read by Spark's JSON reader into typed fields: a record
    # on the fast path takes its values from there.
    envelope = f"from_json(_text, {sql_literal(_ENVELOPE_DDL)})"
    df = _with_columns(df, {"_shape": "schema_of_variant(_v)", "_env": f"CASE WHEN _v IS NOT NULL THEN {envelope} END"})
    fast = _per_payload(lambda name, number, schema, _: _fast_path(name, number, schema),
                        "_env.event_type", "_env.schema_version")
    df = _with_columns(df, {"_fast": f"coalesce({fast}, FALSE)"})

    def read(field: str, variant_read: str) -> str:
        return f"CASE WHEN _fast THEN _env.{field} ELSE {variant_read} END"

    df = _with_columns(df, {
        "event_id": read("event_id", "try_variant_get(_v, '$.event_id', 'string')"),
        "event_type": read("event_type", "try_variant_get(_v, '$.event_type', 'string')"),
        "schema_version": read("schema_version", "try_variant_get(_v, '$.schema_version', 'int')"),
        "user_id": read("user_id", "try_variant_get(_v, '$.user_id', 'string')"),
        "_occurred_text": read("occurred_at", "try_variant_get(_v, '$.occurred_at', 'string')"),
        "source": read("source", "try_variant_get(_v, '$.source', 'string')"),
        # The variant's text on both paths: it keeps every digit as sent.
        "payload": "to_json(variant_get(_v, '$.payload', 'variant'))",
        "stream": "'events'",
        "control": "CAST(NULL AS STRING)",
    })
    df = _with_columns(df, {"occurred_at": f"CASE WHEN _occurred_text RLIKE {sql_literal(OCCURRED_AT_PATTERN)} "
                                           "THEN try_to_timestamp(_occurred_text) END",
                            **_typed_payloads()})
    occurred_at_problems = _occurred_at_problems("_occurred_text", "occurred_at")
    user_id_missing = ("missing_field", _Check(_all(_not(_in('event_type', sorted(EVENTS_WITHOUT_USER))),
                                                    f"(user_id IS NULL OR user_id RLIKE {sql_literal(BLANK_PATTERN)})"),
                                               "format_string('required field \\'user_id\\' is missing for %s', "
                                               "event_type)"))
    # A record on the fast path parsed as a JSON object, so of the checks on the bytes only
    # the one for data after the object can hold.
    fast_envelope = ([_TRAILING_DATA] + [("invalid_value", c) for c in _typed_checks(ENVELOPE, _Typed("_env"), "")]
                     + [user_id_missing] + occurred_at_problems)
    fast_payload = _per_payload(lambda name, number, schema, _matches: first_problem(
        [("invalid_value", c) for c in _typed_checks(schema, _payload_node(name, number, schema), "payload")]))
    fast_problem = f"coalesce({first_problem(fast_envelope)}, {fast_payload})"

    reads = _Reads("_v", gate="NOT _fast")
    record = _Path(reads)
    envelope_checks = (
        _raw_problems(record)
        + _schema_checks(ENVELOPE, record, "")
        + [("unknown_event_type", _Check(_not(_in('event_type', PAYLOADS)),
                                         "concat('event_type \\'', substring(event_type, 1, 64), "
                                         "'\\' is not registered')")),
           # An integer beyond INT reads as NULL: unknown, not "not known to be unknown".
           ("unknown_schema_version", _Check(_envelope_unknown_version("event_type", "schema_version"),
                                             "format_string('%s schema_version %s is unknown', event_type, "
                                             f"{record.child('schema_version').string()})")),
           user_id_missing]
        + occurred_at_problems
    )
    payload_problem = _per_payload(lambda _name, _number, schema, _matches: _payload_problem(schema))
    full_problem = f"coalesce({first_problem(envelope_checks)}, {payload_problem})"
    return _finish(df, reads, f"CASE WHEN _fast THEN {fast_problem} ELSE {interpreted(full_problem)} END")


_EXPECTED_OPS = sql_literal("'; expected one of " + ", ".join(DEBEZIUM_OPS))


def _table_index(tables: dict[str, CrmTableConfig]) -> str:
    """Which configured table a change is of: the first whose name is the source's table
    (MongoDB: collection), schema.table, db.table or db.schema.table."""
    table = "coalesce(try_variant_get(_v, '$.source.table', 'string'), " \
            "try_variant_get(_v, '$.source.collection', 'string'))"
    schema, db = "try_variant_get(_v, '$.source.schema', 'string')", "try_variant_get(_v, '$.source.db', 'string')"
    names = (f"array({table}, concat_ws('.', {schema}, {table}), concat_ws('.', {db}, {table}), "
             f"concat_ws('.', {db}, {schema}, {table}))")
    return "CASE " + " ".join(f"WHEN array_contains({names}, {sql_literal(name)}) THEN {index}"
                              for index, name in enumerate(tables)) + " END"


def _per_table(tables: dict[str, CrmTableConfig], then: Callable[[int, CrmTableConfig], str]) -> str:
    return "CASE _table_index " + " ".join(f"WHEN {index} THEN {then(index, table)}"
                                           for index, table in enumerate(tables.values())) + " END"


def validate_crm_changes(df: DataFrame, now: Column | None = None,
                         tables: dict[str, CrmTableConfig] | None = None) -> DataFrame:
    """Debezium change envelopes (bare, or in Kafka Connect's {"schema","payload"} wrapper)
    of the configured CRM `tables` -> the same columns as `validate_events`, as
    `crm_customer_change` events whose payload is the change in the canonical shape
    `pipelines.ingest.crm` describes.

    Not data, so neither bronze nor quarantine (`control`): a Kafka tombstone (null value
    after a delete), a truncate (op t), a schema-change message (ddl, tableChanges). The
    event_id is the change's identity in the source database (table, log position, op,
    user), so a redelivered change is a duplicate, and two changes are never one.
    """
    tables = tables or CUSTOMERS_TABLE
    rows = CrmRows(tables)
    df = _parsed(df, "_outer", now)
    outer = _Inline("_outer")
    wrapped = _all(_has_json_type(outer, "object"), _has_json_type(outer.child("payload"), "object"),
                   outer.child("schema").present())
    df = _with_columns(df, {"_v": f"CASE WHEN {wrapped} THEN variant_get(_outer, '$.payload', 'variant') "
                                  "ELSE _outer END"})
    reads = _Reads("_v")
    change = _Path(reads)
    df = _with_columns(df, {
        "_op": "try_variant_get(_v, '$.op', 'string')",
        "_source_ts": "try_variant_get(_v, '$.source.ts_ms', 'bigint')",
        "_db_table": "concat_ws('.', try_variant_get(_v, '$.source.db', 'string'), "
                     "coalesce(try_variant_get(_v, '$.source.table', 'string'), "
                     "try_variant_get(_v, '$.source.collection', 'string')))",
        "_table_index": _table_index(tables),
        "_position": position_sort(),
        "_position_id": position_id(),
        "control": "CASE WHEN raw IS NULL THEN 'tombstone' WHEN _op = 't' THEN 'truncate' "
                   "WHEN try_variant_get(_v, '$.op', 'variant') IS NULL "
                   "AND (try_variant_get(_v, '$.ddl', 'variant') IS NOT NULL "
                   "OR try_variant_get(_v, '$.tableChanges', 'variant') IS NOT NULL) THEN 'schema_change' END",
    })
    for stage in rows.stages():
        df = _with_columns(df, stage)
    df = _with_columns(df, {
        "user_id": _per_table(tables, lambda index, _: (
            f"coalesce({rows.user_id(index, 'after')}, {rows.user_id(index, 'before')})")),
        "_row_key": _per_table(tables, lambda index, table: (
            f"coalesce({rows.row_key(index, 'after')}, {rows.row_key(index, 'before')})" if table.row_key
            else "CAST(NULL AS STRING)")),
        "_updated_at_text": _per_table(tables, lambda index, table: (
            f"{rows.updated_at(index, 'after')}.text" if table.updated_at else "CAST(NULL AS STRING)")),
        "_updated_at_sent": _per_table(tables, lambda index, table: (
            f"{rows.updated_at(index, 'after')}.present" if table.updated_at else "CAST(NULL AS BOOLEAN)")),
        # Years 0001-9999: timestamp_millis raises past them, and one such change would stop the stream.
        "_read_at": "timestamp_millis(CASE WHEN _source_ts BETWEEN -62135596800000 AND 253402300799999 "
                    "THEN _source_ts END)",
    })
    df = _with_columns(df, {"_row_changed_at": "try_to_timestamp(_updated_at_text)"})

    def after(index: int, table: CrmTableConfig) -> str:
        sent = rows.canonical(index, "after", "user_id")
        if table.deletes_profile:
            return sent
        return f"CASE WHEN _op = 'd' THEN {cleared_row('user_id', table)} ELSE {sent} END"

    # A delete in a table that does not delete the person is an update that clears its fields.
    keeps_profile = [index for index, table in enumerate(tables.values()) if not table.deletes_profile]
    canonical_op = f"CASE WHEN _op = 'd' AND {_in('_table_index', keeps_profile)} THEN 'u' ELSE _op END" \
        if keeps_profile else "_op"
    df = _with_columns(df, {
        "_before_json": _per_table(tables, lambda index, _: rows.canonical(index, "before", "user_id")),
        "_after_json": _per_table(tables, after),
        "_canonical_op": canonical_op,
    })
    df = _with_columns(df, {
        # concat_ws leaves out a null row key: tables without one keep the ids they had.
        "event_id": "CASE WHEN user_id IS NOT NULL AND _position_id IS NOT NULL "
                    "THEN concat_ws(':', 'crm', _db_table, _position_id, _op, user_id, _row_key) END",
        "event_type": sql_literal(CRM_EVENT_TYPE),
        "schema_version": "1",
        # A snapshot read holds the row as of the snapshot's start, which can be hours before
        # the read: placed at its read time, it would undo a change committed in between.
        # When the table says when the row last changed, the read goes there instead (by
        # the connector's clock, `snapshot_read_time`); never later than the read, never
        # before the accepted range.
        "occurred_at": "CASE WHEN _read_at IS NOT NULL AND _op = 'r' AND _row_changed_at IS NOT NULL THEN "
                       f"least(_read_at, greatest({snapshot_read_time('_row_changed_at')}, {_EARLIEST})) "
                       "ELSE _read_at END",
        "source": "'crm'",
        "payload": "concat('{\"op\":', to_json(CAST(_canonical_op AS VARIANT)), "
                   "',\"ts_ms\":', coalesce(to_json(try_variant_get(_v, '$.ts_ms', 'variant')), 'null'), "
                   f"',\"source\":', {kept_source()}, "
                   "',\"position\":', coalesce(to_json(CAST(_position AS VARIANT)), 'null'), "
                   "',\"before\":', coalesce(_before_json, 'null'), ',\"after\":', coalesce(_after_json, 'null'), "
                   "CASE WHEN _op = 'd' AND _canonical_op = 'u' THEN ',\"clears_fields\":true' ELSE '' END, '}')",
        "stream": "'crm'",
    })
    needs_after = _in("_op", ("c", "r", "u"))

    def has_row(row: _Node) -> str:
        return _all(row.present(), _differs(row.type_name(), "'VOID'"))

    def row_is_object(side: str) -> tuple[str, _Check]:
        sent = change.child(side)
        return ("wrong_type", _Check(_all(has_row(sent), _not(_has_json_type(sent, 'object')),
                                          _any([_not(_has_json_type(sent, 'string')), f"({rows.row(side)} IS NULL)"])),
                                     _text(f"'{side}' must be an object or null")))

    def missing_key(_: int, table: CrmTableConfig) -> str:
        keys = " + ".join(table.key)
        return _text(f"change has no key: neither after.{keys} nor before.{keys}")

    def undecodable(index: int, side: str) -> tuple[str, _Check]:
        failed, message = rows.undecodable(index, side)
        return "invalid_value", _Check(_all(f"(_table_index = {index})", failed), message)

    undecodable_values = [undecodable(index, side) for index in range(len(tables)) for side in CrmRows.SIDES]

    def not_a_time(_: int, table: CrmTableConfig) -> str:
        return _text(f"'after.{table.updated_at}' is not a time (crm.tables updated_at; an epoch number needs its "
                     "encoding in crm.tables types)")

    def not_sent(_: int, table: CrmTableConfig) -> str:
        return _text(f"'after.{table.updated_at}' is missing: a snapshot read is placed by it (crm.tables updated_at)")

    unreadable_updated_at = ("invalid_value", _Check("(_op = 'r' AND _updated_at_text IS NOT NULL "
                                                     "AND _row_changed_at IS NULL)", _per_table(tables, not_a_time)))
    # A relational connector sends every column, so a read without it is a misconfiguration
    # (a misspelt name, column.exclude.list); a MongoDB document may lack the field.
    unsent_updated_at = ("invalid_value", _Check("(_op = 'r' AND NOT _updated_at_sent "
                                                 "AND try_variant_get(_v, '$.source.ord', 'bigint') IS NULL)",
                                                 _per_table(tables, not_sent)))
    checks = (
        _raw_problems(outer)
        + [("missing_field", _Check(_not(change.child('op').present()), _text("required field 'op' is missing"))),
           ("missing_field", _Check(_not(change.child('source').present()),
                                    _text("required field 'source' is missing"))),
           ("missing_field", _Check(_not(change.child('ts_ms').present()),
                                    _text("required field 'ts_ms' is missing"))),
           ("wrong_type", _Check(_not(_has_json_type(change.child('op'), 'string')), _text("'op' must be string"))),
           ("wrong_type", _Check(_not(_has_json_type(change.child('source'), 'object')),
                                 _text("'source' must be object"))),
           ("invalid_value", _Check("_table_index IS NULL",
                                    "concat('table \\'', substring(_db_table, 1, 128), '\\' is not in crm.tables')")),
           ("missing_field", _Check(_all(needs_after, _not(has_row(change.child('after')))),
                                    "format_string('op \\'%s\\' needs \\'after\\'', _op)")),
           ("missing_field", _Check(_all("(_op = 'd')", _not(has_row(change.child('before')))),
                                    _text("op 'd' needs 'before'"))),
           row_is_object("after"), row_is_object("before")]
        + undecodable_values
        + [unreadable_updated_at, unsent_updated_at,
           ("missing_field", _Check("(user_id IS NULL)", _per_table(tables, missing_key))),
           ("missing_field", _Check("(_position_id IS NULL)",
                                    _text("change has no sequence: neither a log position nor source.ts_ms"))),
           ("missing_field", _Check("(_source_ts IS NULL)", _text("required field 'source.ts_ms' is missing"))),
           ("wrong_type", _Check(_not(_has_json_type(change.child('ts_ms'), 'integer')),
                                 _text("'ts_ms' must be integer"))),
           ("invalid_value", _Check(_not(_in('_op', DEBEZIUM_OPS)),
                                    f"concat('unknown op \\'', substring(_op, 1, 8), {_EXPECTED_OPS})")),
           # The source's own time: a read placed earlier still needs a sane one.
           ("bad_timestamp", _Check(f"(occurred_at IS NULL OR {_out_of_range('_read_at')})",
                                    _text("source.ts_ms is outside the accepted range")))]
    )
    return _finish(df, reads, f"CASE WHEN control IS NOT NULL THEN {_NO_PROBLEM} ELSE {first_problem(checks)} END")


def add_ingest_columns(df: DataFrame) -> DataFrame:
    """Stamp the batch time and the contract version every bronze row carries."""
    return (df.withColumn("ingested_at", F.current_timestamp())
            .withColumn("contract_version", F.lit(CONTRACT_VERSION)))
