"""The pure part of ``cdc verify``: comparing rows, pacing chunks, and the report. No I/O.

The one job: decide whether a legacy row and its counterpart (a compacted topic's JSON
row, or a replay target's row in PostgreSQL text forms) are equal, and say how they
differ; turn a compacted topic's key back into key text where its type allows; pace chunk
reads (the rows/s cap); and keep, count and render what differs (``TableReport``,
``VerifyReport``). The I/O (which rows, from where, when) is ``cdc.verify.run`` and the
edges. No I/O, no logging, no clock (time is passed in), no psycopg or confluent_kafka.

JSON values are compared as JSON, not as bytes: a boolean never equals a number, ``1``
equals ``1.0``, object key order does not matter. In a compacted topic the unchanged-TOAST
placeholder (``toast.placeholder``) stands for a value PostgreSQL did not send: such a
column is *unverifiable*, neither equal nor different, and is counted per column.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from cdc.lsn import format_lsn
from cdc.protocol.messages import Column
from cdc.protocol.typeinfo import JsonValue, TypeResolver
from cdc.protocol.values import ValueOptions, converter_for

__all__ = [
    "EQUAL",
    "CatchUp",
    "ColumnDifference",
    "ColumnPlan",
    "KeyInverter",
    "Kind",
    "RowDifference",
    "RowOutcome",
    "TableReport",
    "Throttle",
    "VerifyReport",
    "compare_json_rows",
    "compare_text_rows",
    "json_equal",
    "plan_columns",
    "text_key_label",
]

KeyText = tuple[str | None, ...]

# Values shown in the human-readable report are cut to keep one difference on one line.
_SHOWN_CHARS: Final = 60


class Kind(enum.Enum):
    """How a key differs."""

    DIFFERS = "differs"  # on both sides, some column values differ
    MISSING = "missing"  # in the legacy table, not on the compared side
    EXTRA = "extra"  # on the compared side, not in the legacy table


@dataclass(frozen=True, slots=True)
class ColumnDifference:
    """One column of a differing row. ``only_in`` is ``"legacy"`` or ``"other"`` when
    the column exists on that side only (the other value is then ``None``)."""

    column: str
    legacy: Any
    other: Any
    only_in: str | None = None


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """The result of comparing one key's two rows: ``kind`` ``None`` means equal on every
    verifiable column; ``unverifiable`` names the columns that hold the placeholder."""

    kind: Kind | None
    columns: tuple[ColumnDifference, ...] = ()
    unverifiable: tuple[str, ...] = ()


EQUAL: Final = RowOutcome(None)
_MISSING: Final = RowOutcome(Kind.MISSING)
_EXTRA: Final = RowOutcome(Kind.EXTRA)


@dataclass(frozen=True, slots=True)
class RowDifference:
    """A key that still differed after the re-checks; ``key`` is its JSON text."""

    key: str
    outcome: RowOutcome


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two parsed JSON values as JSON means it (``true`` is not ``1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(value, b[key]) for key, value in a.items())
        )
    return type(a) is type(b) and bool(a == b)


def compare_json_rows(
    legacy: Mapping[str, JsonValue] | None, other: Any, *, placeholder: str
) -> RowOutcome:
    """Compare a legacy row (converted as the daemon converts it) with the compacted
    topic's parsed value of the same key.

    Args:
        legacy: the legacy row; ``None`` when the table has no row with the key.
        other: the topic's parsed value: a JSON object, ``None`` when the topic has no
            record for the key (or its latest is a tombstone); anything else (a value
            that is not a JSON object) differs as a whole.
        placeholder: the unchanged-TOAST placeholder (``toast.placeholder``).
    """
    if legacy is None:
        return EQUAL if other is None else _EXTRA
    if other is None:
        return _MISSING
    if not isinstance(other, dict):
        return RowOutcome(Kind.DIFFERS, (ColumnDifference("(value)", dict(legacy), other),))
    differences: list[ColumnDifference] = []
    unverifiable: list[str] = []
    for name, value in legacy.items():
        if name not in other:
            differences.append(ColumnDifference(name, value, None, only_in="legacy"))
            continue
        theirs = other[name]
        if json_equal(value, theirs):
            continue
        if theirs == placeholder:
            unverifiable.append(name)
        else:
            differences.append(ColumnDifference(name, value, theirs))
    differences.extend(
        ColumnDifference(name, None, theirs, only_in="other")
        for name, theirs in other.items()
        if name not in legacy
    )
    return RowOutcome(
        Kind.DIFFERS if differences else None, tuple(differences), tuple(unverifiable)
    )


def compare_text_rows(
    columns: Sequence[str], legacy: Sequence[str | None] | None, other: Sequence[str | None] | None
) -> RowOutcome:
    """Compare two rows of PostgreSQL text forms (``None`` is NULL), read with the same
    select list and the same session settings on both servers.

    ``legacy`` or ``other`` is ``None`` when that side has no row with the key.
    """
    if legacy is None:
        return EQUAL if other is None else _EXTRA
    if other is None:
        return _MISSING
    differences = tuple(
        ColumnDifference(name, mine, theirs)
        for name, mine, theirs in zip(columns, legacy, other, strict=True)
        if mine != theirs
    )
    return RowOutcome(Kind.DIFFERS, differences) if differences else EQUAL


def text_key_label(names: Sequence[str], values: KeyText) -> str:
    """A key of text forms as JSON text, ``{"id":"5"}``, for the report."""
    return orjson.dumps(dict(zip(names, values, strict=True))).decode()


# --- keys of the compacted topic -------------------------------------------------------

_INTEGERS: Final = frozenset({20, 21, 23, 26, 28, 29, 5069})  # int8/2/4, oid, xid, cid, xid8
_BOOL: Final = 16
_NUMERIC: Final = 1700
_NUMERIC_NAMES: Final = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}


class KeyInverter:
    """Turns a compacted topic's key (the JSON of the key columns) back into the key's
    PostgreSQL text forms, so a key found only in the topic can be looked up in the
    legacy table by key.

    Possible where the JSON value determines the text: integers, booleans, ``numeric``
    under ``decimal_handling: string``, and every type whose JSON value *is* its text
    (text types, uuid, enums...). ``invertible`` is false for other key types
    (timestamps, bytea...); their keys must be found by reading the table.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        options: ValueOptions,
        *,
        types: TypeResolver | None = None,
    ) -> None:
        """Args:
        columns: the key columns, in key order.
        options: the connector's value options (as the daemon converts).
        types: resolves non-built-in types, as for the value converters.
        """
        self._names = tuple(c.name for c in columns)
        self._kinds: list[str | None] = []
        for column in columns:
            if column.type_oid in _INTEGERS:
                kind: str | None = "int"
            elif column.type_oid == _BOOL:
                kind = "bool"
            elif column.type_oid == _NUMERIC:
                kind = "numeric" if options.decimal_handling == "string" else None
            elif converter_for(column.type_oid, column.type_modifier, options, types=types) is None:
                kind = "text"
            else:
                kind = None
            self._kinds.append(kind)
        self.invertible = bool(columns) and None not in self._kinds

    def invert(self, key: bytes) -> KeyText | None:
        """The key's text forms, or ``None`` when this key cannot be inverted (a type
        not invertible, or a key that is not a JSON object of the key columns)."""
        if not self.invertible:
            return None
        try:
            parsed = orjson.loads(key)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict) or tuple(parsed) != self._names:
            return None
        texts: list[str] = []
        for name, kind in zip(self._names, self._kinds, strict=True):
            text = _key_text(parsed[name], kind)
            if text is None:
                return None
            texts.append(text)
        return tuple(texts)


