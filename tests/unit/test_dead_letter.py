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
from cdc.dead_letters import RefusedRecords
from cdc.envelope import Record
from cdc.errors import RecordTooLargeError, SinkError
from cdc.kafka.sink import DeliveryMode, KafkaSink
from cdc.positions import COMPLETE, Position

from .fakes import FakeProducer, Produced
from .test_sink import make

DLQ = "c.__cdc_dead_letter"
LSN_HEADERS = (("cdc.lsn", b"200"), ("cdc.seq", b"1"))


def with_dead_letter(
    producer: FakeProducer, mode: DeliveryMode, refusals: RefusedRecords | None = None
) -> KafkaSink:
    sink = make(producer, mode)
    sink._dead_letter_topic = DLQ
    sink._refusals = RefusedRecords() if refusals is None else refusals
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


# --- refused at delivery (the broker's own limits and policies) -------------------------------

TOO_LARGE_AT_BROKER = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")


def publish_and_serve(sink: KafkaSink, records: list[Record]) -> None:
    """One source transaction, then what the loop does at its end (acks, the commit)."""
    publish_transaction(sink, records)
    sink.service(idle_boundary=True)
    sink.service(idle_boundary=True)


def refused_run(mode: DeliveryMode, refusals: RefusedRecords, records: list[Record]) -> SinkError:
    """A run whose broker refuses the big record at delivery: it ends, retryable."""
    producer = FakeProducer(refused_at_delivery={b"big at the broker": TOO_LARGE_AT_BROKER})
    sink = with_dead_letter(producer, mode, refusals)
    with pytest.raises(SinkError) as raised:
        publish_and_serve(sink, records)
    assert raised.value.retryable
    assert sink.confirmed == 100  # nothing confirmed past it
    if mode == "exactly_once":
        assert "abort" in producer.calls
        assert producer.visible_on("t") == []
    return raised.value


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_a_record_refused_at_delivery_even_alone_goes_to_the_dead_letters_on_replay(
    mode: DeliveryMode,
) -> None:
    """The run cannot take the record back out of its transaction (or its place in the
    acknowledgements): it stops, retryable, naming it. The next run, fed the same records
    again from the last committed position, produces it alone (the broker refuses whole
    batches); refused again, it goes to the dead-letter topic in the run after."""
    refusals = RefusedRecords()
    records = unit(b"small", b"big at the broker", b"after")
    with capture_logs() as logs:
        error = refused_run(mode, refusals, records)
    assert "refused 1 record(s) at delivery (MSG_SIZE_TOO_LARGE for topic 't')" in str(error)
    assert DLQ in str(error)
    [warned] = [e for e in logs if e["event"] == "records_refused_at_delivery"]
    assert warned["dead_letter_topic"] == DLQ
    refused_run(mode, refusals, records)  # alone, and refused again

    again = FakeProducer()  # the next run: the same records, from the committed position
    sink = with_dead_letter(again, mode, refusals)
    publish_and_serve(sink, records)
    assert [r.value for r in again.visible_on("t")] == [b"small", b"after"]
    [dead] = again.visible_on(DLQ)
    assert dead.value == b"big at the broker"  # too large for "t", the original goes here
    assert headers(dead)["cdc.dead_letter.reason"] == b"too_large"
    assert headers(dead)["cdc.dead_letter.error_code"] == b"MSG_SIZE_TOO_LARGE"
    assert headers(dead)["cdc.lsn"] == b"200"
    assert sink.confirmed == 250
    assert len(refusals) == 1  # kept: a later replay (after an abort too) diverts it again


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_a_record_refused_only_for_its_batch_is_published_when_produced_alone(
    mode: DeliveryMode,
) -> None:
    refusals = RefusedRecords()
    records = unit(b"small", b"big at the broker", b"after")
    refused_run(mode, refusals, records)
    again = FakeProducer()  # alone, the broker takes it
    sink = with_dead_letter(again, mode, refusals)
    publish_and_serve(sink, records)
    assert [r.value for r in again.visible_on("t")] == [b"small", b"big at the broker", b"after"]
    assert again.visible_on(DLQ) == []
    assert not refusals


def test_a_refused_record_without_position_headers_still_stops_for_good() -> None:
    producer = FakeProducer(refused_at_delivery={b"v": TOO_LARGE_AT_BROKER}, auto_ack=True)
    sink = with_dead_letter(producer, "at_least_once")
    with pytest.raises(SinkError) as raised:
        publish_and_serve(sink, [Record("t", b"k", b"v", None)])
    assert not raised.value.retryable  # stop, never drop
    assert "dead-letter" not in str(raised.value)
    assert not sink._refusals


def test_a_delivery_error_that_is_not_the_records_fault_is_not_dead_lettered() -> None:
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
    producer = FakeProducer(refused_at_delivery={b"v": timed_out})
    sink = with_dead_letter(producer, "at_least_once")
    with pytest.raises(SinkError, match="timed out"):
        publish_and_serve(sink, unit(b"v"))
    assert not sink._refusals


# --- the setting ----------------------------------------------------------------------------


def test_off_by_default_with_a_topic_named_after_the_connector() -> None:
    config = ConnectorConfig.model_validate({"name": "shop-eu", "postgres": {"dsn": "host=x"}})
    assert not config.dead_letter.enabled
    assert config.dead_letter.topic_name("shop-eu") == "shop-eu.__cdc_dead_letter"


@pytest.mark.parametrize("bad", ["{table}.dead", "dead letters", "", "{connector"])
def test_a_dead_letter_topic_that_cannot_be_one_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        DeadLetterConfig(topic=bad)
