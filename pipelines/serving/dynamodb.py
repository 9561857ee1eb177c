"""The DynamoDB serving store: for deployments on AWS without a Redis to run.

One table (serving.dynamodb.table), partition key `pk` (string), no sort key:

    pk = g:<generation>:<kind>:<key>   body (JSON text), generation    content, default, traits
    pk = suppression:<key>             body                            suppression records
    pk = preferences:<key>             body                            preference-centre choices
    pk = live                          value                           the live generation (absent: g0)
    pk = state:<name>                  value                           state strings

Writes are BatchWriteItem calls of 25 items; the items DynamoDB leaves unprocessed
(throttling) are sent again with exponential backoff and jitter, up to
serving.dynamodb.max_retries times, then `StoreUnavailable`. DynamoDB has no transaction
that spans batches, so `state` given with a write is written after every row of the
write succeeded: a resume point is never ahead of its data, but a crash between the two
leaves it behind (the rows are written again next time, which upserts make harmless).
Reads are consistent: a consistent GetItem of the pointer, then BatchGetItem of 100 keys
at a time, unprocessed keys retried as writes are.

Removing old generations. A hash-only key cannot be queried by generation, and the choice
was between a global secondary index on `generation` and a Scan. The swap Scans (strongly
consistent, `pk` and `generation` only, filtered to generation-scoped items not in the
new live generation) and deletes what it finds, in 25s. Why not an index: a GSI is
eventually consistent, so a Query right after the last writes can miss items, which
would then stay forever, and it costs a write on every item. Why not a sort key: putting
a generation's rows under a few partition keys concentrates a rebuild's writes and the
API's reads on a few partitions. The Scan reads the whole table once per swap, which
follows a full rebuild that wrote the whole table anyway; incremental writes never scan.
Before each page's deletes, the pointer is read again, so a generation someone made live
meanwhile is kept (best effort: one writer swaps at a time).

With create_table, a missing table is created on demand (PAY_PER_REQUEST) and waited for.
Connection errors, timeouts, throttling past the retries, a missing table and refused
access raise `StoreUnavailable`; a request DynamoDB rejects as malformed is a bug and is
raised as botocore's own error. boto3 clients are thread-safe; still, one store object
per thread, as for every store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

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

WRITE_CHUNK = 25   # BatchWriteItem's limit
READ_CHUNK = 100   # BatchGetItem's limit
LIVE_PK = "live"
# Short enough for the API to fall back within an email tool's timeout; botocore's own
# retries (standard mode) cover throttling and 5xx answers of single requests.
DEFAULT_CLIENT_CONFIG = BotoConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
# A request DynamoDB finds malformed is a bug here, not an outage: raised as it is.
_BUG_CODES = frozenset({"ValidationException", "SerializationException"})


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


class DynamoDbStore(ServingStore):
    backoff_base_s = 0.05
    backoff_cap_s = 5.0

    def __init__(self, config: Config, *, client_config: BotoConfig | None = None) -> None:
        super().__init__(config)
        settings = config.serving.dynamodb
        self.table, self.region = settings.table, settings.region
        self.max_retries = settings.max_retries
        session = boto3.session.Session()
        self._client: Any = session.client("dynamodb", region_name=settings.region,
                                           endpoint_url=settings.endpoint_url,
                                           config=client_config or DEFAULT_CLIENT_CONFIG)
        if settings.create_table:
            self._ensure_table()

    # -- keys -----------------------------------------------------------------------------

    @staticmethod
    def record_pk(kind: Kind, key: str, generation: str | None) -> str:
        """The partition key of a record: generation None is for unversioned kinds only."""
        if kind in UNVERSIONED_KINDS:
            return f"{kind}:{key}"
        return f"g:{generation}:{kind}:{key}"

    # -- helpers --------------------------------------------------------------------------

    def _call(self, operation: str, method: Callable[..., Any], **request: Any) -> Any:
        try:
            return method(**request)
        except (ClientError, BotoCoreError) as error:
            raise self._translate(operation, error) from None

    def _translate(self, operation: str, error: ClientError | BotoCoreError) -> Exception:
        """StoreUnavailable with one line for an outage; the error itself for a bug."""
        if isinstance(error, BotoCoreError):
            return StoreUnavailable(f"DynamoDB {operation} on table {self.table} ({self.region}): {one_line(error)}")
        code = _code(error)
        if code in _BUG_CODES:
            bug: Exception = error
            return bug
        if code == "ResourceNotFoundException":
            return StoreUnavailable(f"DynamoDB table {self.table} not found in {self.region} (create it, or set "
                                    "serving.dynamodb.create_table: true)")
        message = str(error.response.get("Error", {}).get("Message", "")).strip().splitlines()
        detail = f"{code}: {message[0][:200]}" if message else code
        return StoreUnavailable(f"DynamoDB {operation} on table {self.table} ({self.region}): {detail}")

    def _backoff(self, attempt: int) -> None:
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt)
        time.sleep(delay / 2 + random.uniform(0, delay / 2))

    def _ensure_table(self) -> None:
        try:
            self._client.describe_table(TableName=self.table)
            return
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise self._translate("DescribeTable", error) from None
        except BotoCoreError as error:
            raise self._translate("DescribeTable", error) from None
        try:
            self._client.create_table(
                TableName=self.table, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
        except ClientError as error:
            if _code(error) != "ResourceInUseException":  # someone else created it meanwhile: fine
                raise self._translate("CreateTable", error) from None
        except BotoCoreError as error:
            raise self._translate("CreateTable", error) from None
        try:
            self._client.get_waiter("table_exists").wait(TableName=self.table,
                                                         WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB table {self.table} ({self.region}) did not become ready: "
                                   f"{one_line(error)}") from None

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25; unprocessed items retried with backoff."""
        for start in range(0, len(requests), WRITE_CHUNK):
            pending: dict[str, Any] = {self.table: requests[start:start + WRITE_CHUNK]}
            attempt = 0
            while True:
                response = self._call("BatchWriteItem", self._client.batch_write_item, RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending.get(self.table):
                    break
                if attempt >= self.max_retries:
                    raise StoreUnavailable(
                        f"DynamoDB table {self.table} ({self.region}): {len(pending[self.table])} items still "
                        f"unprocessed after {self.max_retries} retries (throttled; raise its capacity)")
                self._backoff(attempt)
                attempt += 1

    def _batch_get(self, pks: list[str]) -> dict[str, str]:
        """pk -> body, BatchGetItem in chunks of 100 (consistent); unprocessed keys retried."""
        found: dict[str, str] = {}
        for start in range(0, len(pks), READ_CHUNK):
            pending: dict[str, Any] = {self.table: {
                "Keys": [{"pk": {"S": pk}} for pk in pks[start:start + READ_CHUNK]],
                "ConsistentRead": True, "ProjectionExpression": "pk, body"}}
            attempt = 0
            while True:
                response = self._call("BatchGetItem", self._client.batch_get_item, RequestItems=pending)
                for item in response.get("Responses", {}).get(self.table, []):
                    found[item["pk"]["S"]] = item["body"]["S"]
                pending = response.get("UnprocessedKeys") or {}
                if not pending.get(self.table):
                    break
                if attempt >= self.max_retries:
                    raise StoreUnavailable(
                        f"DynamoDB table {self.table} ({self.region}): {len(pending[self.table]['Keys'])} keys "
                        f"still unprocessed after {self.max_retries} retries (throttled; raise its capacity)")
                self._backoff(attempt)
                attempt += 1
        return found

    def _get_value(self, pk: str) -> str | None:
        response = self._call("GetItem", self._client.get_item, TableName=self.table, Key={"pk": {"S": pk}},
                              ConsistentRead=True)
        item = response.get("Item")
        return str(item["value"]["S"]) if item else None

    def _target(self, kind: Kind, generation: str | None) -> str | None:
        """The generation a record of `kind` goes to: None for unversioned kinds."""
        if kind in UNVERSIONED_KINDS:
            return None
        return generation or self._get_value(LIVE_PK) or INITIAL_GENERATION

    @staticmethod
    def _state_requests(state: dict[str, str]) -> list[dict[str, Any]]:
        return [{"PutRequest": {"Item": {"pk": {"S": f"state:{name}"}, "value": {"S": value}}}}
                for name, value in state.items()]

    # -- ServingStore ---------------------------------------------------------------------

    def _write(self, kind: Kind, bodies: dict[str, str], generation: str | None, state: dict[str, str]) -> None:
        target = self._target(kind, generation) if bodies else None
        requests: list[dict[str, Any]] = []
        for key, body in bodies.items():
            item = {"pk": {"S": self.record_pk(kind, key, target)}, "body": {"S": body}}
            if target is not None:
                item["generation"] = {"S": target}
            requests.append({"PutRequest": {"Item": item}})
        self._batch_write(requests)
        self._batch_write(self._state_requests(state))

    def _delete(self, kind: Kind, keys: list[str], generation: str | None, state: dict[str, str]) -> None:
        target = self._target(kind, generation) if keys else None
        self._batch_write([{"DeleteRequest": {"Key": {"pk": {"S": self.record_pk(kind, key, target)}}}}
                           for key in keys])
        self._batch_write(self._state_requests(state))

    def _read_many(self, kind: Kind, keys: list[str]) -> dict[str, str | bytes]:
        target = self._target(kind, None)
        pks = {self.record_pk(kind, key, target): key for key in keys}
        return {pks[pk]: body for pk, body in self._batch_get(list(pks)).items()}

    def _live_generation(self) -> str | None:
        return self._get_value(LIVE_PK)

    def _swap(self, generation: str) -> None:
        self._call("PutItem", self._client.put_item, TableName=self.table,
                   Item={"pk": {"S": LIVE_PK}, "value": {"S": generation}})
        # The swap is done: what follows is clean-up, which a crash only postpones.
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "ProjectionExpression": "pk, #g",
            "FilterExpression": "attribute_exists(#g) AND #g <> :live",
            "ExpressionAttributeNames": {"#g": "generation"},
            "ExpressionAttributeValues": {":live": {"S": generation}}}
        while True:
            page = self._call("Scan", self._client.scan, **request)
            stale = page.get("Items", [])
            if stale:
                live = self._get_value(LIVE_PK) or INITIAL_GENERATION
                self._batch_write([{"DeleteRequest": {"Key": {"pk": item["pk"]}}} for item in stale
                                   if item["generation"]["S"] != live])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _keys(self, kind: Kind) -> Iterator[str]:
        prefix = self.record_pk(kind, "", None)
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "ProjectionExpression": "pk",
            "FilterExpression": "begins_with(pk, :prefix)", "ExpressionAttributeValues": {":prefix": {"S": prefix}}}
        found: list[str] = []
        while True:
            page = self._call("Scan", self._client.scan, **request)
            found += [item["pk"]["S"][len(prefix):] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return iter(found)
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _count(self, kind: Kind) -> int:
        request: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True, "Select": "COUNT",
            "FilterExpression": "begins_with(pk, :prefix)",
            "ExpressionAttributeValues": {":prefix": {"S": self.record_pk(kind, "", self._target(kind, None))}}}
        total = 0
        while True:
            page = self._call("Scan", self._client.scan, **request)
            total += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return total
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get_state(self, name: str) -> str | None:
        return self._get_value(f"state:{name}")

    def _write_state(self, state: dict[str, str]) -> None:
        self._batch_write(self._state_requests(state))

    def close(self) -> None:
        self._client.close()
