"""Configuration: `conf/base.yaml` overlaid by `conf/<env>.yaml` and `--set` overrides,
validated at start-up into one typed, frozen object.

Every table location, checkpoint and endpoint comes from here. Secrets never do: the
config names the environment variable that holds each one, and `Config.secret()` reads it.
Errors name the offending key and where it came from, in one line.

No pyspark import here: the API and the producers load config without Spark.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from pipelines.contracts.events import INTERACTION_EVENT_TYPES, PERSON_FIELDS
from pipelines.errors import ConfigError

ENVIRONMENTS = ("local", "databricks", "emr")
_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent
# In the wheel, conf/ ships inside the package (setup.py maps it to pipelines/conf).
_CONF_IN_PACKAGE = _PACKAGE_DIR / "conf"


def running_from_source() -> bool:
    """True in a checkout of the repository, False where Tailor is installed as a wheel."""
    return (_SOURCE_ROOT / "setup.py").is_file() and (_SOURCE_ROOT / "conf").is_dir()


def project_root() -> Path:
    """Where relative paths (storage.root, jars) sit: the repository root in a checkout,
    the current directory where Tailor is installed as a package."""
    return _SOURCE_ROOT if running_from_source() else Path.cwd()


def bundled_conf_dir() -> Path:
    """The configuration Tailor ships: conf/ in a checkout, the package data in a wheel."""
    return _SOURCE_ROOT / "conf" if running_from_source() else _CONF_IN_PACKAGE

# layer.name of every table the jobs read or write; DESIGN.md "Tables".
# The tables the Great Expectations suites (expectations/) check, one suite each.
QUALITY_DATASETS = ("bronze.events", "silver.profiles", "silver.products", "silver.interactions",
                    "gold.user_features", "gold.recommendations", "gold.email_content")
TABLES = (
    "bronze.events",
    "bronze.quarantine",
    "bronze.ingest_metrics",
    "silver.profiles",
    "silver.profiles_history",
    "silver.interactions",
    "silver.products",
    "gold.user_features",
    "gold.recommendations",
    "gold.email_content",
    "gold.content_defaults",
    "gold.user_traits",
    "gold.holdout_assignments",
    "silver.profile_tombstones",
    "silver.duplicate_profiles",
    "audit.log",
    "audit.quality_results",
    "audit.quality_report",
    "audit.streaming_progress",
    "audit.job_runs",
)
# The API's audit lines, under storage.root: `tailor maintain` loads them into audit.log.
API_AUDIT_FOLDER = "audit/api"
# Liquid clustering keys: the column most reads and MERGEs look rows up by. Tables created
# with them, and clustered by `tailor maintain` when an older Tailor created them without.
# bronze.events and silver.interactions are partitioned by event_date instead (a table
# cannot be both), which their incremental readers prune on.
CLUSTERED_BY: dict[str, tuple[str, ...]] = {
    "silver.profiles": ("user_id",),
    "silver.profiles_history": ("user_id",),
    "silver.products": ("product_id",),
    "gold.user_features": ("user_id",),
    "gold.recommendations": ("user_id",),
    "gold.email_content": ("user_id",),
    "gold.content_defaults": ("key",),
    "gold.user_traits": ("user_id",),
    "gold.holdout_assignments": ("user_id",),
}
# Each streaming query's checkpoint folder (config.checkpoint(name)), by query name. A
# folder is renamed when a restart cannot reuse the old state (build-features dropped a
# stateful operator); `tailor maintain --remove-orphaned-checkpoints` deletes old ones.
CHECKPOINTS = {
    "ingest_events": "ingest_events",
    "merge_profiles": "merge_profiles",
    "build_features": "build_features_v2",
}

_ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRET_LOOKING_KEY = re.compile(r"(?i)(password|secret|secret\.key|access\.key|token|jaas\.config)$")
# Spark conf keys hold dots themselves: `--set spark.conf.spark.sql.x=1` names one key.
_DOTTED_KEY_SECTIONS = (("spark", "conf"),)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    root: str = Field(description="local folder or s3://... URI holding all state")
    catalog: str | None = Field(
        default=None, description="Unity Catalog name; when set, tables are catalog.layer.name"
    )
    checkpoint_root: str | None = Field(default=None, description="defaults to <root>/_checkpoints")


class JarsConfig(_Strict):
    mode: Literal["local_dir", "packages", "cluster"] = Field(
        description="where the Delta and Kafka jars come from: local_dir (spark.jars), packages "
                    "(spark.jars.packages) or cluster (the runtime has them)")
    local_dir: str = Field(
        default="jars/spark", description="mode local_dir: the folder of jars (make jars); relative paths sit "
                                          "under the project root")
    packages: tuple[str, ...] = Field(
        default=(), description="mode packages: Maven coordinates Spark fetches at start-up (spark.jars.packages)")


class SparkConfig(_Strict):
    master: str | None = Field(
        default=None, description="Spark master URL, e.g. local[2]; null: spark-submit or the cluster decides")
    app_name: str = Field(default="tailor", description="Spark application name; each job runs as <app_name>-<job>")
    shuffle_partitions: int = Field(ge=1, description="spark.sql.shuffle.partitions: tasks of each shuffle")
    ui_enabled: bool = Field(default=True, description="spark.ui.enabled: serve the Spark web UI")
    jars: JarsConfig
    log4j_config: str | None = Field(
        default=None, description="local masters only: a log4j2 file (relative: beside the config files) that "
                                  "sends the JVM's logs to <storage.root>/logs/<job>.log; null: Spark's own")
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="more Spark settings, key -> value, applied after Tailor's own; never secrets")

    @field_validator("conf", mode="before")
    @classmethod
    def _values_as_spark_strings(cls, conf: Any) -> Any:
        if not isinstance(conf, dict):
            return conf
        return {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            if isinstance(value, (int, float)) else value
            for key, value in conf.items()
        }

    @field_validator("conf")
    @classmethod
    def _no_literal_secrets(cls, conf: dict[str, str]) -> dict[str, str]:
        for key in conf:
            if _SECRET_LOOKING_KEY.search(key):
                raise ValueError(
                    f"'{key}' looks like a secret; secrets come only from environment variables"
                )
        return conf


class FilesSourceConfig(_Strict):
    path: str = Field(description="folder of JSON-lines event files; relative paths sit under storage.root")
    crm_path: str = Field(description="folder of JSON-lines CRM change files (Debezium envelope)")
    max_split_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024,
                                 description="a larger plain file is read by several tasks")
    chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024,
                             description="how much of a file a task reads at a time")
    max_files_per_trigger: int | None = Field(
        default=None, ge=1, description="at most this many new files per batch (--once runs several batches)")
    max_bytes_per_trigger: int | None = Field(
        default=256 * 1024 * 1024, ge=1,
        description="new files per batch up to about this many bytes (at least one file); a backlog "
                    "becomes several batches, each cached once for its two writes")
    clean_source: Literal["off", "delete"] = Field(
        default="off", description="delete: remove each landed file once the batch that read it has committed "
                                   "(as Spark's cleanSource); needed for an erasure to reach the landing folders")


class KafkaSourceConfig(_Strict):
    bootstrap_servers: str = Field(description="Kafka brokers, host:port, comma-separated")
    events_topic: str = Field(description="topic of first-party events (tailor generate and the API write it too)")
    crm_topic: str = Field(description="topic of CRM change records (Debezium envelope)")
    starting_offsets: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a query without a checkpoint starts reading the topics")
    max_offsets_per_trigger: int | None = Field(
        default=None, ge=1,
        description="records per batch at most, across both topics (a backlog becomes several batches); null: all")


class KinesisSourceConfig(_Strict):
    stream_name: str = Field(description="Kinesis stream of first-party events (the API writes it too)")
    crm_stream_name: str = Field(description="Kinesis stream of CRM change records (Debezium envelope)")
    region: str = Field(description="AWS region of both streams")
    endpoint_url: str | None = Field(default=None, description="e.g. a local AWS-compatible server")
    max_records_per_request: int = Field(
        default=10000, ge=1, le=10000, description="records per GetRecords call (Kinesis allows at most 10000)")
    max_retries: int = Field(default=8, ge=0, description="throttling retries per call, with backoff")


class SourceConfig(_Strict):
    type: Literal["files", "kafka", "kinesis"] = Field(
        description="where ingest reads events and CRM changes, and where the API writes its events")
    files: FilesSourceConfig
    kafka: KafkaSourceConfig
    kinesis: KinesisSourceConfig


_DURATION = r"^\d+ (second|minute|hour|day)s?$"


class IngestConfig(_Strict):
    trigger_interval: str = Field(pattern=_DURATION, description="processing-time trigger, e.g. '30 seconds'")
    dedup_window: str = Field(pattern=_DURATION, description="how long an event_id is remembered for dropping retries")
    metrics_flush_seconds: float = Field(
        gt=0, description="seconds between writes of every streaming job's progress (audit.streaming_progress); "
                          "once more when a job stops")
    fail_on_data_loss: bool = Field(
        default=True, description="Kafka offsets aged out before they were read stop the query; false: skipped")


class KafkaBrokerConfig(_Strict):
    host: str = Field(default="127.0.0.1", description="address the local broker (tailor kafka up) listens on")
    port: int = Field(ge=1, le=65535, description="the local broker's client port")
    controller_port: int = Field(ge=1, le=65535, description="the local broker's KRaft controller port")
    jars_dir: str = Field(
        default="jars/kafka-broker",
        description="the broker's jars (make jars); relative paths sit under the project root")
    home: str = Field(description="data and logs; relative paths sit under storage.root")
    default_partitions: int = Field(default=2, ge=1, description="partitions of each topic the broker creates")
    start_timeout_s: float = Field(
        default=60, gt=0, description="seconds tailor kafka up waits for the broker to answer before failing")


class ServicesConfig(_Strict):
    kafka: KafkaBrokerConfig


class GeneratorConfig(_Strict):
    seed: int = Field(description="random seed of tailor generate: the same settings give the same world")
    users: int = Field(ge=1, description="people in the synthetic world")
    products: int = Field(ge=1, description="products in the synthetic catalogue")
    days: int = Field(ge=1, description="days of activity, from start")
    start: date = Field(description="the first day of the synthetic world")
    zipf_exponent: float = Field(gt=0, description="skew of product popularity: a product's weight is 1 / rank^this")
    output: str = Field(description="landing folder; relative paths sit under storage.root")


CATALOG_FORMATS = ("csv", "tsv", "jsonl", "parquet", "delta")


class CatalogConfig(_Strict):
    path: str = Field(description="the product feed, a file or folder; relative paths sit under storage.root")
    format: Literal["csv", "tsv", "jsonl", "parquet", "delta"] | None = Field(
        default=None, description="null: from the file name (a folder: JSON lines)")
    full_feed: bool = Field(description="the feed lists every product: the active ones it leaves out become inactive")
    max_deactivated_share: float = Field(
        gt=0, le=1, description="a full feed that would deactivate more of the active catalogue fails instead")


# Profile columns whose history silver.profiles_history can keep (SCD type 2).
def _known_and_distinct(names: tuple[str, ...], known: tuple[str, ...], what: str, listed: str) -> tuple[str, ...]:
    """`names` as given, if each is one of `known` and none is named twice."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; {listed}: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a {what} is named twice")
    return names


