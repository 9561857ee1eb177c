"""Generate a deterministic synthetic world of events (or replay a real data set).

    tailor generate [--env local] [--set k=v ...] [--seed N] [--users N] [--products N]
                    [--days N] [--start YYYY-MM-DD] [--faults kind=fraction,...]
                    [--batches N] [--sink files|kafka] [--output DIR] [--with-schema]
    spark-submit jobs/generate.py ...   (same options; Spark is not needed)

Parameters (defaults from `generator.*` in config):
  --seed, --users, --products, --days, --start   the world; same values, same output
  --faults     fractions of events to break, e.g. malformed_json=0.01,duplicate=0.05 or
               all=0.01; kinds: malformed_json, missing_field, wrong_type, duplicate,
               out_of_order, late, unknown_event_type, unknown_schema_version
  --batches    number of event files (files sink), to exercise several micro-batches
  --sink       files (default): JSON lines under --output/{events,crm,catalog}
               kafka: events and CRM changes to source.kafka.{events_topic,crm_topic}
  --with-schema  send CRM changes in Kafka Connect's {"schema", "payload"} wrapper
  --from       synthetic (default) or online-retail: replay the UCI Online Retail data set
               (data/online-retail, CC BY 4.0) as purchase and product_upsert events; what
               happens to each kind of dirt in it is in pipelines/synthetic/online_retail.py
  --limit      online-retail only: replay the first N source lines
  --grant-consent  online-retail only: give each customer a profile (their country) and
               made-up email_marketing and personalization consent before their first
               invoice, so the flow publishes to them (the data set has no consent)
Output: the files or messages, and `_manifest.json` listing counts and injected faults.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import date
from pathlib import Path

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.errors import TailorError
from pipelines.synthetic.generator import Faults, WorldSpec, batches, crm_message, generate_world, iter_crm_records
from pipelines.synthetic.producers import produce_to_kafka, write_json, write_jsonl

log = logging.getLogger("tailor.generate")


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor generate", __doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--products", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--faults", default="")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--sink", choices=("files", "kafka"), default="files")
    parser.add_argument("--output", help="landing folder (default: generator.output)")
    parser.add_argument("--with-schema", action="store_true")
    parser.add_argument("--from", dest="origin", choices=("synthetic", "online-retail"), default="synthetic")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--grant-consent", action="store_true")
    return parser


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    defaults = config.generator
    try:
        faults = Faults.parse(args.faults)
    except ValueError as error:
        raise TailorError(f"--faults: {error}") from None
    if args.origin == "online-retail":
        return _replay_online_retail(config, args)
    for name in ("users", "products", "days", "batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise TailorError(f"--{name} must be at least 1")
    spec = WorldSpec(
        seed=defaults.seed if args.seed is None else args.seed,
        users=args.users or defaults.users,
        products=args.products or defaults.products,
        days=args.days or defaults.days,
        start=args.start or defaults.start,
        zipf_exponent=defaults.zipf_exponent,
        faults=faults,
        batches=args.batches,
    )
    world = generate_world(spec)
    output = Path(args.output or config.under_root(defaults.output))
    stem = f"seed{spec.seed}"
    write_jsonl(output / "catalog", f"products-{stem}", world.catalog)
    if args.sink == "files":
        for number, batch in enumerate(world.event_batches(spec.batches)):
            write_jsonl(output / "events", f"events-{stem}-{number:04d}", batch)
        write_jsonl(output / "crm", f"crm-{stem}",
                    [crm_message(change, args.with_schema) for change in world.crm_changes])
        where = str(output)
    else:
        kafka = config.source.kafka
        produce_to_kafka(kafka.bootstrap_servers, kafka.events_topic,
                         ((_event_key(line), line) for line in world.events))
        produce_to_kafka(kafka.bootstrap_servers, kafka.crm_topic,
                         iter_crm_records(world, args.with_schema))
        where = f"kafka {kafka.bootstrap_servers} ({kafka.events_topic}, {kafka.crm_topic})"
    write_json(output / f"_manifest-{stem}.json", world.manifest)
    counts = world.manifest["counts"]
    log.info("wrote %d event lines, %d CRM changes and %d products to %s",
             counts["event_lines"], sum(counts["crm_changes_by_op"].values()), counts["products"], where)
    return 0


def _replay_online_retail(config, args) -> int:
    from pipelines.synthetic.online_retail import read_rows, replay_events

    events, catalogue, manifest = replay_events(read_rows(limit=args.limit), grant_consent=args.grant_consent)
    output = Path(args.output or config.under_root(config.generator.output))
    stem = "online-retail" + (f"-{args.limit}" if args.limit else "")
    write_jsonl(output / "catalog", f"products-{stem}", catalogue)
    if args.sink == "files":
        for number, batch in enumerate(batches(events, args.batches)):
            write_jsonl(output / "events", f"events-{stem}-{number:04d}", batch)
    else:
        kafka = config.source.kafka
        produce_to_kafka(kafka.bootstrap_servers, kafka.events_topic,
                         ((_event_key(line), line) for line in events))
    write_json(output / f"_manifest-{stem}.json", manifest)
    purchases = manifest["counts"].get("customer_invoices", 0) + manifest["counts"].get("guest_invoices", 0)
    log.info("replayed %d source lines as %d events (%d purchases) and %d products; dirt: %s",
             manifest["counts"]["lines"], len(events), purchases, len(catalogue),
             json.dumps({k: v for k, v in manifest["counts"].items() if k not in ("lines", "invoices")}))
    return 0


def _event_key(line: str) -> str | None:
    """Partition by user so one person's events stay in order; broken lines get no key."""
    try:
        return json.loads(line).get("user_id")
    except (ValueError, AttributeError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
