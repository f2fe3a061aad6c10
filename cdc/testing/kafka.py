"""Start and stop a real, throwaway single-node Apache Kafka broker as a local child process.

``ensure_kafka_jars`` fetches Kafka 3.9.1 from Maven Central once (``scripts/kafka/pom.xml``)
into a git-ignored cache; ``start_kafka`` formats a KRaft log folder and runs one JVM that is
both broker and controller on 127.0.0.1, for tests, the demo and the benchmark.

It must not mock the broker, and the daemon must never import it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc.testing import ManagedProcess, ServiceError, free_port, log_tail

__all__ = [
    "KAFKA_VERSION",
    "KafkaServer",
    "SaslSslListener",
    "ensure_kafka_jars",
    "read_committed",
    "start_kafka",
]

T = TypeVar("T")

KAFKA_VERSION = "3.9.1"  # must match scripts/kafka/pom.xml
# The repository: the parent of the ``cdc`` package (an editable install).
REPO_DIR = Path(__file__).resolve().parents[2]
POM = REPO_DIR / "scripts" / "kafka" / "pom.xml"
# The jar that shows a cache folder is complete (folders appear by atomic rename only).
MARKER_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"

# Seconds until the broker must answer a metadata request: a cold JVM on a busy 2-core
# machine takes 5 to 15 s.
START_TIMEOUT = 60.0
# Seconds a controlled shutdown (SIGTERM) may take before SIGKILL.
STOP_TIMEOUT = 30.0
# Fixed heap: enough for the tests and the benchmark, and bounded on a shared machine.
JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
# The storage formatter is a short-lived JVM: a small heap and the quick JIT tier start it
# faster.
TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")


@dataclass(frozen=True, slots=True)
class SaslSslListener:
    """An extra SASL_SSL listener (SASL/PLAIN over TLS) beside the PLAINTEXT one, for
    tests of clients configured as against a secured cluster. The broker's own traffic
    (inter-broker, controller) stays on PLAINTEXT."""

    keystore: Path  # PKCS#12: the broker's key and certificate (cdc.testing.tls)
    keystore_password: str
    users: Mapping[str, str]  # SASL/PLAIN user name -> password
    # Kafka's StandardAuthorizer on: the SASL users may do only what ACLs allow; the
    # PLAINTEXT listener's clients (the broker itself, the test's admin) are User:ANONYMOUS,
    # a super user.
    authorizer: bool = False


@dataclass(slots=True)
class KafkaServer(ManagedProcess):
    """A running throwaway Kafka broker. Mutable: ``restart()`` swaps the process.

    ``stop()`` is a controlled shutdown (SIGTERM); ``kill()`` SIGKILLs the broker, for
    tests of a producer facing a broker that vanished.
    """

    _stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    _stop_timeout: ClassVar[float] = STOP_TIMEOUT

    host: str
    port: int
    controller_port: int
    base_dir: Path
    log_path: Path
    jars_dir: Path
    # The SASL_SSL listener's port, when start_kafka was given one.
    sasl_ssl_port: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for the ``bootstrap.servers`` client property."""
        return f"{self.host}:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """``host:port`` of the SASL_SSL listener (its certificate must hold the address)."""
        if self.sasl_ssl_port is None:
            raise ServiceError("this broker was started without a SASL_SSL listener")
        return f"{self.host}:{self.sasl_ssl_port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            *_java(self, JVM_OPTIONS, "kafka.Kafka"),
            str(self.base_dir / "server.properties"),
        ]
        with (self.base_dir / "kafka.out").open("ab") as out:
            # Our own session, so stop()/kill() signal the JVM and anything it forked.
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        """Return once the broker lists itself in metadata; raise with its log tail otherwise.

        The TCP port is polled first: a librdkafka client pointed at a closed port prints
        connection errors to stderr on every retry.
        """
        deadline = time.monotonic() + START_TIMEOUT
        last_error: str = "port not open"
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ServiceError(
                    f"kafka exited with code {code} while starting on port {self.port}; "
                    f"{log_tail(self.log_path)}\n{log_tail(self.base_dir / 'kafka.out')}"
                )
            if _port_open(self.host, self.port):
                # log_level 0: a broker still starting answers "unsupported feature"; we
                # report the last error ourselves instead of librdkafka printing each retry.
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
                try:
                    metadata = admin.list_topics(timeout=5)
                except KafkaException as exc:
                    last_error = str(exc)
                else:
                    if metadata.brokers:
                        return
                    last_error = "no broker in metadata yet"
            time.sleep(0.2)
        self.stop()
        raise ServiceError(
            f"kafka did not answer on {self.bootstrap_servers} within {START_TIMEOUT:.0f}s "
            f"(last error: {last_error}); {log_tail(self.log_path)}"
        )


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """Return the folder of Kafka's jars, fetching them with Maven the first time.

    Args:
        cache_dir: the cache root; default ``$CDC_CACHE_DIR``, else ``<repo>/.cache``
            (git-ignored). The jars go to ``<cache_dir>/kafka/<version>/``.

    Returns:
        The folder to put on the JVM class path as ``<folder>/*``.

    Raises:
        ServiceError: Maven is missing or could not fetch the jars.
    """
    if cache_dir is None:
        env = os.environ.get("CDC_CACHE_DIR")
        cache_dir = Path(env) if env else REPO_DIR / ".cache"
    jars_dir = cache_dir.resolve() / "kafka" / KAFKA_VERSION
    if (jars_dir / MARKER_JAR).exists():
        return jars_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven (mvn) is needed once to fetch the Kafka jars: run scripts/bootstrap, "
            "or apt-get install maven"
        )
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    # Fetch beside the final folder (same file system) and rename: a half-fetched folder is
    # never seen, and two runs racing each other both end with a complete one.
    with tempfile.TemporaryDirectory(dir=jars_dir.parent, prefix=".fetch-") as tmp:
        staging = Path(tmp) / "jars"
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",  # batch mode: no prompts, no progress bars (CI has no stdin)
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0 or not (staging / MARKER_JAR).exists():
            output = (result.stdout + result.stderr).decode(errors="replace")[-4000:]
            raise ServiceError(
                f"mvn could not fetch the Kafka {KAFKA_VERSION} jars "
                f"(exit code {result.returncode}):\n{output}"
            )
        try:
            staging.rename(jars_dir)
        except OSError:
            # Another run won the race; its folder is complete, ours is thrown away.
            if not (jars_dir / MARKER_JAR).exists():
                raise
    return jars_dir


def start_kafka(
    base_dir: Path, *, port: int | None = None, sasl_ssl: SaslSslListener | None = None
) -> KafkaServer:
    """Format (if needed) and start a single-node KRaft Kafka broker under ``base_dir``.

    ``base_dir`` receives ``server.properties``, ``log4j.properties``, the topic data in
    ``data/``, the broker log ``kafka.log`` and the JVM's own output ``kafka.out``. A folder
    formatted before is reused as it is, ports included.

    Args:
        base_dir: a folder of our own; created if missing.
        port: the client (PLAINTEXT) port on 127.0.0.1; a free one when None.
        sasl_ssl: also listen for SASL_SSL clients (on a free port) with this keystore
            and these users; None (the default): PLAINTEXT only.

    Returns:
        The running broker; it answers metadata requests.

    Raises:
        ServiceError: no java, the jars cannot be fetched, or the broker did not start.
    """
    if shutil.which("java") is None:
        raise ServiceError(
            "java not found on PATH: run scripts/bootstrap, or apt-get install default-jdk-headless"
        )
    jars_dir = ensure_kafka_jars()
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    properties = base_dir / "server.properties"
    sasl_ssl_port: int | None = None
    if properties.exists():
        old = _read_properties(properties)
        advertised = {
            entry.split("://", 1)[0]: int(entry.rsplit(":", 1)[1])
            for entry in old["advertised.listeners"].split(",")
        }
        port = advertised["PLAINTEXT"]
        sasl_ssl_port = advertised.get("SASL_SSL")
        controller_port = int(old["controller.quorum.voters"].rsplit(":", 1)[1])
    else:
        port = port if port is not None else free_port()
        taken = {port}
        controller_port = free_port()
        while controller_port in taken:
            controller_port = free_port()
        taken.add(controller_port)
        if sasl_ssl is not None:
            sasl_ssl_port = free_port()
            while sasl_ssl_port in taken:
                sasl_ssl_port = free_port()
    server = KafkaServer(
        host="127.0.0.1",
        port=port,
        controller_port=controller_port,
        base_dir=base_dir,
        log_path=base_dir / "kafka.log",
        jars_dir=jars_dir,
        sasl_ssl_port=sasl_ssl_port,
    )
    if not properties.exists():
        _write_config(server, sasl_ssl)
    if not (base_dir / "data" / "meta.properties").exists():
        _format_storage(server)
    server._start()
    return server


def _read_properties(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _write_properties(path: Path, properties: dict[str, str]) -> None:
    text = "".join(f"{key}={value}\n" for key, value in properties.items())
    path.write_text(text, encoding="utf-8")


def _write_config(server: KafkaServer, sasl_ssl: SaslSslListener | None = None) -> None:
    host, port, cport = server.host, server.port, server.controller_port
    properties = {
        # KRaft combined mode: one JVM is the whole cluster, no ZooKeeper.
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(server.base_dir / "data"),
        # One broker: internal topics cannot have more replicas than that.
        "offsets.topic.replication.factor": "1",
        # The first consumer group creates __consumer_offsets: one partition instead of 50
        # makes that a few milliseconds instead of seconds.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # Consumers in tests join at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # After kill(), the restarted broker is refused (DUPLICATE_BROKER_REGISTRATION) until
        # the dead incarnation's session expires: 9 s by default, 4 s here. Heartbeats stay
        # four to a session so a GC pause on a busy machine does not fence the broker.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        # cdc creates its topics with the right cleanup policy; an auto-created topic
        # would hide a missing create in the code under test.
        "auto.create.topics.enable": "false",
    }
    if sasl_ssl is not None:
        properties.update(_sasl_ssl_properties(server, sasl_ssl))
    _write_properties(server.base_dir / "server.properties", properties)
    log4j = {
        "log4j.rootLogger": "INFO, file",
        "log4j.appender.file": "org.apache.log4j.FileAppender",
        "log4j.appender.file.File": str(server.log_path),
        "log4j.appender.file.Append": "true",
        "log4j.appender.file.layout": "org.apache.log4j.PatternLayout",
        "log4j.appender.file.layout.ConversionPattern": "[%d] %p %m (%c)%n",
        # The request and controller loggers repeat every metadata change at INFO.
        "log4j.logger.kafka.request.logger": "WARN",
        "log4j.logger.kafka.controller": "WARN",
        "log4j.logger.state.change.logger": "WARN",
        "log4j.logger.org.apache.kafka.controller": "WARN",
        "log4j.logger.kafka.log.LogCleaner": "WARN",
    }
    _write_properties(server.base_dir / "log4j.properties", log4j)


def _sasl_ssl_properties(server: KafkaServer, listener: SaslSslListener) -> dict[str, str]:
    """The broker settings of the SASL_SSL listener (Kafka docs: Security, SASL/PLAIN)."""
    host, port, cport, sport = (
        server.host,
        server.port,
        server.controller_port,
        server.sasl_ssl_port,
    )
    users = " ".join(f'user_{name}="{password}"' for name, password in listener.users.items())
    prefix = "listener.name.sasl_ssl."
    return {
        "listeners": f"PLAINTEXT://{host}:{port},SASL_SSL://{host}:{sport},CONTROLLER://{host}:{cport}",
        # Clients verify this address against the certificate (cdc.testing.tls: 127.0.0.1).
        "advertised.listeners": f"PLAINTEXT://{host}:{port},SASL_SSL://{host}:{sport}",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": "PLAIN",
        f"{prefix}plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        ),
        f"{prefix}ssl.keystore.type": "PKCS12",
        f"{prefix}ssl.keystore.location": str(listener.keystore),
        f"{prefix}ssl.keystore.password": listener.keystore_password,
        f"{prefix}ssl.key.password": listener.keystore_password,
        **(
            {
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": "User:ANONYMOUS",
            }
            if listener.authorizer
            else {}
        ),
    }


def _cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid()`` makes it, without starting a JVM.

    16 random bytes in unpadded base64url; Kafka never hands out one that starts with '-'
    (it would read as a command-line option), so neither do we.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _java(server: KafkaServer, jvm_options: tuple[str, ...], main: str) -> list[str]:
    log4j = server.base_dir / "log4j.properties"
    return [
        "java",
        *jvm_options,
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{server.jars_dir}/*",  # expanded by java itself: no shell involved
        main,
    ]


def _format_storage(server: KafkaServer) -> None:
    properties = server.base_dir / "server.properties"
    command = [
        *_java(server, TOOL_JVM_OPTIONS, "kafka.tools.StorageTool"),
        "format",
        "-t",
        _cluster_id(),
        "-c",
        str(properties),
    ]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, check=False, cwd=server.base_dir
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")[-4000:]
        raise ServiceError(
            f"kafka StorageTool format failed (exit code {result.returncode}):\n{output}"
        )


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def read_committed(
    bootstrap_servers: str,
    topic: str,
    decode: Callable[[int, int, bytes | None, bytes | None], T],
    *,
    idle_timeout: float = 60.0,
) -> list[T]:
    """Every record of ``topic`` a ``read_committed`` consumer sees now, each partition
    read from offset 0 to its end, so that duplicates anywhere count; ``decode(partition,
    offset, key, value)`` keeps what is needed of each record (``value`` None: a tombstone).

    Raises:
        ServiceError: the topic does not exist, the consumer failed, or no record came
            for ``idle_timeout`` seconds before the end.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"read-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ServiceError(f"topic {topic}: {None if metadata is None else metadata.error}")
        partitions = list(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        records: list[T] = []
        deadline = time.monotonic() + idle_timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise ServiceError(f"topic {topic}: no progress for {idle_timeout:.0f}s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                deadline = time.monotonic() + idle_timeout
                error = msg.error()
                partition = msg.partition()
                assert partition is not None
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(partition)
                        continue
                    raise ServiceError(f"topic {topic}: consumer error: {error}")
                at_end.discard(partition)
                offset = msg.offset()
                assert offset is not None
                records.append(decode(partition, offset, msg.key(), msg.value()))
        return records
    finally:
        consumer.close()