# What silver.profiles_history can track (pipelines.schemas.HISTORY_TRACKABLE says which
# columns each keeps; names stay encrypted there too).
HISTORY_TRACKABLE_COLUMNS = ("email_hash", "first_name", "last_name", "country", "locale")


class ProfilesConfig(_Strict):
    trigger_interval: str = Field(pattern=_DURATION, description="processing-time trigger of merge_profiles")
    ignore_null_updates: bool = Field(
        default=False, description="a null in a change leaves the stored field as it is, instead of clearing it")
    history_columns: tuple[str, ...] = Field(
        min_length=1, description="what silver.profiles_history tracks: email_hash, country and locale as they "
                                  "are, first_name and last_name encrypted, as silver.profiles keeps them")
    conflict_retries: int = Field(default=5, ge=0, description="retries of a write that lost a commit race")
    max_files_per_trigger: int | None = Field(default=None, ge=1, description="bronze files read per batch")

    @field_validator("history_columns")
    @classmethod
    def _trackable(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        return _known_and_distinct(columns, HISTORY_TRACKABLE_COLUMNS, "column", "trackable")


# A source column's name, as Debezium writes it (spaces and hyphens allowed): no quotes,
# backslashes or control characters, so it sits safely in a JSON path and SQL text.
_COLUMN_NAME = r"^[^\"'\\\x00-\x1f]{1,128}$"
_TABLE_NAME_PART = r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}$"
# How a column is encoded when a message carries no schema (`crm.tables.<t>.types`).
CRM_COLUMN_TYPES = ("decimal", "variable_scale_decimal", "date", "timestamp", "micro_timestamp", "nano_timestamp",
                    "time", "micro_time", "nano_time")


