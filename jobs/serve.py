"""`tailor serve`: the content API under gunicorn, settings from config.

    tailor serve [--env local] [--set api.bind=0.0.0.0:8080] [--set api.workers=4] [--workers N] [--threads N]

  --env, --set, --conf-dir   as every command; api.* configures the server (conf/base.yaml)
  --bind, --workers, --threads   override api.bind, api.workers, api.threads for this run

gunicorn forks api.workers processes, each with api.threads threads (the gthread worker);
each worker builds its own app (no preload), so no store connection crosses a fork. API
keys come from TAILOR_API_TOKENS, the link signing key from TAILOR_LINK_SIGNING_KEY, the
PII keys (audit lines name people by their keyed hash) from TAILOR_PII_HMAC_KEY and
TAILOR_PII_ENCRYPTION_KEY, as `secrets:` names them. No Spark: runs on a small web host.

Metrics: prometheus-client's multiprocess mode, so that `/metrics`, whichever worker
answers it, adds up every worker's counters. Each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR: the operator's directory when that variable is set (its *.db
files from an earlier run are removed at start; a server holds a lock on it for its life,
so a second server given the same directory is refused with one line instead of wiping
and mixing the first one's counts), else a new temporary directory, removed when the
server stops. The variable is set before any worker is forked and before
prometheus_client is imported, which reads it once, at import. A worker that exits is
marked dead (gunicorn's child_exit hook); the counts it made stay in the sum.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from jobs._common import config_from, entry_point, parser_for
from pipelines.config import Config
from pipelines.errors import ConfigError

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_LOCK = "tailor-serve.lock"
# Locks this process holds, by folder: held (and inherited by the workers) until it exits.
_held: dict[Path, int] = {}


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook (in the master): a worker's live gauges leave the sum."""
    if not os.environ.get(MULTIPROC_VARIABLE):
        return  # not in multiprocess mode: nothing was written (the hook must not fail the master)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def gunicorn_options(config: Config) -> dict[str, Any]:
    api = config.api
    return {"bind": api.bind, "workers": api.workers, "threads": api.threads,
            "worker_class": "gthread" if api.threads > 1 else "sync",
            "timeout": 30, "graceful_timeout": 10, "keepalive": 5,
            # The API logs each request itself as JSON, without paths (they hold user ids).
            "accesslog": None, "errorlog": "-", "loglevel": "warning", "preload_app": False,
            "child_exit": child_exit}


def prepare_metrics_dir(environ: MutableMapping[str, str] | None = None) -> tuple[Path, bool]:
    """Sets PROMETHEUS_MULTIPROC_DIR in `environ` (os.environ) to a directory without
    metric files: the one already named there, emptied of *.db files (the only files
    prometheus-client writes; nothing else in it is touched), or a new temporary one.
    Returns the directory and whether it was made here (and is to be removed at the end)."""
    environ = os.environ if environ is None else environ
    if "prometheus_client" in sys.modules and environ is os.environ:
        # prometheus-client chose its value class at import: too late for multiprocess mode.
        raise ConfigError(f"prometheus_client was imported before tailor serve set {MULTIPROC_VARIABLE}: "
                          "the workers' metrics could not be added up")
    given = environ.get(MULTIPROC_VARIABLE)
    if given:
        folder = Path(given)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _lock(folder)
            for stale in folder.glob("*.db"):
                stale.unlink()
        except OSError as error:
            raise ConfigError(f"{MULTIPROC_VARIABLE}={given}: cannot prepare it for the metrics files "
                              f"({error.strerror or type(error).__name__})") from None
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="tailor-metrics-"))
    environ[MULTIPROC_VARIABLE] = str(folder)
    return folder, True


def _lock(folder: Path) -> None:
    """Hold the folder's lock for this process's life; another server holding it is a bad
    setting. flock: the kernel frees it when the holder dies, so it is never stale."""
    key = folder.resolve()
    if key in _held:
        return
    descriptor = os.open(folder / METRICS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ConfigError(f"{MULTIPROC_VARIABLE}={folder}: another tailor serve uses it; give each server a "
                          "folder of its own (its /metrics adds up every file in it)") from None
    _held[key] = descriptor


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
    from pipelines.pii import load_hmac_key

    load_hmac_key(config)  # each worker loads them too; a missing key is one line here, not a boot loop
    options = gunicorn_options(config)

    class TailorApi(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from api import create_app

            return create_app({"TAILOR_CONFIG": config})

    metrics_dir, made_here = prepare_metrics_dir()
    master = os.getpid()
    print(f"tailor serve: {config.serving.type} store, http://{config.api.bind} "
          f"({config.api.workers} workers x {config.api.threads} threads), metrics files in {metrics_dir}",
          flush=True)
    try:
        TailorApi().run()
    finally:
        # gunicorn's workers leave through here too (SystemExit after a fork): only the master cleans up.
        if made_here and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
