"""Daily table maintenance: compact, cluster, bound history, purge and VACUUM every table.

    tailor maintain [--env local] [--set k=v ...] [--retention-hours N] [--skip-vacuum]
                    [--remove-orphaned-checkpoints]
    spark-submit jobs/maintain.py [same options]

First, as `tailor vacuum` does, quarantined records naming an erased person are deleted,
and the API's audit lines (<storage.root>/audit/api/) are loaded into audit.log, each once.
Streaming jobs commit every trigger, so their tables collect small files; OPTIMIZE
compacts them (and clusters the tables CLUSTERED_BY names), then REORG PURGE and VACUUM
make erasures final. Safe while the streaming jobs run: these commits change no rows but
erased people's, and a commit race is retried; a table that still fails is reported and
the others are maintained (exit 1). Checkpoint folders no query uses, idle for a day, are
listed, and deleted with --remove-orphaned-checkpoints.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.pii import load_hmac_key
from pipelines.profiles.writes import load_api_audit, sweep_quarantine_of_erased
from pipelines.runtime.delta_tables import retry_on_conflict
from pipelines.runtime.maintenance import (
    maintain_all,
    orphaned_checkpoints,
    remove_checkpoints,
    vacuum_retention,
)
from pipelines.runtime.session import build_spark


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor maintain", __doc__.split("\n\n")[0])
    parser.add_argument("--retention-hours", type=float, default=None,
                        help="override maintenance.vacuum_retention_hours for this run")
    parser.add_argument("--skip-vacuum", action="store_true", help="compact and cluster only")
    parser.add_argument("--remove-orphaned-checkpoints", action="store_true",
                        help="delete checkpoint folders no streaming query uses any more")
    return parser


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)
    hmac_key = None
    if not args.skip_vacuum:
        vacuum_retention(config, args.retention_hours)  # a bad retention fails before Spark starts
        hmac_key = load_hmac_key(config)  # so does a missing key (the HMAC key only: it decrypts nothing)
    spark = build_spark(config, "maintain")
    if hmac_key is not None:
        # Its delete can meet merge-profiles' own purge of the same records: retried, like the rest.
        swept = retry_on_conflict(lambda: sweep_quarantine_of_erased(spark, config, hmac_key),
                                  "the quarantine's sweep", config.maintenance.conflict_retries)
        if swept:
            print(f"deleted {swept} quarantined record(s) naming erased people")
    audit_failed = False
    try:
        audit = retry_on_conflict(lambda: load_api_audit(spark, config), "the API audit's load",
                                  config.maintenance.conflict_retries)
        print(f"audit.log: {audit.loaded} API audit line(s) loaded, {audit.removed} file(s) of past days removed")
        for name, count in sorted(audit.unreadable.items()):
            print(f"  {count} API audit line(s) unreadable, kept in {name}")
        for name in audit.not_the_apis:
            print(f"  not an API audit file, not read, kept: {name}")
    except Exception as error:  # noqa: BLE001 - the tables are still maintained (erasures made final); exit 1
        audit_failed = True
        # The class only, as for the tables below: an error's text may quote the lines.
        print(f"audit.log: the API's audit lines were not loaded: {type(error).__name__}")
    done, failed = maintain_all(spark, config, vacuum=not args.skip_vacuum, retention_hours=args.retention_hours)
    width = max((len(upkeep.table) for upkeep in done), default=0)
    for upkeep in done:
        clustering = ", ".join(upkeep.clustered_by) or "-"
        note = " (clustering added)" if upkeep.clustering_added else ""
        print(f"{upkeep.table.ljust(width)}  files {upkeep.files_before:>5} -> {upkeep.files_after:<5}  "
              f"clustered by {clustering}{note}  {'vacuumed' if upkeep.vacuumed else 'not vacuumed'}  "
              f"{upkeep.seconds:.1f}s")
    orphans = orphaned_checkpoints(config)
    if orphans and args.remove_orphaned_checkpoints:
        remove_checkpoints(orphans)
        print(f"removed {len(orphans)} orphaned checkpoint(s): {', '.join(orphans)}")
    elif orphans:
        print(f"{len(orphans)} orphaned checkpoint(s), no query uses them (--remove-orphaned-checkpoints "
              f"deletes them): {', '.join(orphans)}")
    for table, reason in failed.items():
        print(f"{table}  FAILED: {reason}")
    print(f"maintained {len(done)} table(s)" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed or audit_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
