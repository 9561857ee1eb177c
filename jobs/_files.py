"""Reading a file a person hands a job (interactions to evaluate, a product feed): its
format from its name, and the file as a DataFrame."""

from __future__ import annotations

from pathlib import Path

from pipelines.errors import ConfigError

_SUFFIXES = ((".csv", "csv"), (".csv.gz", "csv"), (".tsv", "tsv"), (".tsv.gz", "tsv"), (".parquet", "parquet"),
             (".jsonl", "jsonl"), (".json", "jsonl"), (".jsonl.gz", "jsonl"), (".json.gz", "jsonl"))


def known_suffix(path: str) -> str | None:
    """The format a file's name says, if it says one."""
    name = path.rstrip("/").lower()
    return next((kind for suffix, kind in _SUFFIXES if name.endswith(suffix)), None)


def format_of(path: str, given: str | None, known: tuple[str, ...], folder_default: str | None = None) -> str:
    """The format given, or the one the file's name says; a local folder, or a URI
    (s3://bucket/catalog) whose name says nothing, is `folder_default`."""
    if given:
        return given
    kind = known_suffix(path)
    if kind in known:
        return kind
    if folder_default and kind is None and ("://" in path or Path(path).is_dir()):
        return folder_default
    raise ConfigError(f"--format: cannot tell the format of {path}; give one of {', '.join(known)}")


def _nanosecond_columns(path: str) -> list[str]:
    """Parquet columns holding timestamp[ns] (pandas' default), which Spark cannot read as
    timestamps: they are read as longs and converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(path)
    if target.is_dir():
        target = next(iter(sorted(target.rglob("*.parquet"))), target)
    schema = pq.read_schema(target)
    return [field.name for field in schema if pa.types.is_timestamp(field.type) and field.type.unit == "ns"]


def read_file(spark, path: str, kind: str):
    """CSV or TSV with a header (every column a string), JSON lines, or Parquet."""
    from pyspark.sql import functions as F

    if kind in ("csv", "tsv"):
        return spark.read.option("header", True).option("sep", "\t" if kind == "tsv" else ",").csv(path)
    if kind == "jsonl":
        return spark.read.json(path)
    nanos = _nanosecond_columns(path) if "://" not in path else []
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    frame = spark.read.parquet(path)
    for name in nanos:
        frame = frame.withColumn(name, F.timestamp_micros(F.expr(f"`{name}` div 1000")))
    return frame


def parse_columns(text: str, roles: tuple[str, ...], defaults: dict[str, str], noun: str = "role"
                  ) -> dict[str, str]:
    """`--columns role=column,...` over `defaults`; an unknown role is one line."""
    columns = dict(defaults)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        role, sep, column = part.partition("=")
        if not sep or not column:
            raise ConfigError(f"--columns: {part!r} is not {noun}=column")
        if role not in roles:
            raise ConfigError(f"--columns: unknown {noun} {role!r}; {noun}s: {', '.join(roles)}")
        columns[role] = column
    return columns