class CrmColumnType(_Strict):
    type: Literal[CRM_COLUMN_TYPES] = Field(description="Debezium's encoding of the column")  # type: ignore[valid-type]
    scale: int | None = Field(default=None, ge=0, le=38, description="decimal: digits after the point")

    @model_validator(mode="after")
    def _scale_for_decimals(self) -> CrmColumnType:
        if (self.type == "decimal") != (self.scale is not None):
            raise ValueError("scale is set for a decimal, and only for a decimal")
        return self


class CrmTableConfig(_Strict):
    key: tuple[str, ...] = Field(min_length=1, description="the column(s) whose value is the user id; several are "
                                                           "joined with ':'")
    row_key: tuple[str, ...] | None = Field(
        default=None, description="the column(s) naming a row when `key` does not (an address table keyed by the "
                                  "customer: its own id); in the event id, so two rows at one log position stay two "
                                  "changes")
    columns: dict[str, str] = Field(description="source column -> profile field; unmapped columns are ignored")
    deletes_profile: bool = Field(description="a delete of a row deletes the person's profile (a customers table); "
                                              "false: it only clears the fields this table maps (an addresses table)")
    updated_at: str | None = Field(
        default=None, description="the column holding when the row last changed: a snapshot read (op r) takes its "
                                  "place in the order from it, since it holds the row as of the snapshot's start, not "
                                  "as of when it was read (README, Order); null: from when it was read")
    types: dict[str, CrmColumnType] = Field(
        default_factory=dict, description="for messages without Kafka Connect's schema: how a decimal or temporal "
                                          "column is encoded (with a schema, the schema says)")

    @field_validator("key", "row_key")
    @classmethod
    def _key_names(cls, key: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in key or ():
            if not re.match(_COLUMN_NAME, name):
                raise ValueError(f"key column {name!r} is not a column name")
        return key

    @field_validator("updated_at")
    @classmethod
    def _updated_at_name(cls, column: str | None) -> str | None:
        if column is not None and not re.match(_COLUMN_NAME, column):
            raise ValueError(f"updated_at column {column!r} is not a column name")
        return column

    @field_validator("columns")
    @classmethod
    def _mapped_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        for column, field in columns.items():
            if not re.match(_COLUMN_NAME, column):
                raise ValueError(f"column {column!r} is not a column name")
            if field not in PERSON_FIELDS:
                raise ValueError(f"column {column!r} maps to unknown profile field {field!r}; "
                                 f"profile fields: {', '.join(PERSON_FIELDS)}")
        if len(set(columns.values())) != len(columns):
            raise ValueError("two columns map to the same profile field")
        return columns

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every source column a change of this table is read for, each once."""
        return tuple(dict.fromkeys((*self.key, *(self.row_key or ()), *self.columns,
                                    *((self.updated_at,) if self.updated_at else ()))))

    @model_validator(mode="after")
    def _updated_at_is_a_time(self) -> CrmTableConfig:
        encoding = self.types.get(self.updated_at) if self.updated_at else None
        if encoding and encoding.type not in ("date", "timestamp", "micro_timestamp", "nano_timestamp"):
            raise ValueError(f"updated_at column {self.updated_at!r} has types {encoding.type!r}: "
                             "a date or timestamp encoding is needed")
        return self

    @model_validator(mode="after")
    def _types_of_known_columns(self) -> CrmTableConfig:
        unknown = [column for column in self.types if column not in self.read_columns]
        if unknown:
            raise ValueError(f"types names {unknown[0]!r}, which is neither a key, a mapped column nor updated_at")
        return self


class CrmConfig(_Strict):
    tables: dict[str, CrmTableConfig] = Field(
        min_length=1, description="CRM source tables that feed profiles, by the name in the change's source.table "
                                  "(source.collection for MongoDB), or qualified as schema.table, db.table or "
                                  "db.schema.table")

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: dict[str, CrmTableConfig]) -> dict[str, CrmTableConfig]:
        for name in tables:
            if not all(re.match(_TABLE_NAME_PART, part) for part in name.split(".")) or name.count(".") > 2:
                raise ValueError(f"table {name!r} is not a table name (table, schema.table, db.table or "
                                 "db.schema.table)")
        return tables


def _interaction_weights(weights: dict[str, float]) -> dict[str, float]:
    unknown = [name for name in weights if name not in INTERACTION_EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; interactions are: {', '.join(INTERACTION_EVENT_TYPES)}")
    return weights


class EngagementConfig(_Strict):
    window_days: int = Field(ge=1, description="events older than this add nothing to the score")
    half_life_days: float = Field(gt=0, description="an event's weight halves every this many days")
    weights: dict[str, float] = Field(min_length=1, description="interaction event type -> points")

    _known_types = field_validator("weights")(_interaction_weights)


class SendHourConfig(_Strict):
    window_days: int = Field(ge=1, description="opens this recent count towards the best send hour")
    min_opens: int = Field(ge=1, description="fewer opens than this: the segment's hour is used instead")
    neighbour_weight: float = Field(ge=0, le=1, description="share of an open credited to each adjacent hour")
    default_hour: int = Field(ge=0, le=23, description="UTC hour when nobody in the segment or the base opened enough")


class LifecycleConfig(_Strict):
    new_days: int = Field(ge=0, description="first purchase at most this many days ago: stage 'new'")
    active_days: int = Field(ge=0, description="last purchase at most this many days ago: 'active'")
    at_risk_days: int = Field(ge=0, description="last purchase at most this many days ago: 'at_risk'; older: 'lapsed'")

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if self.active_days > self.at_risk_days:
            raise ValueError("active_days must not exceed at_risk_days")
        return self


class FeaturesConfig(_Strict):
    trigger_interval: str = Field(pattern=_DURATION, description="processing-time trigger of build_features")
    as_of: AwareDatetime | None = Field(
        default=None,
        description="the moment windows end; null: the clock when a batch runs (tests and backfills fix it)")
    lookback_days: int = Field(ge=1, description="history a feature reads; frequency and monetary cover this")
    windows_days: tuple[int, ...] = Field(min_length=1, description="views/carts/purchases/revenue windows")
    rate_window_days: int = Field(ge=1, description="open and click rates cover emails delivered this recently")
    top_categories: int = Field(ge=1, description="how many categories top_categories lists")
    category_window_days: int = Field(ge=1, description="top_categories weighs interactions this recent")
    category_weights: dict[str, float] = Field(min_length=1, description="event type -> weight of its category")
    abandoned_cart_hours: float = Field(gt=0, description="a cart untouched this long with no purchase is abandoned")
    engagement: EngagementConfig
    send_hour: SendHourConfig
    lifecycle: LifecycleConfig
    segments_file: str = Field(description="segment rules; a relative path sits beside the config files")
    conflict_retries: int = Field(default=5, ge=0, description="retries of a write that lost a commit race")
    max_files_per_trigger: int | None = Field(default=None, ge=1, description="bronze files read per batch")

    _known_types = field_validator("category_weights")(_interaction_weights)

    @field_validator("windows_days")
    @classmethod
    def _distinct_windows(cls, windows: tuple[int, ...]) -> tuple[int, ...]:
        if any(days < 1 for days in windows) or len(set(windows)) != len(windows):
            raise ValueError("windows must be distinct whole days of at least 1")
        return tuple(sorted(windows))

    @model_validator(mode="after")
    def _within_lookback(self) -> FeaturesConfig:
        spans = {"windows_days": max(self.windows_days), "rate_window_days": self.rate_window_days,
                 "category_window_days": self.category_window_days,
                 "engagement.window_days": self.engagement.window_days,
                 "send_hour.window_days": self.send_hour.window_days}
        for key, days in spans.items():
            if days > self.lookback_days:
                raise ValueError(f"{key} ({days}) reaches further back than lookback_days ({self.lookback_days})")
        return self


RECOMMENDER_MODELS = ("popular", "buy_again", "als", "co_occurrence")


class AlsConfig(_Strict):
    rank: int = Field(ge=1, description="latent factors per user and item")
    max_iter: int = Field(ge=1, description="ALS iterations (maxIter)")
    reg_param: float = Field(ge=0, description="regularization of the factors (regParam)")
    alpha: float = Field(ge=0, description="confidence = 1 + alpha x decayed strength")
    seed: int = Field(default=42, description="ALS's random seed (its initial factors)")
    blocks: int | None = Field(default=None, ge=1, description="user and item blocks (tasks) per iteration; null: "
                               "Spark's default, 10; a few on small data, where each task costs more than it does")


class CoOccurrenceConfig(_Strict):
    max_basket_items: int = Field(ge=2, description="larger baskets are left out of the similarities")
    neighbours: int = Field(ge=1, description="similar items kept per item")


class BlendConfig(_Strict):
    rank_constant: float = Field(ge=0, description="a model's share for an item: weight / (rank_constant + rank)")
    grid_step: float = Field(gt=0, le=1, description="weights tried are multiples of this that sum to 1")
    validation_days: int = Field(ge=1, description="time split: the training period's last days tune the blend")
    validation_fraction: float = Field(gt=0, lt=1, description="random split: each person's share of rows that tunes")

    @field_validator("grid_step")
    @classmethod
    def _divides_one(cls, step: float) -> float:
        if abs(round(1 / step) * step - 1) > 1e-9:
            raise ValueError("must divide 1 into whole steps (0.5, 0.25, 0.2, 0.1, ...)")
        return step


MAX_BLEND_GRID_POINTS = 2000


def grid_points(models: int, step: float) -> int:
    """How many weightings of `models` in multiples of `step` sum to 1 (stars and bars)."""
    return math.comb(round(1 / step) + models - 1, models - 1)


# Interactions about one product, which the recommender learns from.
PRODUCT_EVENT_TYPES = ("product_view", "add_to_cart", "purchase")
# What `recommend.train.grid` may vary: numbers the models read.
TUNABLE_SETTINGS = ("half_life_days", "candidates_per_model", "als.rank", "als.max_iter", "als.reg_param",
                    "als.alpha", "co_occurrence.max_basket_items", "co_occurrence.neighbours")
MAX_TRAINING_GRID_POINTS = 16


class TrainConfig(_Strict):
    test_days: int = Field(ge=1, description="the last days of history test the chosen configuration")
    grid: dict[str, list[float]] = Field(
        default_factory=dict, description=f"setting -> values tried on the validation split; settings: "
                                          f"{', '.join(TUNABLE_SETTINGS)}")
    champion_margin: float = Field(ge=0, description="ndcg@k a new version must gain over the champion to replace it")

    @field_validator("grid")
    @classmethod
    def _tunable(cls, grid: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, values in grid.items():
            if name not in TUNABLE_SETTINGS:
                raise ValueError(f"unknown setting {name!r}; tunable: {', '.join(TUNABLE_SETTINGS)}")
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name}: give one or more distinct values")
        points = math.prod(len(values) for values in grid.values())
        if points > MAX_TRAINING_GRID_POINTS:
            raise ValueError(f"{points} combinations; at most {MAX_TRAINING_GRID_POINTS} (each fits every model)")
        return grid


class ScoreConfig(_Strict):
    over_fetch: int = Field(ge=1, description="the blend keeps k x this per person before the rules")
    max_per_category: int = Field(ge=1, description="at most this many items of one category per person")
    consent_required: bool = Field(
        description="personal items only with personalization consent granted; false: unless revoked")


class RecommendConfig(_Strict):
    k: int = Field(ge=1, description="items per person")
    half_life_days: float = Field(gt=0, description="an interaction's weight halves every this many days")
    candidates_per_model: int = Field(ge=1, description="each model's list per person, before the blend")
    models: tuple[str, ...] = Field(min_length=1, description=f"candidate models: {', '.join(RECOMMENDER_MODELS)}")
    event_weights: dict[str, float] = Field(
        min_length=1, description="silver.interactions event type -> strength before decay (tailor train)")
    als: AlsConfig
    co_occurrence: CoOccurrenceConfig
    blend: BlendConfig
    train: TrainConfig
    score: ScoreConfig

    @field_validator("event_weights")
    @classmethod
    def _product_events(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = [name for name in weights if name not in PRODUCT_EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r}; events about products: "
                             f"{', '.join(PRODUCT_EVENT_TYPES)}")
        if any(weight <= 0 for weight in weights.values()):
            raise ValueError("weights must be above 0 (leave an event type out to ignore it)")
        return weights

    def variants(self) -> list[tuple[dict[str, float], RecommendConfig]]:
        """(the grid point, these settings with it applied) for every point of train.grid;
        one point, {}, without a grid."""
        names = list(self.train.grid)
        found = []
        for values in itertools.product(*(self.train.grid[name] for name in names)):
            point = dict(zip(names, values, strict=True))
            data = self.model_dump()
            for name, value in point.items():
                *parents, leaf = name.split(".")
                target = data
                for parent in parents:
                    target = target[parent]
                whole = isinstance(target[leaf], int) and float(value).is_integer()
                target[leaf] = int(value) if whole else value
            found.append((point, RecommendConfig.model_validate(data | {"train": {**data["train"], "grid": {}}})))
        return found

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        return _known_and_distinct(models, RECOMMENDER_MODELS, "model", "known")

    @model_validator(mode="after")
    def _consistent(self) -> RecommendConfig:
        if self.k > self.candidates_per_model:
            raise ValueError(f"k ({self.k}) is more than candidates_per_model ({self.candidates_per_model}): "
                             "each model would return fewer items than asked for")
        if self.k * self.score.over_fetch > self.candidates_per_model:
            raise ValueError(f"k x score.over_fetch ({self.k * self.score.over_fetch}) is more than "
                             f"candidates_per_model ({self.candidates_per_model})")
        if self.train.grid:
            try:
                self.variants()
            except ValidationError as error:
                first = error.errors()[0]
                raise ValueError(f"train.grid: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        points = grid_points(len(self.models), self.blend.grid_step)
        if points > MAX_BLEND_GRID_POINTS:
            raise ValueError(f"blend.grid_step {self.blend.grid_step} gives {points} weightings of "
                             f"{len(self.models)} models; at most {MAX_BLEND_GRID_POINTS} (use a coarser step)")
        return self


class MlflowConfig(_Strict):
    tracking_uri: str | None = Field(default=None, description="null: SQLite at <storage.root>/mlflow/mlflow.db")
    experiment: str = Field(
        min_length=1, description="MLflow experiment training and evaluation runs go to; created on first use")
    registered_model: str = Field(min_length=1, description="tailor train registers its model under this name")


class PiiConfig(_Strict):
    dev_keys_file: str | None = Field(
        default=None, description="local only: keys generated into this file when the key variables are unset")


class MaintenanceConfig(_Strict):
    vacuum_retention_hours: float = Field(
        ge=0, description="VACUUM keeps files this long after they leave a table; also each table's "
                          "delta.deletedFileRetentionDuration")
    allow_short_retention: bool = Field(
        default=False, description="permit retention below Delta's 168-hour safety check (tests, erasure drills)")
    log_retention_days: int = Field(
        default=30, ge=1, description="each table's delta.logRetentionDuration: how long its commit history stays, "
                                      "and file statistics that can name an erased person (see README)")
    conflict_retries: int = Field(
        default=5, ge=0, description="retries of an OPTIMIZE or purge that lost a commit race to a running job")

    @model_validator(mode="after")
    def _history_outlasts_files(self) -> MaintenanceConfig:
        # Delta refuses a delta.logRetentionDuration shorter than delta.deletedFileRetentionDuration.
        if self.vacuum_retention_hours > self.log_retention_days * 24:
            raise ValueError(f"log_retention_days {self.log_retention_days} is shorter than vacuum_retention_hours "
                             f"{self.vacuum_retention_hours:g}; a table's history must outlast its removed files")
        return self


class MonitoringConfig(_Strict):
    max_batch_age_minutes: dict[str, float] = Field(
        default_factory=lambda: {"ingest_events": 15.0, "merge_profiles": 15.0, "build_features": 30.0},
        description="tailor check-freshness: a streaming query whose last batch is older fails (by query name)")
    max_publish_age_hours: float = Field(
        default=26, gt=0, description="tailor check-freshness: gold.email_content written longer ago fails")
    max_quarantine_rate: float = Field(
        default=0.02, ge=0, le=1, description="tailor check-freshness: share of records quarantined in the window")
    window_hours: float = Field(default=24, gt=0, description="the quarantine rate's window, and the dashboard's")
    dashboard_path: str = Field(
        default="dashboard/index.html", description="tailor dashboard writes here; relative to storage.root")
    api_metrics_url: str | None = Field(
        default=None, description="the API's /metrics, for the dashboard's latency and fallback plots")

    @field_validator("max_batch_age_minutes")
    @classmethod
    def _known_queries(cls, ages: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(ages) - set(CHECKPOINTS))
        if unknown:
            raise ValueError(f"unknown streaming query {unknown[0]!r}; known: {', '.join(CHECKPOINTS)}")
        if any(age <= 0 for age in ages.values()):
            raise ValueError("every age must be above 0")
        return ages


class GreetingConfig(_Strict):
    named: str = Field(description="with a first name; {first_name} marks where it goes")
    anonymous: str = Field(min_length=1, description="without one")

    @field_validator("named")
    @classmethod
    def _names_the_person(cls, text: str) -> str:
        if text.count("{first_name}") != 1 or re.search(r"\{(?!first_name\})", text):
            raise ValueError("must hold {first_name} exactly once and no other {placeholder}")
        return text


class PublishConfig(_Strict):
    offers_file: str = Field(description="hero offer rules; a relative path sits beside the config files")
    default_locale: str = Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="for people with no locale")
    max_products: int = Field(ge=1, le=50, description="products per content row")
    email_consent_required: bool = Field(
        description="publish only people who granted email_marketing (false: everyone who did not revoke it)")
    greetings: dict[str, GreetingConfig] = Field(
        min_length=1, description="language (the locale's first two letters) -> greeting; 'en' is the default")
    export_batch_rows: int = Field(ge=1, le=100_000, description="rows per write to the serving store")

    @field_validator("greetings")
    @classmethod
    def _has_default_language(cls, greetings: dict[str, GreetingConfig]) -> dict[str, GreetingConfig]:
        if "en" not in greetings:
            raise ValueError("must hold 'en', the greeting for languages without their own")
        return greetings


class HoldoutConfig(_Strict):
    share: float = Field(ge=0, lt=1, description="share of people who get the segment default (the control group)")
    salt: str = Field(min_length=1, description="a new salt draws a new group; keep it while a test runs")


class SqliteServingConfig(_Strict):
    path: str = Field(description="the store's file; relative paths sit under storage.root")
    busy_timeout_ms: int = Field(default=5000, ge=0, description="a reader or writer waits this long for a lock")


class RedisServingConfig(_Strict):
    url: str = Field(description="redis://host:port/db; a password comes from secrets.redis_password, never here")
    key_prefix: str = Field(min_length=1, description="every key starts with this: one prefix per environment")
    socket_timeout_s: float = Field(
        default=0.5, gt=0, description="seconds a connect or call waits; the API uses api.store_timeout_ms "
        "(reads) and api.store_write_timeout_ms (consent) instead")


class DynamoDbServingConfig(_Strict):
    table: str = Field(min_length=3, max_length=255, description="the DynamoDB table holding content rows")
    region: str = Field(description="AWS region of the table")
    endpoint_url: str | None = Field(default=None, description="e.g. a local AWS-compatible server")
    create_table: bool = Field(default=False, description="create the table (on demand) when it is missing")
    max_retries: int = Field(default=8, ge=0, description="retries of unprocessed items, with backoff")


class ServingConfig(_Strict):
    """The store the API reads content rows from (Feast's pattern: `type` picks the
    class, each store's own settings sit beside it)."""

    type: Literal["sqlite", "redis", "dynamodb"] = Field(
        description="the store tailor publish exports to and the API reads (redis: also the API's rate limits)")
    sqlite: SqliteServingConfig
    redis: RedisServingConfig
    dynamodb: DynamoDbServingConfig


API_SCOPES = ("content:read", "traits:read", "preferences:write", "admin")


class CircuitBreakerConfig(_Strict):
    failure_threshold: int = Field(default=5, ge=1, description="consecutive failed reads (read lane) or failed "
                                   "changes (consent lane) that open that lane's circuit")
    reset_timeout_s: float = Field(default=5.0, gt=0,
                                   description="an open circuit lets one trial call through after this")


class ApiConfig(_Strict):
    """The content API (`tailor serve`). Keys and signing secrets come from `secrets:`
    and `webhook_secrets` (names of environment variables), never from here."""

    key_header: str = Field(default="X-Api-Key", min_length=1, description="the request header carrying an API key")
    trusted_proxies: int = Field(default=0, ge=0, le=5, description=(
        "load balancers in front of the API that set X-Forwarded-For: the client address (per-subscriber "
        "rate limits) is read that many hops back; 0: the connection's own address"))
    cache_max_age_s: int = Field(default=300, ge=0, description="Cache-Control max-age of content answers")
    cache_ttl_s: float = Field(default=30.0, ge=0, description="in-process cache of content rows; 0: off")
    cache_max_entries: int = Field(default=50_000, ge=1, description="content rows the in-process cache holds")
    defaults_refresh_s: float = Field(default=60.0, gt=0, description="fallback rows are read again this often")
    store_timeout_ms: int = Field(default=50, ge=1, description="each store read gives up after this "
                                  "(content, traits, readiness; behind the circuit breaker)")
    store_write_timeout_ms: int = Field(
        default=2000, ge=1, le=20_000, description="consent store calls (unsubscribe, preference changes, erasure, "
        "suppression from webhooks) wait this long, behind their own circuit breaker (the read lane's open "
        "circuit never refuses them); below gunicorn's 30 s worker timeout")
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    rate_limit: dict[str, str] = Field(
        default_factory=lambda: {"content:read": "60000 per minute", "traits:read": "6000 per minute",
                                 "preferences:write": "600 per minute", "admin": "600 per minute",
                                 "subscriber": "60 per minute"},
        description="scope -> Flask-Limiter limit per API key ('subscriber': per client address, token links)")
    max_batch_ids: int = Field(default=500, ge=1, le=1000, description="ids one batchGet may ask for")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="larger request bodies get 413")
    token_max_age_s: int = Field(default=60 * 24 * 3600, ge=60, description="preference links expire after this")
    public_base_url: str = Field(default="http://127.0.0.1:8080", description="preference and unsubscribe links "
                                 "in emails start with this")
    preference_topics: tuple[str, ...] = Field(
        default=("new_arrivals", "offers", "recommendations", "back_in_stock"), min_length=1,
        description="topics a subscriber may choose in the preference centre")
    webhook_tolerance_s: int = Field(default=300, ge=1, description="webhooks older than this are replays")
    webhook_secrets: dict[str, str] = Field(
        default_factory=lambda: {"generic": "TAILOR_WEBHOOK_GENERIC_SECRET",
                                 "sendgrid": "TAILOR_WEBHOOK_SENDGRID_PUBLIC_KEY"},
        description="provider -> NAME of the environment variable holding its signing secret or key")
    bind: str = Field(default="127.0.0.1:8080", description="gunicorn's listening address")
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    threads: int = Field(default=4, ge=1, description="threads per worker process (above 1: gunicorn's gthread)")

    @field_validator("rate_limit")
    @classmethod
    def _known_scopes(cls, limits: dict[str, str]) -> dict[str, str]:
        unknown = [name for name in limits if name not in (*API_SCOPES, "subscriber")]
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r}; scopes: {', '.join(API_SCOPES)}, subscriber")
        return limits

    @field_validator("webhook_secrets")
    @classmethod
    def _env_var_names(cls, names: dict[str, str]) -> dict[str, str]:
        for provider, name in names.items():
            if not _ENV_VAR_NAME.match(name):
                raise ValueError(f"{provider}: must be the NAME of an environment variable, not a secret value")
        return names