def _key_text(value: Any, kind: str | None) -> str | None:
    if kind == "int":
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "bool":
        return ("t" if value else "f") if isinstance(value, bool) else None
    if kind == "numeric":
        return _NUMERIC_NAMES.get(value, value) if isinstance(value, str) else None
    return value if isinstance(value, str) else None


# --- columns of a target table ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which columns two versions of a table share (``common``, in the legacy order),
    which exist on one side only, and which shared ones have another type."""

    common: tuple[str, ...]
    only_legacy: tuple[str, ...]
    only_other: tuple[str, ...]
    retyped: tuple[tuple[str, str, str], ...]  # (column, legacy type, other type)


def plan_columns(legacy: Sequence[tuple[str, str]], other: Sequence[tuple[str, str]]) -> ColumnPlan:
    """Match columns by name; ``(name, type name)`` pairs in each table's order."""
    theirs = dict(other)
    mine = dict(legacy)
    return ColumnPlan(
        common=tuple(name for name, _ in legacy if name in theirs),
        only_legacy=tuple(name for name, _ in legacy if name not in theirs),
        only_other=tuple(name for name, _ in other if name not in mine),
        retyped=tuple(
            (name, kind, theirs[name])
            for name, kind in legacy
            if name in theirs and theirs[name] != kind
        ),
    )


