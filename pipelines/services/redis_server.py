"""A local redis-server (the system's package, which `make setup` installs) on a free
loopback port, without persistence: for the tests and the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from pipelines.errors import EnvironmentProblem
from pipelines.services.kafka_broker import free_port


class RedisServer:
    def __init__(self, home: Path, start_timeout_s: float = 20.0):
        self.home = home
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.home / "redis.log"

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING; a server that does not raises
        EnvironmentProblem with the end of its log."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise EnvironmentProblem("redis-server not found: run `make setup` (it installs the system's "
                                     "redis-server package)")
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", str(self.home)], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        output = self.log_file.read_text(errors="replace")[-2000:]
                        raise EnvironmentProblem(f"redis-server did not answer PING on port {self.port}:\n"
                                                 f"{output}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
