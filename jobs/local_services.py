"""Start and stop the local Kafka broker that demos and tests use (no Docker).

    tailor kafka up|down|status [--env local] [--set services.kafka.port=9092 ...]

`up` formats KRaft storage once, starts a single-node broker from jars/kafka-broker on
services.kafka.host:port, waits until it answers, and creates the configured topics.
Logs: <storage.root>/<services.kafka.home>/logs/{server.log,broker.out}.
"""

from __future__ import annotations

import argparse

from jobs._common import config_from, entry_point, parser_for
from pipelines.services.kafka_broker import KafkaBroker


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor kafka", __doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    return parser


@entry_point
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from(args)
    broker = KafkaBroker.from_config(config)
    if args.action == "up":
        outcome = broker.start()
        broker.create_topics([config.source.kafka.events_topic, config.source.kafka.crm_topic])
        print(f"kafka {outcome} on {broker.bootstrap_servers}; logs in {broker.log_dir}")
    elif args.action == "down":
        print(f"kafka {broker.stop()}")
    else:
        running = broker.pid() is not None and broker.is_ready()
        print(f"kafka {'running' if running else 'not running'} on {broker.bootstrap_servers}")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
