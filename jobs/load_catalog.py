"""Merge a product feed into silver.products; bad rows go to bronze.quarantine.

    tailor load-catalog [--feed FILE|FOLDER|TABLE] [--format csv|tsv|jsonl|parquet|delta]
        [--columns product_id=COL,title=COL,...] [--full | --incremental] [--force]
    spark-submit jobs/load_catalog.py [same options]

The feed (catalog.path; the generator and the Online Retail replay write theirs to
<generator.output>/catalog) is CSV or TSV with a header, JSON lines (bare products or
product_upsert events), Parquet, or a Delta table (a path, or a name where a metastore
holds it). `--columns` maps product fields to the feed's own column names.

Each product is upserted by product_id: the row with the latest updated_at wins (the load
time when the feed gives none), and a stored product newer than the feed's row is kept.
A full feed (catalog.full_feed, or --full) lists every product, so an active product it
leaves out becomes inactive; if that would deactivate more than
catalog.max_deactivated_share of the active catalogue, the load fails and leaves
silver.products as it was (a cut-off feed must not empty the emails), unless --force. A row that breaks the
product_upsert contract (a missing title, a price that is not a number, a URL that is not
http(s)) is quarantined with the reason, stream 'catalog'; fix the feed and load it again.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from jobs._common import config_from, entry_point, parser_for, setup_logging
from jobs._files import format_of, known_suffix, parse_columns, read_file
from pipelines.config import CATALOG_FORMATS, Config
from pipelines.errors import ConfigError, TailorError

log = logging.getLogger("tailor.catalog")
_CORRUPT = "_corrupt_record"


def build_parser() -> argparse.ArgumentParser:
    from pipelines.catalog.transforms import PRODUCT_FIELDS

    parser = parser_for("tailor load-catalog", __doc__.split("\n\n")[0])
    parser.add_argument("--feed", default=None, help="file, folder or Delta table; default: catalog.path")
    parser.add_argument("--format", choices=CATALOG_FORMATS, default=None,
                        help="default: catalog.format, else from the name (a folder: jsonl)")
    parser.add_argument("--columns", default="",
                        help="field=column, comma-separated; fields: " + ", ".join(PRODUCT_FIELDS))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="full_feed", action="store_true", default=None,
                      help="the feed lists every product (default: catalog.full_feed)")
    mode.add_argument("--incremental", dest="full_feed", action="store_false",
                      help="the feed lists only changed products: nothing is deactivated")
    parser.add_argument("--force", action="store_true",
                        help="deactivate even more than catalog.max_deactivated_share of the catalogue")
    return parser


def _feed_location(config: Config, args: argparse.Namespace) -> tuple[str, str]:
    """(where the feed is, its format); checked before Spark starts. catalog.format is the
    format of catalog.path, not of a --feed given instead."""
    feed = args.feed or config.under_root(config.catalog.path)
    kind = args.format or (None if args.feed else config.catalog.format)
    remote = "://" in feed
    if not remote and not Path(feed).exists():
        # A bare name that is no file is a table in the metastore (`shop.products`).
        if kind in (None, "delta") and "/" not in feed and not known_suffix(feed):
            return feed, "delta"
        raise ConfigError(f"--feed: {feed} does not exist")
    if kind is None and not remote and Path(feed).is_dir():
        kind = _folder_format(Path(feed))
    # A URI without a file suffix is taken for a folder of JSON lines, as catalog.path is.
    kind = format_of(feed, kind, CATALOG_FORMATS, folder_default="jsonl")
    if not remote and kind == "delta" and not (Path(feed) / "_delta_log").is_dir():
        raise ConfigError(f"--feed: {feed} is not a Delta table (no _delta_log)")
    return feed, kind


def _folder_format(folder: Path) -> str:
    """A local folder's format: a Delta table by its log, else by its files' suffixes."""
    if (folder / "_delta_log").is_dir():
        return "delta"
    kinds = {known_suffix(file.name) for file in folder.rglob("*") if file.is_file() and not file.name.startswith(".")}
    kinds.discard(None)
    if len(kinds) > 1:
        raise ConfigError(f"--format: {folder} holds files of several formats ({', '.join(sorted(kinds))}); "
                          "give one")
    return kinds.pop() if kinds else "jsonl"


def read_feed(spark, feed: str, kind: str, columns: dict[str, str]):
    """The feed as (raw, source_partition, fields). `columns` holds the fields whose
    column is named differently in the feed; the others are read by their own name."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from pipelines.catalog.transforms import PRODUCT_FIELDS, from_columns, from_json_lines, renamed_fields

    if kind == "jsonl":
        lines = spark.read.text(feed).select(F.col("value").alias("raw"),
                                             F.col("_metadata.file_path").alias("source_partition"))
        return from_json_lines(lines).transform(renamed_fields(columns))
    if kind in ("csv", "tsv"):
        header = read_file(spark, feed, kind).columns
        schema = StructType([StructField(name, StringType()) for name in [*header, _CORRUPT]])
        rows = (spark.read.option("header", True).option("sep", "\t" if kind == "tsv" else ",")
                .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", _CORRUPT)
                .schema(schema).csv(feed))
        corrupt = _CORRUPT
    elif kind == "parquet":
        rows, corrupt = read_file(spark, feed, kind), None
    else:
        is_path = "/" in feed or Path(feed).exists()
        rows = spark.read.format("delta").load(feed) if is_path else spark.read.table(feed)
        corrupt = None
    missing = [column for column in columns.values() if column not in rows.columns]
    if missing:
        shown = [name for name in rows.columns if name != _CORRUPT]
        raise ConfigError(f"--columns: column {missing[0]!r} is not in the feed (it has: {', '.join(shown)})")
    # A column mapped to another field is not also read under its own name.
    own = {field: field for field in PRODUCT_FIELDS
           if field in rows.columns and field not in columns and field not in columns.values()}
    return from_columns(rows, {**own, **columns}, feed, corrupt)


