"""`tailor serve`: the content API under gunicorn, settings from config.

    tailor serve [--env local] [--set api.bind=0.0.0.0:8080] [--set api.workers=4] [--workers N] [--threads N]

  --env, --set, --conf-dir   as every command; api.* configures the server (conf/base.yaml)
  --bind, --workers, --threads   override api.bind, api.workers, api.threads for this run

gunicorn forks api.workers processes, each with api.threads threads (the gthread worker);
each worker builds its own app (no preload), so no store connection crosses a fork. API
keys come from TAILOR_API_TOKENS, the link signing key from TAILOR_LINK_SIGNING_KEY, as
`secrets:` names them. No Spark: runs on a small web host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs._common import config_from, entry_point, parser_for
from pipelines.config import Config


def gunicorn_options(config: Config) -> dict[str, Any]:
    api = config.api
    return {"bind": api.bind, "workers": api.workers, "threads": api.threads,
            "worker_class": "gthread" if api.threads > 1 else "sync",
            "timeout": 30, "graceful_timeout": 10, "keepalive": 5,
            # The API logs each request itself as JSON, without paths (they hold user ids).
            "accesslog": None, "errorlog": "-", "loglevel": "warning", "preload_app": False}


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    from gunicorn.app.base import BaseApplication

    parser = parser_for("tailor serve", "run the content API under gunicorn")
    parser.add_argument("--bind", default=None, help="host:port (default: api.bind)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: api.workers)")
    parser.add_argument("--threads", type=int, default=None, help="threads per process (default: api.threads)")
    args = parser.parse_args(argv)
    extra = [f"api.{name}={value}" for name in ("bind", "workers", "threads")
             if (value := getattr(args, name)) is not None]
    args.overrides = [*args.overrides, *extra]
    config = config_from(args)
    options = gunicorn_options(config)

    class TailorApi(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from api import create_app

            return create_app({"TAILOR_CONFIG": config})

    print(f"tailor serve: {config.serving.type} store, http://{config.api.bind} "
          f"({config.api.workers} workers x {config.api.threads} threads)", flush=True)
    TailorApi().run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
