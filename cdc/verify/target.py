"""``cdc verify --target-dsn``: compare legacy tables with a database ``cdc replay`` fills.

The one job: for one table, digest each legacy key-range chunk on the legacy server and
the same key range on the target server (both in the same session settings, over the same
columns, selected by name in the legacy order), fetch rows only of chunks whose digests
differ, compare them as PostgreSQL text forms, and re-check what differs once the target
has caught up (``cdc.verify.run``): the slot confirmed the legacy reads' position, and the
target's ``cdc_replay.offsets`` reached the end of the table's retention topic. It must
not write to either database.
"""

from __future__ import annotations

import time
from typing import Any, Final

from cdc.kafka.topic_reader import TopicReader
from cdc.postgres.snapshot_reader import KeyValues, TableShape
from cdc.postgres.verify_reader import REPLAY_OFFSETS_TABLE, VerifyReader, project_shape
from cdc.verify.compare import (
    CatchUp,
    ColumnPlan,
    RowOutcome,
    TableReport,
    compare_text_rows,
    plan_columns,
    text_key_label,
)
from cdc.verify.run import Candidates, LegacyTables, batched, recheck

__all__ = ["TargetComparer"]

# How often cdc_replay.offsets is polled while waiting for the replay.
_POLL_S: Final = 0.2


class TargetComparer:
    """Compares tables with their copies in a replay target, for one connector."""

    def __init__(self, legacy: LegacyTables, target: VerifyReader) -> None:
        self._legacy = legacy
        self._target = target

    def verify_table(self, schema: str, table: str) -> TableReport:
        """Compare ``schema.table`` with the table of the same name in the target.

        Raises:
            CdcError: a database, the slot or the retention topic cannot be read.
        """
        legacy, target = self._legacy, self._target
        shape = legacy.reader.table_shape(schema, table)
        report = TableReport(
            table=shape.qualified,
            compared_with=f"{shape.qualified} in the target database",
            side="target",
            max_differences=legacy.options.max_differences,
        )
        if not shape.key_columns:
            report.skipped = "no primary key or replica identity index to match rows by"
            return report
        if not target.has_table(schema, table):
            report.schema_differences.append("the table does not exist in the target database")
            return report
        theirs = target.table_shape(schema, table)
        plan = plan_columns(_typed_columns(shape), _typed_columns(theirs))
        report.schema_differences.extend(
            f"column {name} is missing in the target" for name in plan.only_legacy
        )
        report.schema_differences.extend(
            f"column {name} exists only in the target" for name in plan.only_other
        )
        report.notes.extend(
            f"column {name} is {mine} in the legacy table and {other} in the target"
            " (its values are compared as text)"
            for name, mine, other in plan.retyped
        )
        lost = [k for k in shape.key_columns if k not in plan.common]
        if lost:
            report.schema_differences.append(
                f"key column {', '.join(lost)} is missing in the target: rows cannot be matched"
            )
            return report
        mine_shape = project_shape(shape, plan.common)
        their_shape = project_shape(theirs, plan.common, shape.key_columns)
        _TableRun(legacy, target, mine_shape, their_shape, plan, report).run()
        return report


def _typed_columns(shape: TableShape) -> list[tuple[str, str]]:
    names = shape.type_names or ("",) * len(shape.relation.columns)
    return [(c.name, t) for c, t in zip(shape.relation.columns, names, strict=True)]