class QualityConfig(_Strict):
    """Thresholds of the Great Expectations suites (expectations/) and the gates."""

    mode: Literal["enabled", "dry_run", "disabled"] = Field(
        description="dry_run: report, never fail; disabled: run nothing")
    max_quarantine_rate: float = Field(ge=0, le=1, description="quarantined / read over the last "
                                                               "quarantine_window_hours of ingest")
    quarantine_window_hours: float = Field(default=24, gt=0, description="the quarantine rate's window, back from "
                                                                         "the newest ingest batch")
    max_freshness_lag_hours: float = Field(gt=0, description="newest event time in bronze.events at most this old")
    clock_skew_minutes: float = Field(default=10, ge=0, description="freshness: an event stamped up to this far "
                                                                    "after the run's time still counts; later "
                                                                    "ones (a bad clock) are not believed")
    max_segment_share: float = Field(gt=0, le=1, description="no primary segment may hold more of the users")
    max_null_share_increase: float = Field(ge=0, le=1, description="a watched column's null share may rise this much "
                                                                   "against the previous run")
    watched_columns: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="dataset -> columns whose null share is compared with the previous run")
    gate: Literal["enforce", "off"] = Field(description="train and publish refuse inputs that failed a critical "
                                                        "expectation at the version they read")
    require_validation: bool = Field(description="the gate also refuses an input version no enabled run checked "
                                                 "(under mode dry_run or disabled; enabled checks it on the spot)")
    stale_profile_days: int = Field(
        default=180, gt=0, description="tailor report quality: a profile with no change and no behaviour for this "
                                       "many days or more is stale")
    report_path: str = Field(
        default="quality/report.html", description="tailor report quality writes here; relative to storage.root")

    @field_validator("watched_columns")
    @classmethod
    def _known_datasets(cls, watched: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for dataset in watched:
            if dataset not in QUALITY_DATASETS:
                raise ValueError(f"{dataset!r} has no suite; one of {', '.join(QUALITY_DATASETS)}")
        return watched

    @field_validator("gate", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false: `gate: off` means what it says.
        return "off" if value is False else value


class SecretsConfig(_Strict):
    """Names of the environment variables that hold each secret; never the secret itself."""

    pii_encryption_key: str = Field(
        default="TAILOR_PII_ENCRYPTION_KEY",
        description="variable holding the AES-GCM keys of email and phone: <key id>:<base64 key>,... (first: active)")
    pii_hmac_key: str = Field(
        default="TAILOR_PII_HMAC_KEY",
        description="variable holding the base64 HMAC key of email_hash and subject_hash (never rotated)")
    api_tokens: str = Field(
        default="TAILOR_API_TOKENS",
        description="variable holding the API keys: <key id>:<sha256 hex of the key>:<scope>+<scope> entries")
    link_signing_key: str = Field(
        default="TAILOR_LINK_SIGNING_KEY",
        description="variable holding the key that signs preference-centre and unsubscribe links")
    redis_password: str = Field(
        default="TAILOR_REDIS_PASSWORD",
        description="variable holding the Redis password (serving store and the API's rate limits)")

    @field_validator("*")
    @classmethod
    def _is_env_var_name(cls, value: str) -> str:
        if not _ENV_VAR_NAME.match(value):
            raise ValueError(
                "must be the NAME of an environment variable (A-Z, 0-9, _), not a secret value"
            )
        return value


class SecretsManagerConfig(_Strict):
    """Where secrets come from when their environment variables are unset: one AWS Secrets
    Manager secret holding a JSON object keyed by the variables' names (EMR, where nothing
    puts the variables in a driver's environment)."""

    secret_id: str | None = Field(
        default=None, description="the secret's name or ARN; null: secrets come from the environment only")
    region: str | None = Field(default=None, description="AWS region of the secret")
    endpoint_url: str | None = Field(default=None, description="e.g. a local AWS-compatible server")


@dataclass(frozen=True)
class TableRef:
    """Where a table lives: a path (local, s3://) or a catalog name (Databricks)."""

    layer_name: str
    path: str | None = None
    catalog_name: str | None = None

    def __str__(self) -> str:
        return self.path or self.catalog_name or self.layer_name


class Config(_Strict):
    env: Literal["local", "databricks", "emr"] = Field(
        description="the environment whose <env>.yaml overlays base.yaml (set by the loader)")
    conf_dir: str = Field(description="the folder base.yaml and <env>.yaml were read from (set by the loader)")
    storage: StorageConfig
    spark: SparkConfig
    source: SourceConfig
    ingest: IngestConfig
    services: ServicesConfig
    generator: GeneratorConfig
    catalog: CatalogConfig
    crm: CrmConfig
    profiles: ProfilesConfig
    features: FeaturesConfig
    pii: PiiConfig = Field(default_factory=PiiConfig)
    recommend: RecommendConfig
    mlflow: MlflowConfig
    maintenance: MaintenanceConfig
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    quality: QualityConfig
    publish: PublishConfig
    holdout: HoldoutConfig
    serving: ServingConfig
    api: ApiConfig = Field(default_factory=ApiConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    secrets_manager: SecretsManagerConfig = Field(default_factory=SecretsManagerConfig)

    def resolve(self, path: str) -> str:
        """An absolute path or URI; relative paths sit under the project root (the
        repository in a checkout, the current directory for an installed wheel)."""
        if "://" in path or path.startswith("/"):
            return path
        return str(project_root() / path)

    def conf_file(self, path: str) -> str:
        """An absolute path or URI; relative paths sit beside the config files, so a
        user's own --conf-dir carries its own rules."""
        if "://" in path or path.startswith("/"):
            return path
        return str(Path(self.conf_dir) / path)

    def under_root(self, path: str) -> str:
        """An absolute path or URI; relative paths sit under storage.root."""
        if "://" in path or path.startswith("/"):
            return path
        return _join(self.resolve(self.storage.root), path)

    def table(self, layer_name: str) -> TableRef:
        if layer_name not in TABLES:
            raise ConfigError(f"unknown table '{layer_name}'; known tables: {', '.join(TABLES)}")
        if self.storage.catalog:
            return TableRef(layer_name, catalog_name=f"{self.storage.catalog}.{layer_name}")
        layer, name = layer_name.split(".")
        return TableRef(layer_name, path=_join(self.under_root(layer), name))

    def checkpoint(self, query_name: str) -> str:
        """One checkpoint folder per streaming query, never shared."""
        root = self.storage.checkpoint_root or self.under_root("_checkpoints")
        return _join(self.resolve(root), query_name)

    def secret(self, name: str) -> str | None:
        """The secret `secrets.<name>` names: its environment variable, else (when
        secrets_manager.secret_id is set) the same key of that Secrets Manager secret."""
        variable = getattr(self.secrets, name)
        value = os.environ.get(variable)
        if value is None and self.secrets_manager.secret_id:
            value = _secrets_manager_values(self.secrets_manager).get(variable)
        return value

    def masked(self) -> dict[str, Any]:
        """The resolved configuration with each secret shown as set or unset, never its value."""
        shown = self.model_dump(mode="json")
        shown["secrets"] = {
            name: {"env": env_name, "value": "****" if os.environ.get(env_name) else "<unset>"}
            for name, env_name in self.secrets.model_dump().items()
        }
        return shown


_SECRETS_LOCK = threading.Lock()
_secrets_read: dict[SecretsManagerConfig, dict[str, str]] = {}


def _secrets_manager_values(settings: SecretsManagerConfig) -> dict[str, str]:
    """The secret's JSON object, read once per process (restart after rotating it, as for
    environment variables), under a lock: the API's threads may ask at once. Errors are
    one line that names the secret and AWS's error code, never its content."""
    with _SECRETS_LOCK:
        if settings not in _secrets_read:
            _secrets_read[settings] = _read_secret(settings)
        return _secrets_read[settings]


def _read_secret(settings: SecretsManagerConfig) -> dict[str, str]:
    import boto3  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    where = f"secrets_manager.secret_id: cannot read {settings.secret_id}"
    try:
        # A session of its own: boto3's shared default session is not safe across threads.
        client = boto3.session.Session().client("secretsmanager", region_name=settings.region,
                                                endpoint_url=settings.endpoint_url)
        reply = client.get_secret_value(SecretId=settings.secret_id)
    except ClientError as error:
        raise ConfigError(f"{where}: {error.response.get('Error', {}).get('Code', 'ClientError')}") from None
    except BotoCoreError as error:
        raise ConfigError(f"{where}: {type(error).__name__}") from None
    if "SecretString" not in reply:
        raise ConfigError(f"{where}: it is stored as binary; store the JSON object as a string")
    try:
        values = json.loads(reply["SecretString"])
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(value, str) for value in values.values()):
        raise ConfigError(f"secrets_manager.secret_id: {settings.secret_id} must hold a JSON object of "
                          "variable name -> string value")
    return values


def _join(base: str, child: str) -> str:
    return base.rstrip("/") + "/" + child.lstrip("/")


def read_yaml_mapping(path: Path, what: str = "config file",
                      missing_hint: str = "restore it from git or pass --conf-dir") -> dict[str, Any]:
    """A YAML file holding a mapping, or a one-line ConfigError that names the file and line."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; {missing_hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys at the top level")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` into (['a','b','c'], value), the value read as a YAML scalar."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    for section in _DOTTED_KEY_SECTIONS:
        if tuple(parts[: len(section)]) == section and len(parts) > len(section):
            parts = [*section, ".".join(parts[len(section) :])]
    if not sep or not key.strip() or any(not p for p in parts):
        raise ConfigError(f"--set '{text}' must look like dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def _apply_override(data: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            key, prefix = ".".join(parts), ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}: '{prefix}' is a value, not a section")
        node = child
    node[parts[-1]] = value
    return data


def _has_path(data: Any, parts: tuple[Any, ...]) -> bool:
    for part in parts:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{error['msg'].lower()} (got {error.get('input')!r})"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in error and not isinstance(error["input"], dict):
        return f"{message} (got {error['input']!r})"
    return message


def load_config(
    env: str = "local",
    overrides: tuple[str, ...] | list[str] = (),
    conf_dir: str | Path | None = None,
) -> Config:
    """Read base.yaml, overlay <env>.yaml, apply --set overrides, validate."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown env '{env}'; choose one of: {', '.join(ENVIRONMENTS)}")
    directory = Path(conf_dir or os.environ.get("TAILOR_CONF_DIR") or bundled_conf_dir())
    layers: list[tuple[str, dict[str, Any]]] = [
        (str(directory / name), read_yaml_mapping(directory / name)) for name in ("base.yaml", f"{env}.yaml")
    ]
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _deep_merge(merged, data)
    set_layer: dict[str, Any] = {}
    for text in overrides:
        parts, value = parse_override(text)
        merged = _apply_override(merged, parts, value)
        set_layer = _apply_override(set_layer, parts, value)
    layers.append(("--set", set_layer))
    merged["env"] = env
    merged["conf_dir"] = str(directory.resolve())
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = tuple(error["loc"])
            origin = next((name for name, data in reversed(layers) if _has_path(data, location)), None)
            key = ".".join(str(part) for part in location)
            where = f" (from {origin})" if origin else ""
            problems.append(f"{key}: {_describe(error)}{where}")
        raise ConfigError("config error: " + "; ".join(problems)) from None
