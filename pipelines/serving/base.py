"""What every serving store does: the record kinds, generations, the resume state, and
the checks and JSON encoding the stores share.

A store holds JSON objects under (kind, key):

- generation-scoped kinds, `content` (key: user id), `default` (fallback rows; the store
  does not care about the key's shape, e.g. `segment:<segment>:<locale>`) and `traits`
  (key: user id). A full rebuild writes them under a new generation that readers do not
  see; `swap()` makes it live in one step and then removes every other generation. Reads
  and writes without a generation use the live one; before the first swap that is
  `INITIAL_GENERATION`, so incremental writes work on an empty store.
- `suppression` (key: user id), outside generations: it survives swaps. The publish job
  writes it, and the API's preference and unsubscribe endpoints write it at once.
- `preferences` (key: user id), outside generations: what a subscriber chose in the
  preference centre (topics, frequency), written and read by the API only.

Values are stored as compact JSON text (sorted keys, no NaN) and read back as dicts.
Named state strings (the exporter's resume point) live in the store itself and can be
written with a batch, in the same transaction where the store has them, so a resume point
is never ahead of the data it stands for.

A store object holds one connection and is used by one thread at a time (SQLite's
connection may not cross threads): open one per thread, request or job. Every store
raises `StoreUnavailable` when it cannot be reached or times out, with a one-line message
that holds no secret, so the API can fall back to default content.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, get_args

from pipelines.errors import TailorError

if TYPE_CHECKING:
    from pipelines.config import Config

Kind = Literal["content", "default", "traits", "suppression", "preferences"]
CONTENT: Final = "content"
DEFAULT: Final = "default"
TRAITS: Final = "traits"
SUPPRESSION: Final = "suppression"
PREFERENCES: Final = "preferences"
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
GENERATION_KINDS: Final[tuple[Kind, ...]] = (CONTENT, DEFAULT, TRAITS)
UNVERSIONED_KINDS: Final[tuple[Kind, ...]] = (SUPPRESSION, PREFERENCES)

INITIAL_GENERATION: Final = "g0"
MAX_READ_KEYS: Final = 1000
# json.dumps(separators=(",", ":"), sort_keys=True, allow_nan=False), built once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)
# Generation names go into keys and glob patterns: no separators, no glob characters.
_GENERATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StoreUnavailable(TailorError):
    """The serving store cannot be reached, timed out, or refused the work (throttled
    past its retries, locked past the busy timeout). The message is one line, no secrets."""


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def check_generation(generation: str) -> str:
    if not isinstance(generation, str) or not _GENERATION_NAME.match(generation):
        raise ValueError(f"bad generation name {generation!r}: 1-100 of A-Z a-z 0-9 . _ -, starting with a "
                         "letter or digit")
    return generation


def _all_json_object_text(bodies: Mapping[str, str]) -> bool:
    """Whether every key is a non-empty string and every body a string starting with "{",
    in C loops: a batch of the export's 5,000 rows is checked in about a millisecond. False
    sends the caller to the row-by-row check, for a message naming the first bad row."""
    try:  # str's methods refuse anything but a str with a TypeError
        return all(map(str.__len__, bodies)) and all(map(str.startswith, bodies.values(), repeat("{")))
    except TypeError:
        return False


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a record key is a non-empty string, not {key!r}")
    return key


def unique_keys(keys: Iterable[str]) -> list[str]:
    """The keys, each once, in first-seen order; a lone string is refused (it would be
    read as its characters)."""
    if isinstance(keys, str | bytes):
        raise TypeError("keys is a collection of strings, not one string")
    return [check_key(key) for key in dict.fromkeys(keys)]


def encode(value: Mapping[str, Any]) -> str:
    """Compact JSON text with sorted keys; NaN and infinities are refused (not JSON)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"a record is a mapping (a JSON object), not {type(value).__name__}")
    return _ENCODER.encode(value if isinstance(value, dict) else dict(value))


def decode(body: str | bytes) -> dict[str, Any]:
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError(f"a stored record is not a JSON object: {str(body)[:80]!r}")
    return value


