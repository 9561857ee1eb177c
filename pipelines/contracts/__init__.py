"""The event contract and its Python validator (no Spark needed: producers and the API use it).

`validate_event(raw)` returns the first problem with a record as (code, message), the code
being one of ERROR_CODES, the same codes the ingest job writes to bronze.quarantine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.protocols import Validator

from pipelines.contracts.events import (
    BLANK_PATTERN,
    CONTRACT_VERSION,
    EARLIEST_OCCURRED_AT,
    ENVELOPE,
    ERROR_CODES,
    EVENT_TYPES,
    EVENTS_WITHOUT_USER,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_HOURS,
    OCCURRED_AT_PATTERN,
    PAYLOADS,
    payload_schema,
)

__all__ = [
    "CONTRACT_VERSION",
    "ERROR_CODES",
    "EVENT_TYPES",
    "Problem",
    "parse_occurred_at",
    "validate_event",
]


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


_OCCURRED_AT = re.compile(OCCURRED_AT_PATTERN)
_BLANK = re.compile(BLANK_PATTERN)

# JSON integers are whole numbers written without a fraction: 1.0 is a number, not an
# integer, as Spark's JSON reader sees it too.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = validators.extend(Draft202012Validator, type_checker=_TYPES)  # type: ignore[no-untyped-call]


@cache
def _validator(event_type: str | None, version: int | None) -> Validator:
    schema = ENVELOPE if event_type is None or version is None else payload_schema(event_type, version)
    validator: Validator = _Validator(schema)
    return validator


def _where(prefix: str, path: Iterable[str | int]) -> str:
    """payload.items[].product_id: array positions are not named, so messages stay stable."""
    parts = [prefix] if prefix else []
    for step in path:
        if isinstance(step, int):
            parts[-1] = parts[-1] + "[]" if parts else "[]"
        else:
            parts.append(str(step))
    return ".".join(parts)


def _first_schema_problem(validator: Validator, value: Any, prefix: str) -> Problem | None:
    """Missing fields first, then wrong types, then bad values: the same precedence as the
    Spark expressions in pipelines.ingest.validation."""
    errors = list(validator.iter_errors(value))
    for error in errors:
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            field = ".".join(filter(None, [_where(prefix, error.absolute_path), missing]))
            return Problem("missing_field", f"required field '{field}' is missing")
    for error in errors:
        where = _where(prefix, error.absolute_path) or "record"
        if error.validator == "type":
            expected = error.validator_value
            return Problem("wrong_type", f"'{where}' must be {expected}")
    for error in errors:
        where = _where(prefix, error.absolute_path) or "record"
        # Name the rule, never the value: a value may be someone's email address.
        rule = json.dumps(error.validator_value)[:120]
        return Problem("invalid_value", f"'{where}' breaks {error.validator} {rule}")
    return None


def parse_occurred_at(text: str) -> datetime | None:
    """An ISO-8601 timestamp that carries a zone, as an aware datetime; else None."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def validate_event(raw: bytes | str | dict[str, Any], now: datetime | None = None) -> Problem | None:
    """None for a valid event, else its first problem. `now` bounds future timestamps."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_EVENT_BYTES:
            return Problem("oversized", f"record is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Problem("not_utf8", f"record is not UTF-8 (byte {exc.start})")
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > MAX_EVENT_BYTES:
            return Problem("oversized", f"record is over {MAX_EVENT_BYTES} bytes")
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            return Problem("malformed_json", f"not JSON: {exc.msg} at position {exc.pos}")
    else:
        record = raw
    if not isinstance(record, dict):
        return Problem("malformed_json", "record must be a JSON object")

    problem = _first_schema_problem(_validator(None, None), record, "")
    if problem:
        return problem
    event_type, version = record["event_type"], record["schema_version"]
    if event_type not in EVENT_TYPES:
        return Problem("unknown_event_type", f"event_type '{event_type[:64]}' is not registered")
    if version not in PAYLOADS[event_type]:
        known = ", ".join(map(str, sorted(PAYLOADS[event_type])))
        return Problem("unknown_schema_version",
                       f"{event_type} schema_version {version} is unknown (known: {known})")
    if event_type not in EVENTS_WITHOUT_USER and _BLANK.match(record.get("user_id") or ""):
        return Problem("missing_field", f"required field 'user_id' is missing for {event_type}")
    occurred_at = parse_occurred_at(record["occurred_at"]) if _OCCURRED_AT.match(record["occurred_at"]) else None
    if occurred_at is None:
        return Problem("bad_timestamp", "occurred_at must be ISO-8601 with a zone, e.g. 2026-11-27T08:00:00Z")
    now = now or datetime.now(UTC)
    earliest = datetime.fromisoformat(EARLIEST_OCCURRED_AT)
    if occurred_at < earliest or occurred_at > now + timedelta(hours=MAX_FUTURE_SKEW_HOURS):
        return Problem("bad_timestamp", "occurred_at is outside the accepted range "
                       f"({EARLIEST_OCCURRED_AT} to {MAX_FUTURE_SKEW_HOURS}h from now)")
    return _first_schema_problem(_validator(event_type, version), record["payload"], "payload")
