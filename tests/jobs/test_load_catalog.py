"""tailor load-catalog end to end: a CSV full feed, then a JSON-lines one, then a cut-off
feed that must not empty the catalogue; the table after each is written down by hand."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from chispa import assert_df_equality

from jobs.load_catalog import build_parser, load_from_args, main
from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.runtime.delta_tables import read_table
from pipelines.synthetic.generator import WorldSpec, generate_world
from pipelines.synthetic.online_retail import read_rows, replay_events
from tests.settings import SPARK_TEST_SETTINGS

COLUMNS = "product_id string, title string, price double, in_stock boolean, active boolean, updated_at timestamp"
FIRST_LOAD = datetime(2026, 11, 27, 6, 0)


def _args(tmp_path, *extra):
    argv = [*extra]
    for override in (f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS):
        argv += ["--set", override]
    return argv


def _load(spark, config, argv, at):
    """The job's summary of one load (the same code path as `tailor load-catalog`)."""
    return load_from_args(spark, config, build_parser().parse_args(argv), at)


def _summary(read, valid, quarantined_new, products, inserted=0, updated=0, deactivated=0):
    """The summary the job must give; the other counts follow from these."""
    return {"read": read, "valid": valid, "invalid": read - valid, "quarantined_new": quarantined_new,
            "products": products, "superseded": valid - products, "inserted": inserted, "updated": updated,
            "unchanged": products - inserted - updated, "deactivated": deactivated}


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
    assert _load(spark, config, argv, FIRST_LOAD) == _summary(6, 4, 2, 3, inserted=3)
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
    assert _load(spark, config, argv, datetime(2026, 11, 27, 7, 0)) == _summary(6, 4, 0, 3)
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
    assert _load(spark, config, ["--feed", str(events)], datetime(2026, 11, 28, 6, 0)) == _summary(
        3, 3, 0, 3, inserted=1, updated=1, deactivated=1)
    expected = [("A", "Cake stand", 14.0, True, True, datetime(2026, 11, 25)),
                ("B", "Tea towel", 3.0, False, False, datetime(2026, 11, 20)),
                ("C", "Trowel", 8.0, True, True, datetime(2026, 11, 20)),
                ("D", "Apron", 9.0, True, True, datetime(2026, 11, 25))]
    assert_df_equality(_products(spark, config), spark.createDataFrame(expected, COLUMNS), ignore_row_order=True,
                       ignore_nullable=True)

    # A feed cut off after one product would deactivate two of three: refused, nothing changes.
    cut = tmp_path / "cut.jsonl"
    cut.write_text(json.dumps({"product_id": "A", "title": "Cake stand", "category": "kitchen", "price": 14.0,
                               "currency": "GBP", "updated_at": "2026-11-25T00:00:00Z"}) + "\n{cut off\n")
    assert main(_args(tmp_path, "--feed", str(cut))) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("tailor: the full feed leaves out 2 of 3 active products, more than "
                     "catalog.max_deactivated_share (0.5); silver.products was not changed. Check the feed, or "
                     "load it with --force"), error
    assert_df_equality(_products(spark, config), spark.createDataFrame(expected, COLUMNS), ignore_row_order=True,
                       ignore_nullable=True)
    # Refused, but its bad line is quarantined already: the reason is there to read.
    assert quarantine.where("stream = 'catalog'").count() == 3
    # As an incremental feed it deactivates nothing; with --force the full feed does.
    assert _load(spark, config, ["--feed", str(cut), "--incremental"], datetime(2026, 11, 28, 7, 0)) == _summary(
        2, 1, 0, 1)
    assert _products(spark, config).where("active").count() == 3
    assert _load(spark, config, ["--feed", str(cut), "--force"], datetime(2026, 11, 28, 8, 0)) == _summary(
        2, 1, 0, 1, deactivated=2)
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


KEPT = "product_id string, price double, image_url string, in_stock boolean, active boolean"


