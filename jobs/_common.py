"""What every entry point shares: the --env/--set/--conf-dir options and one-line errors."""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipelines.config import ENVIRONMENTS, Config, load_config
from pipelines.errors import TailorError

log = logging.getLogger("tailor")


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--env", default="local",
                        help=f"configuration to load: {', '.join(ENVIRONMENTS)} (default: local)")
    parent.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set spark.shuffle_partitions=8 (repeatable)")
    parent.add_argument("--conf-dir", default=None, help="folder holding base.yaml and <env>.yaml")
    return parent


def utc_time(text: str) -> datetime:
    """An argparse type: an ISO-8601 date or time as a UTC moment (a time without a zone is
    read as UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parser_for(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, parents=[common_options()],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


# The config the running job loaded, for recording its outcome (entry_point).
_loaded: dict[str, Config] = {}


def config_from(args: argparse.Namespace) -> Config:
    config = load_config(args.env, args.overrides, args.conf_dir)
    _loaded["config"] = config
    return config


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    for noisy in ("py4j", "kafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def entry_point(main: Callable[[Sequence[str] | None], int | None] | None = None, *, record: bool = True):
    """Run a main(); a TailorError becomes `tailor: <message>` on stderr and exit code 2.
    A job that started Spark has its outcome appended to audit.job_runs, unless it is a
    read-only command (`@entry_point(record=False)`)."""

    def decorate(main: Callable[[Sequence[str] | None], int | None]):
        # The file's name: under `spark-submit jobs/<job>.py` the module is __main__.
        job = Path(inspect.getfile(main)).stem

        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            outer = _loaded.pop("config", None)  # `tailor run` calls other jobs' mains inside its own
            started = datetime.now(UTC)
            code, error = 1, None
            try:
                code = main(argv) or 0
                return code
            except TailorError as problem:
                print(f"tailor: {problem}", file=sys.stderr)
                code, error = 2, str(problem).splitlines()[0][:500]
                return code
            except KeyboardInterrupt:
                print("tailor: interrupted", file=sys.stderr)
                code, error = 130, "interrupted"
                return code
            except SystemExit as leaving:  # argparse's usage errors: no Spark has started
                # sys.exit(None) is success, sys.exit("text") exits 1, argparse exits 2.
                code = 0 if leaving.code is None else leaving.code if isinstance(leaving.code, int) else 1
                raise
            except BaseException as problem:
                # Only the class: an unexpected error's text may quote the data it failed on.
                code, error = 1, type(problem).__name__
                raise
            finally:
                # Without pyspark imported no session can exist (and `config show` runs
                # where pyspark is not installed).
                if record and "config" in _loaded and "pyspark" in sys.modules:
                    from pipelines.monitoring.outcomes import record_job_run

                    record_job_run(_loaded["config"], job, started, code, error)
                if outer is not None:
                    _loaded["config"] = outer

        return wrapper

    return decorate(main) if main is not None else decorate


def streaming_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every streaming job takes: --once and --trigger-interval."""
    parser = parser_for(prog, description)
    parser.add_argument("--once", action="store_true", help="availableNow: process the backlog, then stop")
    parser.add_argument("--trigger-interval", default=None)
    return parser
