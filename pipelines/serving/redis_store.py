"""The Redis serving store: the API's low-latency store for real deployments.

Keys (`<prefix>` is serving.redis.key_prefix, one per environment sharing a Redis):

    <prefix>:g:<generation>:<kind>:<key>   content, default, traits rows (JSON text)
    <prefix>:suppression:<key>             suppression records, outside generations
    <prefix>:preferences:<key>             preference-centre choices, outside generations
    <prefix>:live                          the live generation (absent before the first swap: g0)
    <prefix>:state:<name>                  state strings (the exporter's resume point)
    <prefix>:generations                   a set: every generation written to, for the swap's clean-up

A write is one MULTI/EXEC transaction: the generation's SADD, MSETs of the rows and the
state. The MSETs are of a few hundred rows each, each sent as soon as it is packed, so
the server reads and parses one while the next is packed, instead of waiting for one
command of the whole batch (bench/export.py: 2.1-2.5x the rows per second). A write to the
live generation WATCHes `<prefix>:live`, so a swap between reading the pointer and EXEC
makes the transaction retry against the new pointer, never land in a generation that is
being removed. `read_many` is one round trip: a
small Lua script (EVALSHA) that reads the pointer and MGETs the keys under it; a
suppression read is one MGET. A swap SETs the pointer, then, for every other generation in
`<prefix>:generations`, SCANs `<prefix>:g:<generation>:*` (glob characters escaped) and
UNLINKs what it finds in chunks, through a script that re-checks the pointer first, so a
generation someone made live meanwhile is kept.

The scripts name keys they build themselves, which a standalone Redis (or a primary with
replicas: ElastiCache without cluster mode) allows, a Redis Cluster does not: cluster mode
is not supported. The password comes from secrets.redis_password (TAILOR_REDIS_PASSWORD),
never from the URL. Connection errors and timeouts (serving.redis.socket_timeout_s, for
connecting and for each reply; one immediate retry, for a pooled connection the server
closed) raise `StoreUnavailable`. redis-py's client is thread-safe, but keep to one store
object per thread as for every store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipelines.errors import ConfigError
from pipelines.serving.base import (
    INITIAL_GENERATION,
    UNVERSIONED_KINDS,
    Kind,
    ServingStore,
    StoreUnavailable,
    one_line,
)

if TYPE_CHECKING:
    from pipelines.config import Config

_CLEAN_CHUNK_KEYS = 1000
_WATCH_ATTEMPTS = 10
# Rows per MSET (keys per UNLINK) within a transaction: small enough that the server
# parses one while the next is packed, large enough that the per-command cost is noise.
_COMMAND_ROWS = 500

# KEYS[1] the live pointer; ARGV: the initial generation, the prefix, the kind, the keys.
_READ_LIVE = """
local live = redis.call('GET', KEYS[1]) or ARGV[1]
local base = ARGV[2] .. ':g:' .. live .. ':' .. ARGV[3] .. ':'
local names = {}
for i = 4, #ARGV do names[i - 3] = base .. ARGV[i] end
return redis.call('MGET', unpack(names))
"""
# KEYS[1] the live pointer; ARGV: the generation being removed, the initial generation, its keys.
_REMOVE_UNLESS_LIVE = """
local live = redis.call('GET', KEYS[1]) or ARGV[2]
if live == ARGV[1] then return -1 end
return redis.call('UNLINK', unpack(ARGV, 3))
"""
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _text(value: Any) -> str | None:
    """A reply (bytes, as this client does not decode) as text."""
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class RedisStore(ServingStore):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        settings = config.serving.redis
        self.prefix = settings.key_prefix
        self._password = config.secret("redis_password")
        try:
            self._client = redis.Redis.from_url(
                settings.url, password=self._password, socket_timeout=settings.socket_timeout_s,
                socket_connect_timeout=settings.socket_timeout_s, retry=Retry(NoBackoff(), 1))
        except ValueError as error:
            raise ConfigError(f"serving.redis.url: not a Redis URL ({one_line(error).split(':', 1)[0]}); "
                              "expected redis://host:port/db, rediss://... or unix://...") from None
        options = self._client.connection_pool.connection_kwargs
        where = options.get("path") or f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
        self._where = f"{where}/{options.get('db', 0)}"
        self._live_key = f"{self.prefix}:live"
        self._generations_key = f"{self.prefix}:generations"
        self._read_live = self._client.register_script(_READ_LIVE)
        self._remove_unless_live = self._client.register_script(_REMOVE_UNLESS_LIVE)

    # -- keys -----------------------------------------------------------------------------

    def record_key(self, kind: Kind, key: str, generation: str | None) -> str:
        """Where a record lives: generation None is for unversioned kinds only."""
        if kind in UNVERSIONED_KINDS:
            return f"{self.prefix}:{kind}:{key}"
        return f"{self.prefix}:g:{generation}:{kind}:{key}"

    def _state_key(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    # -- helpers ------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as error:
            message = one_line(error)
            if self._password:
                message = message.replace(self._password, "****")
            raise StoreUnavailable(f"Redis serving store at {self._where}: {message}") from None

    def _transaction(self, kind: Kind, generation: str | None,
                     commands: Callable[[str | None], Iterable[Sequence[str]]]) -> None:
        """Run the commands `commands(generation)` yields in one MULTI/EXEC. For the live
        generation of a generation-scoped kind, the pointer is WATCHed and read first, and
        the whole transaction retried if a swap moved it before EXEC. A connection that fails
        before EXEC is sent (a pooled one the server closed) is replaced once; after EXEC the
        transaction may have landed, and running it again could undo a write another client
        made meanwhile (an erasure after a preference change), so that error is raised."""
        with self._errors():
            for attempt in (1, 2):
                connection: Any = self._client.connection_pool.get_connection()
                sent = [False]
                try:
                    return self._transaction_on(connection, kind, generation, commands, sent)
                except redis.ConnectionError:
                    connection.disconnect()
                    if attempt == 2 or sent[0]:
                        raise
                except BaseException:
                    # Replies may be left unread: the connection is not reused.
                    connection.disconnect()
                    raise
                finally:
                    self._client.connection_pool.release(connection)

    def _transaction_on(self, connection: Any, kind: Kind, generation: str | None,
                        commands: Callable[[str | None], Iterable[Sequence[str]]], sent: list[bool]) -> None:
        """`sent[0]` is set once EXEC has been sent."""
        watch = kind not in UNVERSIONED_KINDS and generation is None
        for _ in range(_WATCH_ATTEMPTS):
            target = generation
            if watch:
                connection.send_command("WATCH", self._live_key)
                connection.read_response()
                connection.send_command("GET", self._live_key)
                target = _text(connection.read_response()) or INITIAL_GENERATION
            connection.send_command("MULTI")
            queued = 0
            for command in commands(target):
                # hiredis's packer itself: redis-py's wrapper costs a generator step per argument.
                # (Its type stub takes one-element tuples only.)
                packed = pack_command(tuple(command))  # type: ignore[arg-type]
                connection.send_packed_command([packed], check_health=False)
                queued += 1
            connection.send_command("EXEC", check_health=False)
            sent[0] = True
            connection.read_response()  # MULTI's OK
            for _ in range(queued):
                connection.read_response()  # QUEUED, or the command's error raised
            replies = connection.read_response()
            if replies is None:  # a WATCHed key changed: EXEC ran nothing
                continue
            failed = [reply for reply in replies if isinstance(reply, Exception)]
            if failed:
                raise failed[0]
            return
        raise StoreUnavailable(f"Redis serving store at {self._where}: the live generation moved during "
                               f"{_WATCH_ATTEMPTS} attempts to write to it")

    # -- ServingStore ---------------------------------------------------------------------

    def _write(self, kind: Kind, bodies: dict[str, str], generation: str | None, state: dict[str, str]) -> None:
        rows = list(bodies.items())

        def commands(target: str | None) -> Iterator[Sequence[str]]:
            if target is not None and rows:
                yield "SADD", self._generations_key, target
            base = self.record_key(kind, "", target)
            for start in range(0, len(rows), _COMMAND_ROWS):
                yield "MSET", *[part for key, body in rows[start:start + _COMMAND_ROWS] for part in (base + key, body)]
            if state:
                yield "MSET", *[part for name, value in state.items() for part in (self._state_key(name), value)]

        self._transaction(kind, generation, commands)

    def _delete(self, kind: Kind, keys: list[str], generation: str | None, state: dict[str, str]) -> None:
        def commands(target: str | None) -> Iterator[Sequence[str]]:
            base = self.record_key(kind, "", target)
            for start in range(0, len(keys), _COMMAND_ROWS):
                yield "UNLINK", *[base + key for key in keys[start:start + _COMMAND_ROWS]]
            if state:
                yield "MSET", *[part for name, value in state.items() for part in (self._state_key(name), value)]

        self._transaction(kind, generation, commands)

    def _read_many(self, kind: Kind, keys: list[str]) -> dict[str, str | bytes]:
        with self._errors():
            if kind in UNVERSIONED_KINDS:
                values: list[Any] = self._client.mget([self.record_key(kind, key, None) for key in keys])
            else:
                values = self._read_live(keys=[self._live_key], args=[INITIAL_GENERATION, self.prefix, kind, *keys])
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    def _live_generation(self) -> str | None:
        with self._errors():
            return _text(self._client.get(self._live_key))

    def _swap(self, generation: str) -> None:
        with self._errors():
            with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._live_key, generation)
                pipe.sadd(self._generations_key, generation)
                pipe.execute()
            # The swap is done: what follows is clean-up, which a crash only postpones.
            known: Any = self._client.smembers(self._generations_key)
            for old in sorted(str(_text(name)) for name in known):
                if old != generation:
                    self._remove_generation(old)

    def _remove_generation(self, generation: str) -> None:
        # Unregistered only once its keys are gone: a clean-up killed half-way is found
        # again by the next swap. A writer that adds rows meanwhile registers it again (its
        # SADD is in its transaction).
        pattern = f"{glob_escape(self.prefix)}:g:{glob_escape(generation)}:*"
        chunk: list[str] = []
        for name in self._client.scan_iter(match=pattern, count=_CLEAN_CHUNK_KEYS):
            chunk.append(str(_text(name)))
            if len(chunk) >= _CLEAN_CHUNK_KEYS:
                if self._unlink(generation, chunk) < 0:
                    return
                chunk = []
        if chunk and self._unlink(generation, chunk) < 0:
            return
        self._client.srem(self._generations_key, generation)

    def _unlink(self, generation: str, names: list[str]) -> int:
        """Removes `names` unless `generation` became live meanwhile (then -1)."""
        removed: int = self._remove_unless_live(keys=[self._live_key], args=[generation, INITIAL_GENERATION, *names])
        if removed < 0:
            self._client.sadd(self._generations_key, generation)
        return removed

    def _keys(self, kind: Kind) -> Iterator[str]:
        start = len(f"{self.prefix}:{kind}:")
        with self._errors():
            names = [str(_text(name)) for name in self._client.scan_iter(
                match=f"{glob_escape(self.prefix)}:{glob_escape(kind)}:*", count=_CLEAN_CHUNK_KEYS)]
        return iter([name[start:] for name in names])

    def _count(self, kind: Kind) -> int:
        with self._errors():
            generation = None if kind in UNVERSIONED_KINDS else (
                _text(self._client.get(self._live_key)) or INITIAL_GENERATION)
            pattern = glob_escape(self.record_key(kind, "", generation)) + "*"
            return sum(1 for _ in self._client.scan_iter(match=pattern, count=_CLEAN_CHUNK_KEYS))

    def _get_state(self, name: str) -> str | None:
        with self._errors():
            return _text(self._client.get(self._state_key(name)))

    def _write_state(self, state: dict[str, str]) -> None:
        with self._errors():
            self._client.mset({self._state_key(name): value for name, value in state.items()})

    def close(self) -> None:
        self._client.close()
