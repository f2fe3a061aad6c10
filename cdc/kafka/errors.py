"""The one place where confluent-kafka's errors become ours, and get their fix.

Every Kafka call of ``cdc`` (producing, transactions, topics, reading the state topic)
maps its ``KafkaException``/``KafkaError`` here, so the daemon's decision (restart with
backoff, or stop and say what to change) is the same everywhere: a broker that is down or
slow heals by itself; authorization, an invalid setting, a replication factor the cluster
cannot meet, a record too large or another instance holding our transactional id do not.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from cdc.errors import FencedError, RecordTooLargeError, SinkError

__all__ = [
    "error_of",
    "is_abortable",
    "is_record_refused",
    "is_retriable",
    "is_too_large",
    "kafka_error",
]

# Another producer initialised our transactional id (or bumped its epoch).
_FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)
# Kafka refuses this one record for good: retrying it cannot help, the next may pass. At
# produce() time librdkafka raises only the size check (MSG_SIZE_TOO_LARGE, against the
# producer's message.max.bytes); the others come from the broker, at delivery time.
_RECORD_REFUSED = _TOO_LARGE | frozenset(
    {
        KafkaError.POLICY_VIOLATION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
    }
)
_AUTHENTICATION = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_AUTHORIZATION = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    }
)

# What a person must change, by error code; every other error is retried.
_FIX: dict[int, str] = {
    **dict.fromkeys(
        _AUTHENTICATION,
        "Kafka refused our credentials: check kafka.properties (security.protocol,"
        " sasl.mechanism, sasl.username, sasl.password, ssl.*) in the daemon config",
    ),
    **dict.fromkeys(
        _AUTHORIZATION,
        "the principal in kafka.properties lacks an ACL: grant it Describe, Create and"
        " Write on the connector's topics (and Read on its state topic)",
    ),
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: (
        "the principal lacks Write and Describe on the connector's TransactionalId (see"
        " docs/delivery.md): grant them, or set delivery: at_least_once for this connector"
    ),
    KafkaError.INVALID_REPLICATION_FACTOR: (
        "the cluster has fewer brokers than topics.replication_factor: lower it in the"
        " daemon config (or set -1 to use the broker's default.replication.factor)"
    ),
    KafkaError.INVALID_PARTITIONS: "set topics.partitions to a positive number the cluster allows",
    KafkaError.INVALID_CONFIG: (
        "the broker refused a topic setting: check retention_configs and compacted_configs"
    ),
    KafkaError.POLICY_VIOLATION: (
        "the cluster's topic creation policy refused the topic: create it by hand or"
        " change the topic settings in the daemon config"
    ),
    KafkaError.TOPIC_EXCEPTION: "Kafka refused the topic name: change the topic name templates",
    KafkaError.INVALID_TRANSACTION_TIMEOUT: (
        "transaction.timeout.ms is above the broker's transaction.max.timeout.ms: lower"
        " kafka.properties.transaction.timeout.ms in the daemon config"
    ),
    KafkaError.UNSUPPORTED_VERSION: (
        "the broker is too old for this request: exactly_once needs Kafka 0.11 or later"
        " (2.5 or later recommended); or set delivery: at_least_once"
    ),
    KafkaError._INVALID_ARG: "check kafka.properties in the daemon config",
    KafkaError._UNSUPPORTED_FEATURE: "the broker does not support this: check its version",
}


def error_of(exc: BaseException) -> Any:
    """The ``KafkaError`` inside a ``KafkaException`` (or the error itself), else None."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return exc if isinstance(exc, KafkaError) else None


def is_retriable(exc: BaseException) -> bool:
    """Whether librdkafka says the same call may simply be made again (a timeout)."""
    error = error_of(exc)
    return bool(error is not None and error.retriable())


def is_record_refused(exc: BaseException) -> bool:
    """Whether Kafka refused this one record for good (too large, a policy, invalid):
    what a dead-letter topic may take instead of stopping the connector."""
    error = error_of(exc)
    return bool(error is not None and error.code() in _RECORD_REFUSED and not error.fatal())


def is_too_large(exc: BaseException) -> bool:
    """Whether the record was refused for its size (so the same bytes cannot go
    anywhere else through this producer either)."""
    error = error_of(exc)
    return bool(error is not None and error.code() in _TOO_LARGE)


def is_abortable(exc: BaseException) -> bool:
    """Whether the open transaction must be aborted (and the stream rewound)."""
    error = error_of(exc)
    return bool(error is not None and error.txn_requires_abort())


def kafka_error(
    exc: BaseException | Any, action: str, *, topic: str | None = None, transactional_id: str = ""
) -> SinkError:
    """Our error for a Kafka failure while doing ``action`` (a sentence fragment such as
    "creating topic 'x'"): fenced, too large, one a person must fix, or retryable."""
    error = error_of(exc) if isinstance(exc, BaseException) else exc
    code = error.code() if error is not None else None
    text = str(error.str() if error is not None else exc)
    if code in _FENCED:
        return FencedError(
            f"{action}: another cdc instance initialised transactional id"
            f" {transactional_id!r} ({text}), so it runs this connector now; this instance"
            " stops it without confirming anything further. If no other instance should"
            " run it, look for a second daemon with the same connector file",
            topic=topic,
        )
    if code in _TOO_LARGE:
        return RecordTooLargeError(
            f"{action}: {text}. Raise kafka.properties.message.max.bytes in the daemon"
            " config and the topic's max.message.bytes (and the broker's message.max.bytes),"
            " then restart: nothing after the last confirmed LSN was lost",
            topic=topic,
        )
    fix = _FIX.get(code) if code is not None else None
    if fix is not None:
        return SinkError(f"{action}: {text}. Fix: {fix}", topic=topic, retryable=False)
    return SinkError(f"{action}: {text}", topic=topic)
