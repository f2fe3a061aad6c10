"""``cdc verify`` against the compacted topic: each legacy row converted as the daemon
converts it, compared with the topic's latest record of its key.

The one job: for one table, load its compacted topic into memory (key bytes -> value
bytes, read ``read_committed`` to its end: memory proportional to the compacted table),
scan the legacy table in chunks, convert each row with the daemon's own
``TableEncoder`` (exactly as snapshot rows are converted, so equal data gives equal JSON),
compare, and re-check what differs once the topic has caught up (``cdc.verify.run``). It
must not write to Kafka or to PostgreSQL.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from cdc.envelope import TableEncoder
from cdc.errors import SinkError
from cdc.kafka.topic_reader import TopicReader
from cdc.postgres.snapshot_reader import KeyValues, TableShape
from cdc.protocol.typeinfo import TypeResolver
from cdc.protocol.values import ConversionStats
from cdc.verify.compare import (
    CatchUp,
    KeyInverter,
    Kind,
    RowOutcome,
    TableReport,
    compare_json_rows,
)
from cdc.verify.run import Candidates, LegacyTables, recheck

__all__ = ["TopicComparer"]

_dumps: Final = orjson.dumps


class TopicComparer:
    """Compares tables with their compacted topics, for one connector."""

    def __init__(self, legacy: LegacyTables) -> None:
        self._legacy = legacy
        self._catalog = legacy.reader.type_catalog()
        self._stats = ConversionStats()

    def verify_table(self, schema: str, table: str) -> TableReport:
        """Compare ``schema.table`` with its compacted topic.

        Raises:
            CdcError: the table, the topic or the slot cannot be read, or a legacy value
                cannot be converted (as the daemon would stop on it).
        """
        legacy = self._legacy
        cfg = legacy.connector
        shape = legacy.reader.table_shape(schema, table)
        topic = legacy.topics.compacted_topic(cfg.name, legacy.database, schema, table)
        report = TableReport(
            table=shape.qualified,
            compared_with=topic,
            side="compacted topic",
            max_differences=legacy.options.max_differences,
        )
        if not shape.key_columns:
            report.skipped = (
                "no primary key or replica identity index, so it has no compacted topic"
            )
            return report
        reader = TopicReader(legacy.admin, topic, client_name=f"cdc-verify-{cfg.name}")
        try:
            _TableRun(
                legacy,
                shape,
                encoder=self._encoder(shape, topic),
                reader=reader,
                report=report,
                types=self._catalog.lookup,
            ).run()
        finally:
            reader.close()
        return report

    def _encoder(self, shape: TableShape, topic: str) -> TableEncoder:
        """The encoder the daemon builds for a table read by a snapshot
        (``ConnectorPipeline._table_encoder``), without the TOAST fill store."""
        legacy = self._legacy
        cfg = legacy.connector
        return TableEncoder(
            shape.relation,
            connector=cfg.name,
            database=legacy.database,
            retention_topic=legacy.topics.retention_topic(
                cfg.name, legacy.database, shape.relation.namespace, shape.relation.name
            ),
            compacted_topic=topic,
            options=legacy.value_options,
            key_columns=shape.key_columns,
            toast=None,
            placeholder=cfg.toast.placeholder,
            types=self._catalog.lookup,
            stats=self._stats,
        )


class _TableRun:
    """One table's comparison: the topic in memory, the scan, the re-checks."""

    def __init__(
        self,
        legacy: LegacyTables,
        shape: TableShape,
        *,
        encoder: TableEncoder,
        reader: TopicReader,
        report: TableReport,
        types: TypeResolver,
    ) -> None:
        self._legacy = legacy
        self._shape = shape
        self._encoder = encoder
        self._reader = reader
        self._report = report
        self._placeholder = legacy.connector.toast.placeholder
        # The compacted topic's latest value per key (tombstoned keys removed).
        self._state: dict[bytes, bytes] = {}
        # Key text of each candidate key, to read it again by key from the legacy table.
        self._texts: dict[bytes, KeyValues] = {}
        key_columns = [shape.relation.columns[i] for i in shape.key_indexes]
        self._inverter = KeyInverter(key_columns, legacy.value_options, types=types)

    def run(self) -> None:
        self._load()
        candidates = self._scan()
        recheck(
            candidates,
            self._report,
            legacy_rows=self._legacy_rows,
            catch_up=self._catch_up,
            other_rows=self._topic_rows,
            compare=self._compare,
            label=_label,
        )

    # --- the topic ----------------------------------------------------------------------

    def _on_record(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return  # the daemon writes no unkeyed record to a compacted topic
        if value is None:
            self._state.pop(key, None)
        else:
            self._state[key] = value

    def _load(self) -> None:
        """Read the whole topic once, to the end its committed transactions reach."""
        reader = self._reader
        wait = max(self._legacy.options.wait_seconds, 1.0)
        ends = reader.settled_end_offsets(wait) or reader.end_offsets()
        if not reader.read_to(ends, timeout=wait, on_record=self._on_record):
            raise SinkError(
                f"reading topic {reader.topic!r}: nothing arrived for {wait:g} s before its"
                " end; is Kafka reachable (kafka.bootstrap_servers, kafka.properties)?",
                topic=reader.topic,
            )

    def _catch_up(self, lsn: int) -> CatchUp:
        """Wait until the topic holds every change the legacy reads at ``lsn`` saw: the
        slot confirmed ``lsn``, then the topic read to its settled end."""
        legacy = self._legacy
        deadline = legacy.deadline()
        slot = legacy.wait_for_slot(lsn, deadline)
        if not slot.caught_up:
            return slot
        reader = self._reader
        ends = reader.settled_end_offsets(max(0.0, deadline - time.monotonic()))
        if ends is None:
            return CatchUp(lsn, False, f"a Kafka transaction on {reader.topic} stayed open")
        if not reader.read_to(
            ends, timeout=max(1.0, deadline - time.monotonic()), on_record=self._on_record
        ):
            return CatchUp(lsn, False, f"reading {reader.topic} to its end did not finish")
        return CatchUp(lsn, True)

    def _topic_rows(self, keys: list[bytes]) -> dict[bytes, Any]:
        state = self._state
        return {key: _parse(state[key]) for key in keys if key in state}

    # --- the legacy table ---------------------------------------------------------------

    def _scan(self) -> Candidates[bytes]:
        """Compare every legacy row with the topic; the keys that differ, with how."""
        encoder = self._encoder
        shape = self._shape
        report = self._report
        state = self._state
        placeholder = self._placeholder
        key_of = self._legacy.reader.key_of
        unmatched = set(state)
        candidates: Candidates[bytes] = Candidates()
        last_lsn = 0
        for rows, lsn in self._legacy.scan(shape):
            last_lsn = lsn
            report.chunks += 1
            report.rows += len(rows)
            for values in rows:
                row = encoder.row(values, 0)
                key = encoder.key(row)
                assert key is not None  # keyed tables only
                unmatched.discard(key)
                stored = state.get(key)
                # The daemon writes exactly these bytes for this row: most rows stop here.
                if stored is not None and _dumps(row) == stored:
                    continue
                outcome = compare_json_rows(row, _parse(stored), placeholder=placeholder)
                if outcome.kind is None:
                    report.add_unverifiable(outcome.unverifiable)
                    continue
                # orjson leaves its result in a buffer of 4 KB or more: keep a copy.
                key = bytes(memoryview(key))
                candidates.add(key, row, outcome, lsn)
                self._texts[key] = key_of(shape, values)
        # Keys no chunk had: absent from the table as of its reads, the last one included.
        extra = RowOutcome(Kind.EXTRA)
        for key in unmatched:
            candidates.add(key, None, extra, last_lsn)
        return candidates

    def _legacy_rows(self, keys: list[bytes]) -> tuple[dict[bytes, Any], int]:
        """The legacy rows of ``keys`` (converted), read by key where the key's text is
        known or can be derived from its JSON, else found by scanning the table."""
        texts = self._texts
        located: list[KeyValues] = []
        unlocated: set[bytes] = set()
        for key in keys:
            text = texts.get(key)
            if text is None:
                text = self._inverter.invert(key)
                if text is not None:
                    texts[key] = text
            if text is None:
                unlocated.add(key)
            else:
                located.append(text)
        rows, position = self._legacy.read_keys(self._shape, located)
        found = {key: row for key, row, _ in self._converted(rows)}
        if unlocated:
            # Keys only the topic has, of a type whose JSON cannot be turned back into
            # text (timestamps, bytea...): read the whole table (paced) to look for them.
            for chunk, lsn in self._legacy.scan(self._shape):
                position = max(position, lsn)
                for key, row, values in self._converted(chunk):
                    if key in unlocated:
                        found[key] = row
                        texts[key] = self._legacy.reader.key_of(self._shape, values)
        return found, position

    def _converted(self, rows: list[KeyValues]) -> list[tuple[bytes, Any, KeyValues]]:
        encoder = self._encoder
        converted = []
        for values in rows:
            row = encoder.row(values, 0)
            key = encoder.key(row)
            assert key is not None
            converted.append((bytes(memoryview(key)), row, values))
        return converted

    def _compare(self, legacy: Any, other: Any) -> RowOutcome:
        return compare_json_rows(legacy, other, placeholder=self._placeholder)


def _parse(value: bytes | None) -> Any:
    """A compacted record's value as JSON (``None`` stays ``None``); a value that is not
    JSON is kept as its text, and differs from any row."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode(errors="replace")


def _label(key: bytes) -> str:
    return key.decode(errors="replace")
