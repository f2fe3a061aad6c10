"""Records Kafka refused for good when it delivered them, remembered across the
connector's restarts so the replay sends them to the dead-letter topic.

The one job: name a record by what stays the same when the stream is read again from the
last committed position (its topic, its key and its ``cdc.lsn``/``cdc.seq`` position
headers: each message gives one record per topic and key), and keep, per name, why Kafka
refused it. A refusal at produce time goes to the dead-letter topic at once
(``cdc.kafka.sink``); one the broker reports only at delivery has already spoiled its
Kafka transaction (``exactly_once``) or its place in the acknowledgements
(``at_least_once``): the sink remembers it here and restarts the connector, which
publishes everything again from the last committed position, this record to the
dead-letter topic in its place. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cdc.envelope import LSN_HEADER, SEQ_HEADER, Record

__all__ = ["Refusal", "RefusedRecords"]

_Name = tuple[str, bytes | None, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why Kafka refused a record: librdkafka's error name and message; ``alone`` when
    it was refused while produced on its own (so not for the batch it shared)."""

    code: str
    message: str
    too_large: bool
    alone: bool = False


class RefusedRecords:
    """The records refused at delivery, by name; owned by the connector's runner, so it
    outlives each run of the pipeline.

    The broker refuses a whole batch: records batched with an oversized one are refused
    with it. So a refused record is first produced again on its own (``trying``); only
    if it is refused then too (``alone``) does it go to the dead-letter topic.
    """

    __slots__ = ("_refused", "_trying")

    def __init__(self) -> None:
        self._refused: dict[_Name, Refusal] = {}
        self._trying: set[_Name] = set()

    def __bool__(self) -> bool:
        return bool(self._refused)

    def __len__(self) -> int:
        return len(self._refused)

    def add(
        self,
        topic: str,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        refusal: Refusal,
    ) -> bool:
        """Remember a refused record; False when it carries no position to find it by
        again (then it cannot be told apart on the replay, and the connector stops)."""
        name = _name(topic, key, headers)
        if name is None:
            return False
        alone = name in self._trying
        self._trying.discard(name)
        self._refused[name] = Refusal(refusal.code, refusal.message, refusal.too_large, alone)
        return True

    def take(self, record: Record) -> Refusal | None:
        """Why ``record`` was refused before, if it was. A refusal for its batch is
        forgotten (the caller produces it alone: ``trying``); one of the record alone is
        kept, so every later run (after an abort too) sends it to the dead letters."""
        name = _name(record.topic, record.key, record.headers)
        if name is None:
            return None
        refusal = self._refused.get(name)
        if refusal is not None and not refusal.alone:
            del self._refused[name]
        return refusal

    def trying(self, record: Record) -> None:
        """``record`` is being produced on its own: a refusal now is its own."""
        name = _name(record.topic, record.key, record.headers)
        if name is not None:
            self._trying.add(name)

    def delivered(self, record: Record) -> None:
        """``record`` went through on its own: it was refused for its batch only."""
        name = _name(record.topic, record.key, record.headers)
        if name is not None:
            self._trying.discard(name)


def _name(
    topic: str, key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> _Name | None:
    lsn = seq = None
    for header, value in headers or ():
        if header == LSN_HEADER:
            lsn = value
        elif header == SEQ_HEADER:
            seq = value
    if lsn is None or seq is None:
        return None
    return (topic, key, lsn, seq)