def _feed_columns(args: argparse.Namespace) -> dict[str, str]:
    from pipelines.catalog.transforms import PRODUCT_FIELDS

    return parse_columns(args.columns, PRODUCT_FIELDS, {}, noun="field")


def load(spark, config: Config, feed: str, kind: str, columns: dict[str, str], full_feed: bool, force: bool,
         loaded_at: datetime) -> dict[str, int]:
    """Load one feed; the counts reconcile: read = valid + invalid, valid = products +
    superseded (older rows of the same product in the feed), products = inserted +
    updated + unchanged (already so, or older than the stored row)."""
    from pyspark.sql import functions as F

    from pipelines.catalog.transforms import (
        latest_per_product,
        listed_only,
        missing_from_feed,
        quarantine_rows,
        validate_products,
    )
    from pipelines.catalog.writes import append_new_quarantine, ensure_products_table, merge_products
    from pipelines.ingest.writes import ensure_bronze_tables
    from pipelines.runtime.delta_tables import read_table

    candidates = read_feed(spark, feed, kind, columns)
    ensure_products_table(spark, config)
    ensure_bronze_tables(spark, config)
    checked = validate_products(candidates, loaded_at).localCheckpoint()
    counts = checked.agg(F.count(F.lit(1)).alias("read"),
                         F.count_if(F.col("error_code").isNull()).alias("valid")).first()
    summary = {"read": counts.read, "valid": counts.valid, "invalid": counts.read - counts.valid}
    # Bad rows first: a feed refused below still leaves its reasons to read.
    bad = quarantine_rows(checked.where(F.col("error_code").isNotNull()), loaded_at, "catalog_" + kind)
    summary["quarantined_new"] = append_new_quarantine(spark, config.table("bronze.quarantine"), bad)
    latest = latest_per_product(checked.where(F.col("error_code").isNull())).localCheckpoint()
    named_on_bad_rows = listed_only(checked, latest).localCheckpoint()
    products = config.table("silver.products")
    # The feed's own time: its latest updated_at among rows that gave one (a row without
    # one is stamped with the load time, which says nothing about when the feed was cut).
    dated = F.when(F.array_contains("supplied", "updated_at"), F.col("updated_at"))
    feed_as_of, any_row = latest.agg(F.max(dated), F.count(F.lit(1))).first()
    if feed_as_of is None and any_row:
        feed_as_of = loaded_at
    if full_feed and not any_row:
        log.warning("the full feed %s has no good row: nothing is deactivated (see bronze.quarantine, stream "
                    "'catalog')", feed)
    summary |= {"products": latest.count(), "superseded": counts.valid - latest.count()}
    if full_feed:
        stored = read_table(spark, products)
        active = stored.where(F.col("active")).count()
        listed = latest.select("product_id").unionByName(named_on_bad_rows)
        leaving = missing_from_feed(stored, listed, feed_as_of).count()
        share = config.catalog.max_deactivated_share
        if active and leaving > share * active and not force:
            raise TailorError(
                f"the full feed leaves out {leaving} of {active} active products, more than "
                f"catalog.max_deactivated_share ({share:g}); silver.products was not changed. Check the feed, or "
                "load it with --force")
    summary |= merge_products(spark, products, latest, named_on_bad_rows, full_feed, feed_as_of)
    summary["unchanged"] = summary["products"] - summary["inserted"] - summary["updated"]
    return summary


def load_from_args(spark, config: Config, args: argparse.Namespace, loaded_at: datetime) -> dict[str, int]:
    feed, kind = _feed_location(config, args)
    full_feed = config.catalog.full_feed if args.full_feed is None else args.full_feed
    summary = load(spark, config, feed, kind, _feed_columns(args), full_feed, args.force, loaded_at)
    log.info("catalogue %s (%s, %s feed): %s", feed, kind, "full" if full_feed else "incremental",
             json.dumps(summary))
    return summary


def run(config: Config, args: argparse.Namespace, loaded_at: datetime | None = None) -> int:
    from pipelines.runtime.session import build_spark

    # Options are checked before Spark starts: a typo costs a second, not a JVM.
    _feed_location(config, args)
    _feed_columns(args)
    spark = build_spark(config, "load_catalog")
    load_from_args(spark, config, args, loaded_at or datetime.now(UTC))
    return 0


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return run(config_from(args), args)


if __name__ == "__main__":
    raise SystemExit(main())