# --- pacing ------------------------------------------------------------------------------


class Throttle:
    """The rows/s cap of chunk reads (``snapshot.max_rows_per_second``), as incremental
    snapshots apply it: after a read of n rows, the next waits n / cap seconds."""

    __slots__ = ("_cap", "_not_before")

    def __init__(self, max_rows_per_second: int | None) -> None:
        self._cap = max_rows_per_second
        self._not_before = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next read."""
        return max(0.0, self._not_before - now)

    def read(self, rows: int, now: float) -> None:
        """``rows`` were just read (at monotonic time ``now``)."""
        if self._cap:
            self._not_before = now + rows / self._cap


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Whether the compared side caught up to the legacy reads at ``lsn`` in time."""

    lsn: int
    caught_up: bool
    detail: str = ""


@dataclass
class TableReport:
    """What verify found for one table.

    ``rows`` counts legacy rows read by the scan. A difference is kept (up to
    ``max_differences`` shown, all counted) only once the re-checks are done.
    """

    table: str
    compared_with: str  # the compacted topic's name, or the target table
    side: str  # "compacted topic" or "target", in sentences
    max_differences: int
    rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    recheck_rounds: int = 0
    counts: Counter[Kind] = field(default_factory=Counter)
    shown: list[RowDifference] = field(default_factory=list)
    unverifiable: Counter[str] = field(default_factory=Counter)
    schema_differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    catch_up: CatchUp | None = None  # set when a wait for the compared side failed
    skipped: str | None = None

    def add_difference(self, key: str, outcome: RowOutcome) -> None:
        """A key that differs for good (after the re-checks)."""
        assert outcome.kind is not None
        self.counts[outcome.kind] += 1
        if len(self.shown) < self.max_differences:
            self.shown.append(RowDifference(key, outcome))

    def add_unverifiable(self, columns: Sequence[str]) -> None:
        """Columns of an otherwise equal row that hold the placeholder."""
        self.unverifiable.update(columns)

    @property
    def differences(self) -> int:
        return sum(self.counts.values())

    @property
    def equal(self) -> bool:
        return not self.differences and not self.schema_differences

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form (``cdc verify --json``)."""
        return {
            "table": self.table,
            "compared_with": self.compared_with,
            "equal": self.equal,
            "skipped": self.skipped,
            "rows": self.rows,
            "differences": {
                "total": self.differences,
                **{kind.value: self.counts[kind] for kind in Kind},
            },
            "shown": [
                {
                    "key": _parsed_key(d.key),
                    "kind": d.outcome.kind.value if d.outcome.kind else None,
                    "columns": [
                        {
                            "column": c.column,
                            "legacy": c.legacy,
                            "other": c.other,
                            "only_in": c.only_in,
                        }
                        for c in d.outcome.columns
                    ],
                }
                for d in self.shown
            ],
            "unverifiable": dict(sorted(self.unverifiable.items())),
            "schema_differences": list(self.schema_differences),
            "notes": list(self.notes),
            "chunks": self.chunks,
            "chunks_differing": self.chunks_differing,
            "recheck_rounds": self.recheck_rounds,
            "catch_up": None
            if self.catch_up is None
            else {
                "lsn": format_lsn(self.catch_up.lsn),
                "caught_up": self.catch_up.caught_up,
                "detail": self.catch_up.detail,
            },
        }

    def lines(self) -> list[str]:
        """The human-readable form: one line for the table, then one per shown
        difference and per remark, indented."""
        if self.skipped is not None:
            return [f"{self.table}: skipped: {self.skipped}"]
        total = self.differences
        if total:
            parts = [
                f"{self.counts[Kind.DIFFERS]:,} with other values"
                if self.counts[Kind.DIFFERS]
                else "",
                f"{self.counts[Kind.MISSING]:,} missing from the {self.side}"
                if self.counts[Kind.MISSING]
                else "",
                f"{self.counts[Kind.EXTRA]:,} only in the {self.side}"
                if self.counts[Kind.EXTRA]
                else "",
            ]
            head = (
                f"{self.table}: {self.rows:,} rows, {total:,} differ"
                f" ({', '.join(p for p in parts if p)})"
            )
        elif self.schema_differences:
            head = f"{self.table}: {self.rows:,} rows, the columns differ"
        else:
            head = f"{self.table}: {self.rows:,} rows equal"
        lines = [head]
        lines.extend(f"  {text}" for text in self.schema_differences)
        lines.extend(f"  {_describe(d, self.side)}" for d in self.shown)
        if total > len(self.shown):
            lines.append(
                f"  ... and {total - len(self.shown):,} more (--max-differences"
                f" {self.max_differences})"
            )
        if self.catch_up is not None and not self.catch_up.caught_up:
            lines.append(
                f"  not re-checked: the {self.side} did not catch up to LSN"
                f" {format_lsn(self.catch_up.lsn)} ({self.catch_up.detail}); these keys may"
                " hold changes still on their way"
            )
        if self.unverifiable:
            counts = ", ".join(f"{name} {n:,}" for name, n in sorted(self.unverifiable.items()))
            total_unverifiable = sum(self.unverifiable.values())
            plural = "s" if total_unverifiable != 1 else ""
            lines.append(
                f"  {total_unverifiable:,} value{plural} unverifiable (the unchanged-TOAST"
                f" placeholder in the {self.side}): {counts}"
            )
        lines.extend(f"  note: {text}" for text in self.notes)
        return lines


def _parsed_key(key: str) -> Any:
    try:
        return orjson.loads(key)
    except orjson.JSONDecodeError:
        return key


def _shown(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _describe(difference: RowDifference, side: str) -> str:
    outcome = difference.outcome
    if outcome.kind is Kind.MISSING:
        return f"{difference.key}: missing from the {side}"
    if outcome.kind is Kind.EXTRA:
        return f"{difference.key}: only in the {side}, not in the legacy table"
    columns = []
    for c in outcome.columns:
        if c.only_in == "legacy":
            columns.append(f"{c.column}: only in the legacy row ({_shown(c.legacy)})")
        elif c.only_in == "other":
            columns.append(f"{c.column}: only in the {side}'s row ({_shown(c.other)})")
        else:
            columns.append(f"{c.column}: legacy {_shown(c.legacy)}, {side} {_shown(c.other)}")
    return f"{difference.key}: {'; '.join(columns)}"


@dataclass
class VerifyReport:
    """Every table's report, for one connector."""

    connector: str
    compared_with: str  # "compacted_topic" or "target_database"
    tables: list[TableReport] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "compared_with": self.compared_with,
            "equal": self.equal,
            "tables": [t.to_json() for t in self.tables],
        }

    def lines(self) -> list[str]:
        lines = [line for table in self.tables for line in table.lines()]
        compared = [t for t in self.tables if t.skipped is None]
        differing = sum(1 for t in compared if not t.equal)
        verdict = "equal" if not differing else f"{differing} of {len(compared)} tables differ"
        against = (
            "compacted topics" if self.compared_with == "compacted_topic" else "target database"
        )
        plural = "s" if len(compared) != 1 else ""
        lines.append(
            f"{self.connector}: {len(compared)} table{plural} compared with the {against}:"
            f" {verdict}"
        )
        return lines
