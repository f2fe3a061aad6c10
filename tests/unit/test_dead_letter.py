"""The dead-letter topic: a record Kafka refuses for good at produce time goes there,
with headers saying what and why, in the same unit as the records around it; without
it, the connector stops as before."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError
from structlog.testing import capture_logs

from cdc import metrics
from cdc.config import ConnectorConfig, DeadLetterConfig
from cdc.envelope import Record
from cdc.errors import RecordTooLargeError, SinkError
from cdc.kafka.sink import DeliveryMode, KafkaSink
from cdc.positions import COMPLETE, Position

from .fakes import FakeProducer, Produced
from .test_sink import make

DLQ = "c.__cdc_dead_letter"
LSN_HEADERS = (("cdc.lsn", b"200"), ("cdc.seq", b"1"))


def with_dead_letter(producer: FakeProducer, mode: DeliveryMode) -> KafkaSink:
    sink = make(producer, mode)
    sink._dead_letter_topic = DLQ
    return sink


def unit(*values: bytes) -> list[Record]:
    return [
        Record("t", f'{{"id":{i}}}'.encode(), value, LSN_HEADERS) for i, value in enumerate(values)
    ]


def publish_transaction(sink: KafkaSink, records: list[Record]) -> None:
    sink.publish(records, Position(200, 1))
    sink.end_group(end_lsn=250, commit_ts_us=1, reached=Position(200, COMPLETE))


def headers(record: Produced) -> dict[str, bytes]:
    return dict(record.headers)


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_a_record_too_large_goes_to_the_dead_letter_topic_described(mode: DeliveryMode) -> None:
    producer = FakeProducer(max_value_bytes=400)
    sink = with_dead_letter(producer, mode)
    before = metrics.DEAD_LETTER_RECORDS.labels(connector="c", reason="too_large")._value.get()
    with capture_logs() as logs:
        publish_transaction(sink, unit(b"small", b"x" * 1000, b"after"))
    sink.service(idle_boundary=True)
    sink.service(idle_boundary=True)

    assert [r.value for r in producer.visible_on("t")] == [b"small", b"after"]
    [dead] = producer.visible_on(DLQ)
    assert dead.key == b'{"id":1}'
    assert headers(dead) == {
        "cdc.lsn": b"200",
        "cdc.seq": b"1",
        "cdc.dead_letter.topic": b"t",
        "cdc.dead_letter.reason": b"too_large",
        "cdc.dead_letter.error_code": b"MSG_SIZE_TOO_LARGE",
        "cdc.dead_letter.error": b"Broker: Message size too large",
        "cdc.dead_letter.value_bytes": b"1000",
        "cdc.dead_letter.key": b'{"id":1}',
        "cdc.dead_letter.value": b"description",
    }
    assert dead.value is not None
    assert orjson.loads(dead.value) == {
        "dead_letter": "too_large",
        "topic": "t",
        "key": '{"id":1}',
        "key_bytes": 8,
        "value_bytes": 1000,
        "tombstone": False,
        "lsn": "0/C8",
        "error": {"code": "MSG_SIZE_TOO_LARGE", "message": "Broker: Message size too large"},
    }
    assert sink.confirmed == 250  # the stream goes on past it
    after = metrics.DEAD_LETTER_RECORDS.labels(connector="c", reason="too_large")._value.get()
    assert after - before == 1
    [warned] = [e for e in logs if e["event"] == "record_dead_lettered"]
    assert (warned["log_level"], warned["topic"], warned["dead_letter_topic"]) == (
        "warning",
        "t",
        DLQ,
    )


def test_exactly_once_the_dead_letter_record_is_in_the_same_kafka_transaction() -> None:
    producer = FakeProducer(max_value_bytes=400)
    sink = with_dead_letter(producer, "exactly_once")
    publish_transaction(sink, unit(b"small", b"x" * 1000))
    transactions = {r.transaction for r in producer.produced if r.topic in ("t", DLQ)}
    assert transactions == {1}
    assert producer.visible_on(DLQ) == []  # not before the commit
    sink.service(idle_boundary=True)
    assert len(producer.visible_on(DLQ)) == 1


def test_exactly_once_an_aborted_transaction_takes_its_dead_letter_record_with_it() -> None:
    producer = FakeProducer(max_value_bytes=400)
    sink = with_dead_letter(producer, "exactly_once")
    publish_transaction(sink, unit(b"x" * 1000))
    from .fakes import abortable

    producer.commit_error = abortable()
    with pytest.raises(SinkError):
        sink.commit()
    assert producer.visible_on(DLQ) == []
    assert sink.confirmed == 100


def test_at_least_once_confirms_only_once_the_dead_letter_record_is_acknowledged() -> None:
    producer = FakeProducer(max_value_bytes=400, auto_ack=False)
    sink = with_dead_letter(producer, "at_least_once")
    publish_transaction(sink, unit(b"x" * 1000))
    assert sink.confirmed == 100
    producer.ack()
    assert sink.confirmed == 250


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_a_policy_refusal_sends_the_original_value(mode: DeliveryMode) -> None:
    """A refusal that is not about size: the original bytes go to the dead-letter topic."""
    refusal = KafkaError(KafkaError.POLICY_VIOLATION, "Broker: Policy violation")
    producer = FakeProducer(refused_topics={"t": refusal})
    sink = with_dead_letter(producer, mode)
    publish_transaction(sink, unit(b"the row"))
    sink.service(idle_boundary=True)
    [dead] = producer.visible_on(DLQ)
    assert dead.value == b"the row"
    assert headers(dead)["cdc.dead_letter.reason"] == b"refused"
    assert headers(dead)["cdc.dead_letter.value"] == b"original"
    assert headers(dead)["cdc.dead_letter.error_code"] == b"POLICY_VIOLATION"


def test_an_original_the_dead_letter_topic_refuses_too_goes_described() -> None:
    refusal = KafkaError(KafkaError.POLICY_VIOLATION, "Broker: Policy violation")
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    producer = FakeProducer(refused_topics={"t": refusal})
    sink = with_dead_letter(producer, "exactly_once")
    produce = producer.produce

    def dead_letter_refuses_originals(topic: str, value: Any = None, *a: Any, **kw: Any) -> None:
        if topic == DLQ and value == b"the row":
            from confluent_kafka import KafkaException

            raise KafkaException(too_large)
        produce(topic, value, *a, **kw)

    producer.produce = dead_letter_refuses_originals  # type: ignore[method-assign]
    publish_transaction(sink, unit(b"the row"))
    sink.service(idle_boundary=True)
    [dead] = producer.visible_on(DLQ)
    assert dead.value is not None
    assert orjson.loads(dead.value)["dead_letter"] == "refused"
    assert headers(dead)["cdc.dead_letter.value"] == b"description"


def test_a_dead_letter_record_that_cannot_go_either_stops_with_the_original_error() -> None:
    producer = FakeProducer(
        max_value_bytes=400,
        refused_topics={DLQ: KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")},
    )
    sink = with_dead_letter(producer, "at_least_once")
    with pytest.raises(SinkError) as raised:
        sink.publish(unit(b"x" * 1000), Position(200, 1))
    assert not raised.value.retryable


def test_without_a_dead_letter_topic_a_record_too_large_still_stops() -> None:
    producer = FakeProducer(max_value_bytes=400)
    sink = make(producer, "exactly_once")
    with pytest.raises(RecordTooLargeError, match=r"message\.max\.bytes"):
        sink.publish(unit(b"x" * 1000), Position(200, 1))
    assert producer.produced == []


def test_errors_that_are_not_the_records_fault_still_stop() -> None:
    producer = FakeProducer(
        refused_topics={"t": KafkaError(KafkaError._UNKNOWN_TOPIC, "Local: Unknown topic")}
    )
    sink = with_dead_letter(producer, "at_least_once")
    with pytest.raises(SinkError, match="Unknown topic"):
        sink.publish(unit(b"v"), Position(200, 1))
    assert producer.produced == []


# --- the setting ----------------------------------------------------------------------------


def test_off_by_default_with_a_topic_named_after_the_connector() -> None:
    config = ConnectorConfig.model_validate({"name": "shop-eu", "postgres": {"dsn": "host=x"}})
    assert not config.dead_letter.enabled
    assert config.dead_letter.topic_name("shop-eu") == "shop-eu.__cdc_dead_letter"


@pytest.mark.parametrize("bad", ["{table}.dead", "dead letters", "", "{connector"])
def test_a_dead_letter_topic_that_cannot_be_one_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        DeadLetterConfig(topic=bad)