class _TableRun:
    """One table's comparison: chunk digests, rows of differing chunks, re-checks."""

    def __init__(  # noqa: PLR0917 - private, called once
        self,
        legacy: LegacyTables,
        target: VerifyReader,
        mine: TableShape,
        theirs: TableShape,
        plan: ColumnPlan,
        report: TableReport,
    ) -> None:
        self._legacy = legacy
        self._target = target
        self._mine = mine
        self._theirs = theirs
        self._columns = plan.common
        self._report = report
        cfg = legacy.connector
        self._topic = legacy.topics.retention_topic(
            cfg.name, legacy.database, mine.relation.namespace, mine.relation.name
        )
        self._topic_reader: TopicReader | None = None

    def run(self) -> None:
        try:
            candidates = self._scan()
            recheck(
                candidates,
                self._report,
                legacy_rows=self._legacy_rows,
                catch_up=self._catch_up,
                other_rows=self._target_rows,
                compare=self._compare,
                label=lambda key: text_key_label(self._mine.key_columns, key),
            )
        finally:
            if self._topic_reader is not None:
                self._topic_reader.close()

    def _scan(self) -> Candidates[KeyValues]:
        """Digest every chunk on both servers; compare the rows of those that differ."""
        legacy, target = self._legacy, self._target
        mine, theirs = self._mine, self._theirs
        report = self._report
        limit = legacy.chunk_rows
        candidates: Candidates[KeyValues] = Candidates()
        after: KeyValues | None = None
        while True:
            digest = legacy.digest_chunk(mine, after, limit)
            last = digest.rows < limit
            until = None if last else digest.last_key
            other = target.digest_range(theirs, after, until)
            report.chunks += 1
            report.rows += digest.rows
            if (digest.rows, digest.digest) != (other.rows, other.digest):
                report.chunks_differing += 1
                rows, lsn = legacy.read_chunk(mine, after, limit, until)
                ours = {target.key_of(mine, row): row for row in rows}
                found = {
                    target.key_of(theirs, row): row
                    for page in target.read_range(theirs, after, until, page_rows=limit)
                    for row in page
                }
                for key in dict.fromkeys([*ours, *found]):
                    row = ours.get(key)
                    outcome = compare_text_rows(self._columns, row, found.get(key))
                    if outcome.kind is not None:
                        candidates.add(key, row, outcome, lsn)
            if last:
                return candidates
            after = digest.last_key

    def _legacy_rows(self, keys: list[KeyValues]) -> tuple[dict[KeyValues, Any], int]:
        rows, position = self._legacy.read_keys(self._mine, keys)
        key_of = self._legacy.reader.key_of
        return {key_of(self._mine, row): row for row in rows}, position

    def _target_rows(self, keys: list[KeyValues]) -> dict[KeyValues, Any]:
        target = self._target
        found: dict[KeyValues, Any] = {}
        for batch in batched(keys, self._legacy.keys_per_read):
            for row in target.read_keys(self._theirs, batch):
                found[target.key_of(self._theirs, row)] = row
        return found

    def _compare(self, legacy: Any, other: Any) -> RowOutcome:
        return compare_text_rows(self._columns, legacy, other)

    def _catch_up(self, lsn: int) -> CatchUp:
        """Wait until the target holds every change the legacy reads at ``lsn`` saw: the
        slot confirmed ``lsn`` (so the retention topic holds them), then the replay
        reached the topic's settled end in every partition."""
        legacy = self._legacy
        deadline = legacy.deadline()
        slot = legacy.wait_for_slot(lsn, deadline)
        if not slot.caught_up:
            return slot
        if self._topic_reader is None:
            self._topic_reader = TopicReader(
                legacy.admin, self._topic, client_name=f"cdc-verify-{legacy.connector.name}"
            )
        ends = self._topic_reader.settled_end_offsets(max(0.0, deadline - time.monotonic()))
        if ends is None:
            return CatchUp(lsn, False, f"a Kafka transaction on {self._topic} stayed open")
        connector = legacy.connector.name
        while True:
            applied = self._target.replay_offsets(connector, self._topic)
            behind = [
                (p, applied.get(p, 0), end)
                for p, end in sorted(ends.items())
                if applied.get(p, 0) < end
            ]
            if not behind:
                return CatchUp(lsn, True)
            if time.monotonic() >= deadline:
                partition, at, end = behind[0]
                return CatchUp(
                    lsn,
                    False,
                    f"{REPLAY_OFFSETS_TABLE} in the target: {self._topic} partition {partition}"
                    f" at offset {at}, its end is {end} (is cdc replay running?)",
                )
            time.sleep(_POLL_S)
