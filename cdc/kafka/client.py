"""Edge: how cdc's Kafka clients are configured and heard, shared by the sink and the admin.

The producer properties correctness depends on (``PRODUCER_REQUIRED``, refused as user
overrides by the config), the tunable defaults, the connector's transactional id, the
``Protocol`` of the producer the sink uses (tests substitute a fake), and the one place
librdkafka's log lines and errors reach structlog. No produce path here: ``cdc.kafka.sink``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "MAX_RECORD_BYTES",
    "PRODUCER_DEFAULTS",
    "PRODUCER_REQUIRED",
    "ClientLog",
    "ProducerClient",
    "transactional_id_for",
]

# Legacy rows can be wide (TOASTed text, jsonb, bytea): Kafka's 1 MB defaults would stop
# a connector on the first big row. Both the producer's limit and the topics' we create
# are raised to this; users may change either through the config.
MAX_RECORD_BYTES = 16 * 1024 * 1024

# Properties correctness depends on; config refuses user overrides of these.
PRODUCER_REQUIRED: Mapping[str, Any] = {
    "enable.idempotence": True,  # no duplicate or reordered record on producer retries
    "acks": "all",  # an ack means every in-sync replica has the record
    "partitioner": "murmur2_random",  # Java-compatible key -> partition mapping
    "max.in.flight.requests.per.connection": 5,  # the idempotent producer's ordering limit
}

# Tunable defaults; users may override them through kafka.properties.
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "compression.type": "lz4",  # cheap on CPU, good on JSON
    "linger.ms": 5,  # batches fill in a few ms at load and add little latency when idle
    "batch.num.messages": 10000,
    "batch.size": 1_000_000,
    # librdkafka's own buffer: a second bound behind the pipeline's in-flight limit
    # (its default, 1 GiB, is more than a daemon beside a database should hold). It must
    # hold at least one record of the largest size we accept.
    "queue.buffering.max.kbytes": 262_144,
    "message.max.bytes": MAX_RECORD_BYTES,
    # librdkafka's default (60 s) is far below the broker's transaction.max.timeout.ms
    # (15 min); our transactions last a commit interval, so this only bounds a stall.
    "transaction.timeout.ms": 60_000,
}

# librdkafka repeats a broker-down line every few hundred ms; say each thing once a while.
CLIENT_LOG_REPEAT_S = 30.0


def transactional_id_for(connector: str) -> str:
    """The connector's ``transactional.id``: the same on every restart and host, so the
    producer of a new instance fences the old one (``init_transactions``)."""
    return f"cdc-{connector}"


class ProducerClient(Protocol):
    """What the sink uses of confluent-kafka's ``Producer`` (tests substitute a fake that
    controls acknowledgements, delivery errors, ``BufferError``, aborts and fencing)."""

    def produce(  # noqa: PLR0917 - confluent-kafka's signature
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def purge(
        self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
    ) -> None: ...

    def init_transactions(self, timeout: float = -1) -> None: ...

    def begin_transaction(self) -> None: ...

    def commit_transaction(self, timeout: float = -1) -> None: ...

    def abort_transaction(self, timeout: float = -1) -> None: ...

    def close(self) -> bool: ...

    def __len__(self) -> int: ...


class ClientLog:
    """Routes librdkafka's log lines and errors into structlog, without the repeats.

    confluent-kafka calls ``log(level, fmt, *args)`` (the ``logging.Logger`` shape) from
    ``poll()``; without a logger, librdkafka writes raw lines to stderr, which breaks
    JSON-lines logging and floods it while a broker is down.
    """

    def __init__(self, log: Any) -> None:
        self._log = log
        self._last: dict[str, float] = {}

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -CLIENT_LOG_REPEAT_S) < CLIENT_LOG_REPEAT_S:
            return False
        self._last[key] = now
        return True

    def log(self, level: int, fmt: str, *args: Any) -> None:
        message = fmt % args if args else fmt
        facility = str(args[0]) if args else ""
        if not self._due(f"log:{facility}"):
            return
        if level >= logging.ERROR:
            self._log.error("kafka_client_log", message=message)
        elif level >= logging.WARNING:
            self._log.warning("kafka_client_log", message=message)
        else:
            self._log.info("kafka_client_log", message=message)

    def error(self, error: Any) -> None:
        """The clients' ``error_cb``: transient trouble that librdkafka retries itself.
        (A fatal error never comes here: confluent-kafka raises it from ``poll()``.)"""
        if self._due(f"error:{error.code() if hasattr(error, 'code') else error}"):
            self._log.warning("kafka_client_error", error=str(error))
