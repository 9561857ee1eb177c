"""A single-node Kafka broker in KRaft mode, run from the Maven jars in `jars/kafka-broker`.

    broker = KafkaBroker(home=Path("var/services/kafka"), port=9092, controller_port=9093)
    broker.start()      # formats storage once, starts, waits until it answers metadata
    broker.stop()       # SIGTERM, a clean controlled shutdown; SIGKILL only after a timeout

Everything it writes stays under `home`: `data/` (the log dirs), `logs/server.log`,
`logs/broker.out` (stdout and stderr), `server.properties`, `broker.pid`.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import Config, bundled_conf_dir, project_root
from pipelines.errors import EnvironmentProblem, TailorError
from pipelines.runtime.preflight import require_java

LOG4J_CONFIG = bundled_conf_dir() / "jvm" / "kafka-broker" / "log4j2.properties"


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id (22 URL-safe base64 characters). Never one starting with "-":
    the storage tool's argument parser reads "-t -xyz" as a missing value (1 id in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class KafkaBroker:
    home: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    jars_dir: Path = field(default_factory=lambda: project_root() / "jars" / "kafka-broker")
    default_partitions: int = 2
    start_timeout_s: float = 60.0
    heap: str = "512m"

    @classmethod
    def from_config(cls, config: Config) -> KafkaBroker:
        settings = config.services.kafka
        return cls(
            home=Path(config.under_root(settings.home)),
            port=settings.port,
            controller_port=settings.controller_port,
            host=settings.host,
            jars_dir=Path(config.resolve(settings.jars_dir)),
            default_partitions=settings.default_partitions,
            start_timeout_s=settings.start_timeout_s,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    def _classpath(self) -> str:
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise EnvironmentProblem(
                f"the Kafka broker jars are missing from {self.jars_dir}: run `make jars`"
            )
        return str(self.jars_dir / "*")

    def _java(self, *args: str, log_to=None, detach: bool = False) -> subprocess.Popen:
        command = [
            require_java(), f"-Xmx{self.heap}", "-Xms128m",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", self._classpath(), *args,
        ]
        return subprocess.Popen(
            command, stdout=log_to or subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=detach, text=True,
        )

    def _write_properties(self) -> Path:
        properties = self.home / "server.properties"
        properties.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self.home / 'data'}",
                f"num.partitions={self.default_partitions}",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "",
            ]),
            encoding="utf-8",
        )
        return properties

    def _format_storage(self, properties: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        process = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                             "-c", str(properties), "--ignore-formatted")
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            raise TailorError(f"formatting Kafka storage in {self.home / 'data'} failed: "
                              f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_ready(self) -> bool:
        if not port_is_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                     request_timeout_ms=3000)
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def start(self) -> str:
        """Start unless already running; returns 'started' or 'already running'."""
        if self.pid() is not None and self.is_ready():
            return "already running"
        for port in (self.port, self.controller_port):
            if port_is_open(self.host, port):
                raise TailorError(f"port {self.host}:{port} is taken by another process; "
                                  "stop it or set services.kafka.port / controller_port")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        self._format_storage(properties)
        out = open(self.log_dir / "broker.out", "a", encoding="utf-8")
        process = self._java("kafka.Kafka", str(properties), log_to=out, detach=True)
        out.close()
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TailorError(f"the Kafka broker exited with code {process.returncode}; "
                                  f"see {self.log_dir / 'broker.out'} and {self.log_dir / 'server.log'}")
            if self.is_ready():
                return "started"
            time.sleep(0.5)
        self.stop()
        raise TailorError(f"the Kafka broker did not answer within {self.start_timeout_s:.0f}s; "
                          f"see {self.log_dir / 'server.log'}")

    def stop(self, timeout_s: float = 30.0) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
                if finished == pid:
                    break
            except ChildProcessError:
                if self.pid() is None:
                    break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return "stopped"

    def create_topics(self, names: list[str], partitions: int | None = None) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            existing = set(admin.list_topics())
            wanted = [NewTopic(name, partitions or self.default_partitions, 1)
                      for name in names if name not in existing]
            if wanted:
                try:
                    admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