def test_what_a_feed_leaves_unsaid_or_cannot_say_is_kept(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    first = tmp_path / "first.csv"
    first.write_text(
        "product_id,title,category,price,currency,image_url,in_stock,active,updated_at\n"
        "P1,Mug,kitchen,5.00,GBP,https://cdn.example.com/p1.jpg,yes,yes,2026-11-20T00:00:00Z\n"
        "P2,Bowl,kitchen,6.00,GBP,https://cdn.example.com/p2.jpg,yes,no,2026-11-20T00:00:00Z\n"
        "P3,Spoon,kitchen,1.00,GBP,https://cdn.example.com/p3.jpg,no,yes,2026-11-20T00:00:00Z\n"
        "P4,Fork,kitchen,1.00,GBP,,yes,yes,2026-11-20T00:00:00Z\n")
    assert _load(spark, config, ["--feed", str(first)], FIRST_LOAD) == _summary(4, 4, 0, 4, inserted=4)

    # Prices only (and a blank `active`): images, stock and P2's explicit "inactive" stay as they were.
    prices = tmp_path / "prices.jsonl"
    prices.write_text("".join(json.dumps({"product_id": pid, "title": title, "category": "kitchen", "price": price,
                                          "currency": "GBP", "updated_at": at, "active": ""}) + "\n"
                              for pid, title, price, at in (("P1", "Mug", 4.5, "2026-11-22T00:00:00Z"),
                                                            ("P2", "Bowl", 5.5, "2026-11-22T00:00:00Z"),
                                                            ("P5", "Knife", 2.0, "2026-11-26T00:00:00Z"))))
    assert _load(spark, config, ["--feed", str(prices), "--incremental"], datetime(2026, 11, 27, 7, 0)) == _summary(
        3, 3, 0, 3, inserted=1, updated=2)
    after_prices = [("P1", 4.5, "https://cdn.example.com/p1.jpg", True, True),
                    ("P2", 5.5, "https://cdn.example.com/p2.jpg", True, False),
                    ("P3", 1.0, "https://cdn.example.com/p3.jpg", False, True),
                    ("P4", 1.0, None, True, True),
                    ("P5", 2.0, None, None, True)]
    kept = read_table(spark, config.table("silver.products")).select(*[c.split()[0] for c in KEPT.split(", ")])
    assert_df_equality(kept, spark.createDataFrame(after_prices, KEPT), ignore_row_order=True, ignore_nullable=True)

    # An old full feed replayed late: P1 stale, P3 named only on a bad line (twice), P4's
    # line unreadable (a key twice). P3 is listed, so it stays; P4 is not, so it goes; P5
    # came after this feed was cut (11-20), so it stays.
    old = tmp_path / "old.jsonl"
    p3_bad = json.dumps({"product_id": "P3", "title": "Spoon", "category": "kitchen", "price": "abc",
                         "currency": "GBP", "updated_at": "2026-11-20T00:00:00Z"})
    old.write_text("\n".join([
        json.dumps({"product_id": "P1", "title": "Mug", "category": "kitchen", "price": 5.0, "currency": "GBP",
                    "updated_at": "2026-11-20T00:00:00Z"}),
        p3_bad, p3_bad,
        '{"product_id": "P4", "product_id": "P4b", "title": "Fork", "category": "kitchen", "price": 1, '
        '"currency": "GBP"}']) + "\n")
    assert _load(spark, config, ["--feed", str(old)], datetime(2026, 11, 28, 6, 0)) == _summary(
        4, 1, 2, 1, deactivated=1)
    after_old = [row if row[0] != "P4" else ("P4", 1.0, None, True, False) for row in after_prices]
    assert_df_equality(kept, spark.createDataFrame(after_old, KEPT), ignore_row_order=True, ignore_nullable=True)
    reasons = sorted(r.error_message for r in read_table(spark, config.table("bronze.quarantine")).collect())
    assert reasons == ["a key appears twice in the JSON object", "price: 'abc' is not a number"]

    # A full feed with no readable row says nothing about what is gone: it quarantines, and
    # deactivates nothing (and is not refused: its reasons are what the team needs).
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n<html>\n")
    assert _load(spark, config, ["--feed", str(garbage)], datetime(2026, 11, 28, 7, 0)) == _summary(2, 0, 2, 0)
    assert_df_equality(kept, spark.createDataFrame(after_old, KEPT), ignore_row_order=True, ignore_nullable=True)


def test_the_generator_and_online_retail_catalogues_load_whole(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    feed = tmp_path / "catalog"
    feed.mkdir()
    generated = generate_world(WorldSpec(seed=5, users=30, products=40, days=3, start=date(2026, 11, 1))).catalog
    _, retail, _ = replay_events(read_rows(limit=5000))
    (feed / "generated.jsonl").write_text("\n".join(generated) + "\n")
    (feed / "retail.jsonl").write_text("\n".join(retail) + "\n")
    ids = {json.loads(line)["payload"]["product_id"] for line in generated + retail}
    lines = len(generated) + len(retail)
    assert _load(spark, config, ["--feed", str(feed)], FIRST_LOAD) == _summary(
        lines, lines, 0, len(ids), inserted=len(ids))
    products = read_table(spark, config.table("silver.products"))
    assert products.where("active AND title IS NOT NULL AND price >= 0").count() == len(ids) > 40


def test_where_the_feed_is_and_what_format_it_has(tmp_path):
    from jobs.load_catalog import _feed_location

    config = load_config("local", [f"storage.root={tmp_path}", "catalog.format=csv"])
    local = tmp_path / "feed.jsonl"
    local.write_text("")

    def located(*argv):
        return _feed_location(config, build_parser().parse_args(list(argv)))

    assert located("--feed", "s3://shop/catalog") == ("s3://shop/catalog", "jsonl")
    assert located("--feed", "s3://shop/exports/feed.tsv") == ("s3://shop/exports/feed.tsv", "tsv")
    assert located("--feed", "shop.products") == ("shop.products", "delta")
    # catalog.format describes catalog.path, not a file given instead.
    assert located("--feed", str(local)) == (str(local), "jsonl")


def test_a_local_folder_is_read_as_what_it_holds(tmp_path):
    from jobs.load_catalog import _feed_location

    config = load_config("local", [f"storage.root={tmp_path}"])
    delta, parquet, mixed = tmp_path / "delta", tmp_path / "parquet", tmp_path / "mixed"
    (delta / "_delta_log").mkdir(parents=True)
    (delta / "part-0.parquet").write_text("")
    parquet.mkdir()
    (parquet / "part-0.parquet").write_text("")
    mixed.mkdir()
    (mixed / "a.csv").write_text("")
    (mixed / "b.jsonl").write_text("")

    def located(folder):
        return _feed_location(config, build_parser().parse_args(["--feed", str(folder)]))[1]

    assert (located(delta), located(parquet)) == ("delta", "parquet")
    with pytest.raises(ConfigError, match="several formats"):
        located(mixed)