def one_line(error: BaseException) -> str:
    """An exception as one short line: its class and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


class ServingStore(ABC):
    """The store the publish job writes and the API reads. Subclasses implement the
    underscore methods; the public methods check arguments and encode values first.

    Not for several threads at once: open one store object per thread."""

    def __init__(self, config: Config) -> None:
        self.config = config

    # -- writes -----------------------------------------------------------------------

    def write_batch(self, kind: Kind, rows: Mapping[str, Mapping[str, Any]], generation: str | None = None,
                    state: Mapping[str, str] | None = None) -> None:
        """Upsert `rows` (key -> JSON object) in one transaction where the store has one.
        `generation` None: the live generation (ignored for `suppression`). `state`, if
        given, is written with the rows (see the store's docstring for how atomically)."""
        kind = check_kind(kind)
        target = None if kind in UNVERSIONED_KINDS or generation is None else check_generation(generation)
        bodies = {check_key(key): encode(value) for key, value in rows.items()}
        states = self._check_state(state)
        if bodies or states:
            self._write(kind, bodies, target, states)

    def write_json(self, kind: Kind, bodies: Mapping[str, str], generation: str | None = None,
                   state: Mapping[str, str] | None = None) -> None:
        """`write_batch` for rows that are JSON object text already (the publish job's
        rows come from Spark's to_json): stored as they are, not decoded and encoded again."""
        kind = check_kind(kind)
        target = None if kind in UNVERSIONED_KINDS or generation is None else check_generation(generation)
        if not _all_json_object_text(bodies):
            for key, body in bodies.items():
                check_key(key)
                if not isinstance(body, str) or not body.startswith("{"):
                    raise TypeError(f"record {key!r}: a body is JSON object text, not {str(body)[:40]!r}")
        states = self._check_state(state)
        if bodies or states:
            self._write(kind, dict(bodies), target, states)

    def delete(self, kind: Kind, keys: Iterable[str], generation: str | None = None,
               state: Mapping[str, str] | None = None) -> None:
        """Remove `keys` (missing ones are fine) from the live generation, or `generation`."""
        kind = check_kind(kind)
        target = None if kind in UNVERSIONED_KINDS or generation is None else check_generation(generation)
        names = unique_keys(keys)
        states = self._check_state(state)
        if names or states:
            self._delete(kind, names, target, states)

    # -- reads ------------------------------------------------------------------------

    def read(self, kind: Kind, key: str) -> dict[str, Any] | None:
        """The record under `key` (live generation for generation-scoped kinds), or None."""
        return self.read_many(kind, [key]).get(key)

    def read_many(self, kind: Kind, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Records of the live generation by key, in one round trip; missing keys are
        absent from the answer; duplicates are fine; more than 1000 keys are refused."""
        kind = check_kind(kind)
        if isinstance(keys, str | bytes):
            raise TypeError("keys is a sequence of strings, not one string")
        if len(keys) > MAX_READ_KEYS:
            raise ValueError(f"read_many takes at most {MAX_READ_KEYS} keys, not {len(keys)}")
        names = unique_keys(keys)
        if not names:
            return {}
        return {key: decode(body) for key, body in self._read_many(kind, names).items()}

    # -- generations --------------------------------------------------------------------

    def live_generation(self) -> str | None:
        """The generation readers see; None before the first swap (reads and writes then
        use INITIAL_GENERATION)."""
        return self._live_generation()

    def swap(self, generation: str) -> None:
        """Make `generation` live in one atomic step, then remove the rows of every other
        generation (the one that was live, and any left by crashed rebuilds), never the
        new one. Run by one writer at a time: a rebuild in progress under another
        generation while someone swaps loses its rows."""
        self._swap(check_generation(generation))

    def keys(self, kind: Kind) -> Iterator[str]:
        """Every key of an unversioned kind (such as suppression), in no order: for a
        rebuild to find the records of people no longer published. A full scan: not for
        the request path."""
        kind = check_kind(kind)
        if kind not in UNVERSIONED_KINDS:
            raise ValueError(f"keys() lists unversioned kinds only ({', '.join(UNVERSIONED_KINDS)}), not {kind!r}")
        return self._keys(kind)

    def count(self, kind: Kind) -> int:
        """How many records of `kind` readers see (the live generation's, for versioned
        kinds). A full scan: for `tailor status`, not for the request path."""
        return self._count(check_kind(kind))

    # -- state ------------------------------------------------------------------------

    def get_state(self, name: str) -> str | None:
        return self._get_state(check_key(name))

    def set_state(self, name: str, value: str) -> None:
        self._write_state(self._check_state({name: value}))

    # -- lifecycle ----------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the store is not used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- what a store implements --------------------------------------------------------

    @abstractmethod
    def _write(self, kind: Kind, bodies: dict[str, str], generation: str | None, state: dict[str, str]) -> None:
        """Upsert encoded bodies; generation None: the live one (or no generation, for
        unversioned kinds)."""

    @abstractmethod
    def _delete(self, kind: Kind, keys: list[str], generation: str | None, state: dict[str, str]) -> None:
        ...

    @abstractmethod
    def _read_many(self, kind: Kind, keys: list[str]) -> dict[str, str | bytes]:
        """Encoded bodies of the live generation (or unversioned) for distinct keys."""

    @abstractmethod
    def _live_generation(self) -> str | None:
        ...

    @abstractmethod
    def _swap(self, generation: str) -> None:
        ...

    @abstractmethod
    def _keys(self, kind: Kind) -> Iterator[str]:
        ...

    @abstractmethod
    def _count(self, kind: Kind) -> int:
        ...

    @abstractmethod
    def _get_state(self, name: str) -> str | None:
        ...

    @abstractmethod
    def _write_state(self, state: dict[str, str]) -> None:
        ...

    @staticmethod
    def _check_state(state: Mapping[str, str] | None) -> dict[str, str]:
        if not state:
            return {}
        for name, value in state.items():
            check_key(name)
            if not isinstance(value, str):
                raise TypeError(f"state {name!r} is a string, not {type(value).__name__}")
        return dict(state)
