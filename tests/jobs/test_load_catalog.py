"""tailor load-catalog end to end: a CSV full feed, then a JSON-lines one, then a cut-off
feed that must not empty the catalogue; the table after each is written down by hand."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from chispa import assert_df_equality

from jobs.load_catalog import main, run
from pipelines.config import load_config
from pipelines.runtime.delta_tables import read_table
from tests.settings import SPARK_TEST_SETTINGS

COLUMNS = "product_id string, title string, price double, in_stock boolean, active boolean, updated_at timestamp"
FIRST_LOAD = datetime(2026, 11, 27, 6, 0)


def _args(tmp_path, *extra):
    argv = [*extra]
    for override in (f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS):
        argv += ["--set", override]
    return argv


def _load(config, argv, at):
    from jobs.load_catalog import build_parser

    return run(config, build_parser().parse_args(argv), loaded_at=at)


def _products(spark, config):
    return read_table(spark, config.table("silver.products")).select(*[c.split()[0] for c in COLUMNS.split(", ")])


def test_full_feeds_upsert_deactivate_and_refuse_to_empty_the_catalogue(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    csv_feed = tmp_path / "feed.csv"
    csv_feed.write_text(
        "sku,name,category,price,currency,availability,updated\n"
        "A,Cake stand,kitchen,12.50,GBP,in stock,2026-11-20T00:00:00Z\n"
        "A,Cake stand,kitchen,11.00,GBP,in stock,2026-11-10T00:00:00Z\n"   # older: loses
        "B,Tea towel,kitchen,3.00,GBP,out of stock,2026-11-20T00:00:00Z\n"
        "C,Trowel,garden,8.00,GBP,yes,2026-11-20T00:00:00Z\n"
        'D,"Broken, half a row\n'                                           # malformed: not the header's columns
        "E,Vase,home,abc,GBP,yes,2026-11-20T00:00:00Z\n")                  # price not a number
    mapping = "product_id=sku,title=name,in_stock=availability,updated_at=updated"
    argv = ["--feed", str(csv_feed), "--columns", mapping]
    assert _load(config, argv, FIRST_LOAD) == 0
    expected = [("A", "Cake stand", 12.5, True, True, datetime(2026, 11, 20)),
                ("B", "Tea towel", 3.0, False, True, datetime(2026, 11, 20)),
                ("C", "Trowel", 8.0, True, True, datetime(2026, 11, 20))]
    assert_df_equality(_products(spark, config), spark.createDataFrame(expected, COLUMNS), ignore_row_order=True,
                       ignore_nullable=True)
    quarantine = read_table(spark, config.table("bronze.quarantine"))
    reasons = sorted((r.error_code, r.error_message) for r in quarantine.where("stream = 'catalog'").collect())
    assert reasons == [("malformed_json", "not a JSON object, or not the header's columns"),
                       ("wrong_type", "price: 'abc' is not a number")]

    # Loading the same feed again writes nothing: no commit, no second quarantine row.
    versions = spark.sql(f"DESCRIBE HISTORY delta.`{config.table('silver.products').path}`").count()
    assert _load(config, argv, datetime(2026, 11, 27, 7, 0)) == 0
    assert quarantine.where("stream = 'catalog'").count() == 2
    assert spark.sql(f"DESCRIBE HISTORY delta.`{config.table('silver.products').path}`").count() == versions

    # A JSON-lines full feed, as the generator writes it: A's price changes, B is left
    # out (inactive), D is new, and a stale C (older than the stored row) is ignored.
    events = tmp_path / "events-feed"
    events.mkdir()
    (events / "products.jsonl").write_text("\n".join(json.dumps({
        "event_id": f"e-{pid}", "event_type": "product_upsert", "schema_version": 1, "user_id": None,
        "occurred_at": at, "source": "catalog",
        "payload": {"product_id": pid, "title": title, "category": "kitchen", "price": price, "currency": "GBP",
                    "in_stock": True}})
        for pid, title, price, at in (("A", "Cake stand", 14.0, "2026-11-25T00:00:00Z"),
                                      ("C", "Old trowel", 1.0, "2026-11-01T00:00:00Z"),
                                      ("D", "Apron", 9.0, "2026-11-25T00:00:00Z"))) + "\n")
    assert _load(config, ["--feed", str(events)], datetime(2026, 11, 28, 6, 0)) == 0
    expected = [("A", "Cake stand", 14.0, True, True, datetime(2026, 11, 25)),
                ("B", "Tea towel", 3.0, False, False, datetime(2026, 11, 20)),
                ("C", "Trowel", 8.0, True, True, datetime(2026, 11, 20)),
                ("D", "Apron", 9.0, True, True, datetime(2026, 11, 25))]
    assert_df_equality(_products(spark, config), spark.createDataFrame(expected, COLUMNS), ignore_row_order=True,
                       ignore_nullable=True)

    # A feed cut off after one product would deactivate two of three: refused, nothing changes.
    cut = tmp_path / "cut.jsonl"
    cut.write_text(json.dumps({"product_id": "A", "title": "Cake stand", "category": "kitchen", "price": 14.0,
                               "currency": "GBP", "updated_at": "2026-11-25T00:00:00Z"}) + "\n")
    assert main(_args(tmp_path, "--feed", str(cut))) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("tailor: the full feed leaves out 2 of 3 active products, more than "
                     "catalog.max_deactivated_share (0.5); nothing was changed. Check the feed, or load it with "
                     "--force"), error
    assert_df_equality(_products(spark, config), spark.createDataFrame(expected, COLUMNS), ignore_row_order=True,
                       ignore_nullable=True)
    # As an incremental feed it deactivates nothing; with --force the full feed does.
    assert _load(config, ["--feed", str(cut), "--incremental"], datetime(2026, 11, 28, 7, 0)) == 0
    assert _products(spark, config).where("active").count() == 3
    assert _load(config, ["--feed", str(cut), "--force"], datetime(2026, 11, 28, 8, 0)) == 0
    assert sorted(r.product_id for r in _products(spark, config).where("active").collect()) == ["A"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--feed", "/nowhere/products.csv"], "--feed: /nowhere/products.csv does not exist"),
    (["--columns", "colour=c"], "--columns: unknown field 'colour'"),
    (["--format", "delta"], "is not a Delta table (no _delta_log)"),
])
def test_bad_options_are_one_line_before_spark_starts(tmp_path, capsys, extra, message):
    feed = tmp_path / "feed.csv"
    feed.write_text("product_id,title\np1,x\n")
    argv = ["--feed", str(feed), *extra] if "--feed" not in extra else extra
    assert main(_args(tmp_path, *argv)) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and error.startswith("tailor: ") and len(error.splitlines()) == 1, error


def test_a_mapped_column_the_feed_lacks_is_one_line(spark, tmp_path, capsys):
    feed = tmp_path / "feed.csv"
    feed.write_text("product_id,title\np1,x\n")
    assert main(_args(tmp_path, "--feed", str(feed), "--columns", "price=cost")) == 2
    error = capsys.readouterr().err.strip()
    assert error == "tailor: --columns: column 'cost' is not in the feed (it has: product_id, title)", error
