"""What every entry point shares: the --env/--set/--conf-dir options and one-line errors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence

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


def parser_for(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, parents=[common_options()],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def config_from(args: argparse.Namespace) -> Config:
    return load_config(args.env, args.overrides, args.conf_dir)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    for noisy in ("py4j", "kafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def entry_point(main: Callable[[Sequence[str] | None], int | None]):
    """Run a main(); a TailorError becomes `tailor: <message>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except TailorError as error:
            print(f"tailor: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("tailor: interrupted", file=sys.stderr)
            return 130

    return wrapper


def streaming_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every streaming job takes: --once and --trigger-interval."""
    parser = parser_for(prog, description)
    parser.add_argument("--once", action="store_true", help="availableNow: process the backlog, then stop")
    parser.add_argument("--trigger-interval", default=None)
    return parser
