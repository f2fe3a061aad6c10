"""Unit tests of cdc verify's pure parts: row comparison, key inversion, column plans,
pacing, the report, and the re-check rounds (with fake sides, no services)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.protocol.messages import Column
from cdc.protocol.typeinfo import TypeInfo
from cdc.protocol.values import RowConverter, ValueOptions
from cdc.verify.compare import (
    EQUAL,
    CatchUp,
    ColumnDifference,
    ColumnPlan,
    KeyInverter,
    Kind,
    RowOutcome,
    TableReport,
    Throttle,
    VerifyReport,
    compare_json_rows,
    compare_text_rows,
    json_equal,
    plan_columns,
    text_key_label,
)
from cdc.verify.run import RECHECK_ROUNDS, Candidates, recheck

PLACEHOLDER = "__debezium_unavailable_value"

INT8, INT4, TEXT, BOOL, NUMERIC, UUID, TIMESTAMPTZ, BYTEA = 20, 23, 25, 16, 1700, 2950, 1184, 17


# --- json_equal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), ({"a": 1, "b": [1, {"c": None}]}, {"b": [1.0, {"c": None}], "a": 1}), ("x", "x")],
)
def test_json_values_equal_as_json(a: Any, b: Any) -> None:
    assert json_equal(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [(True, 1), (False, 0), (0, None), ("1", 1), ([1], [1, 2]), ({"a": 1}, {"a": 1, "b": 2})],
)
def test_json_values_of_other_types_differ(a: Any, b: Any) -> None:
    assert not json_equal(a, b)
    assert not json_equal(b, a)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes exactly
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_a_json_value_equals_itself_after_a_round_trip(value: Any) -> None:
    assert json_equal(value, orjson.loads(orjson.dumps(value)))


# --- rows of the compacted topic ------------------------------------------------------------


def test_equal_json_rows() -> None:
    row: dict[str, Any] = {"id": 1, "amount": "1.50", "tags": ["a"]}
    assert (
        compare_json_rows(row, {"tags": ["a"], "amount": "1.50", "id": 1}, placeholder="p") == EQUAL
    )


def test_differing_column_names_both_values() -> None:
    outcome = compare_json_rows({"id": 1, "v": "a"}, {"id": 1, "v": "b"}, placeholder=PLACEHOLDER)
    assert outcome == RowOutcome(Kind.DIFFERS, (ColumnDifference("v", "a", "b"),))


def test_a_column_on_one_side_only_is_a_difference() -> None:
    outcome = compare_json_rows({"id": 1, "old": 2}, {"id": 1, "new": 3}, placeholder=PLACEHOLDER)
    assert outcome.columns == (
        ColumnDifference("old", 2, None, only_in="legacy"),
        ColumnDifference("new", None, 3, only_in="other"),
    )


def test_missing_and_extra_rows() -> None:
    assert compare_json_rows({"id": 1}, None, placeholder=PLACEHOLDER).kind is Kind.MISSING
    assert compare_json_rows(None, {"id": 1}, placeholder=PLACEHOLDER).kind is Kind.EXTRA
    assert compare_json_rows(None, None, placeholder=PLACEHOLDER) == EQUAL


def test_a_topic_value_that_is_not_an_object_differs_as_a_whole() -> None:
    outcome = compare_json_rows({"id": 1}, "not json", placeholder=PLACEHOLDER)
    assert outcome == RowOutcome(
        Kind.DIFFERS, (ColumnDifference("(value)", {"id": 1}, "not json"),)
    )


def test_the_placeholder_is_unverifiable_not_equal_nor_different() -> None:
    outcome = compare_json_rows(
        {"id": 1, "body": "long text", "v": 1},
        {"id": 1, "body": PLACEHOLDER, "v": 1},
        placeholder=PLACEHOLDER,
    )
    assert outcome == RowOutcome(None, (), ("body",))


def test_the_placeholder_does_not_hide_another_difference() -> None:
    outcome = compare_json_rows(
        {"id": 1, "body": "long text", "v": 1},
        {"id": 1, "body": PLACEHOLDER, "v": 2},
        placeholder=PLACEHOLDER,
    )
    assert (outcome.kind, outcome.unverifiable) == (Kind.DIFFERS, ("body",))
    assert [c.column for c in outcome.columns] == ["v"]


def test_a_legacy_value_equal_to_the_placeholder_text_is_equal() -> None:
    row: dict[str, Any] = {"id": 1, "body": PLACEHOLDER}
    assert compare_json_rows(row, dict(row), placeholder=PLACEHOLDER) == EQUAL


def test_rows_converted_by_the_daemon_converter_compare_equal_to_their_json() -> None:
    """The compacted value is the orjson of the converted row: parsing it gives an equal
    row, floats, timestamps and arrays included."""
    columns = (
        Column(1, "id", INT8, -1),
        Column(0, "f", 701, -1),
        Column(0, "at", TIMESTAMPTZ, -1),
        Column(0, "tags", 1009, -1),
    )
    row = RowConverter(columns, ValueOptions()).convert(
        ("7", "0.30000000000000004", "2026-01-02 03:04:05.5+00", '{a,"b c",NULL}')
    )
    assert compare_json_rows(row, orjson.loads(orjson.dumps(row)), placeholder="p") == EQUAL


# --- rows of a target database --------------------------------------------------------------


def test_text_rows() -> None:
    names = ("id", "a", "b")
    assert compare_text_rows(names, ("1", "x", None), ("1", "x", None)) == EQUAL
    assert compare_text_rows(names, ("1", "x", None), ("1", "x", "")) == RowOutcome(
        Kind.DIFFERS, (ColumnDifference("b", None, ""),)
    )
    assert compare_text_rows(names, ("1", "x", None), None).kind is Kind.MISSING
    assert compare_text_rows(names, None, ("1", "x", None)).kind is Kind.EXTRA


def test_text_key_label_is_json() -> None:
    assert text_key_label(("tenant", "n"), ("a", "2")) == '{"tenant":"a","n":"2"}'


def test_plan_columns_matches_by_name_in_legacy_order() -> None:
    plan = plan_columns(
        [("id", "bigint"), ("a", "text"), ("gone", "int"), ("n", "numeric(5,2)")],
        [("n", "numeric"), ("id", "bigint"), ("a", "text"), ("added", "text")],
    )
    assert plan == ColumnPlan(
        common=("id", "a", "n"),
        only_legacy=("gone",),
        only_other=("added",),
        retyped=(("n", "numeric(5,2)", "numeric"),),
    )


# --- keys of the compacted topic ------------------------------------------------------------


def test_keys_of_integer_text_uuid_bool_and_numeric_columns_invert() -> None:
    columns = [
        Column(1, "a", INT8, -1),
        Column(1, "b", TEXT, -1),
        Column(1, "c", UUID, -1),
        Column(1, "d", BOOL, -1),
        Column(1, "e", NUMERIC, -1),
    ]
    inverter = KeyInverter(columns, ValueOptions())
    key = b'{"a":-5,"b":"x y","c":"0e2f1c3a-0000-0000-0000-000000000000","d":true,"e":"NAN"}'
    assert inverter.invertible
    assert inverter.invert(key) == (
        "-5",
        "x y",
        "0e2f1c3a-0000-0000-0000-000000000000",
        "t",
        "NaN",
    )


def test_an_inverted_key_converts_back_to_the_same_key() -> None:
    columns = (Column(1, "n", INT4, -1), Column(1, "t", TEXT, -1), Column(1, "d", NUMERIC, -1))
    converter = RowConverter(columns, ValueOptions())
    key = orjson.dumps(converter.convert(("12", "zz", "1.50")))
    texts = KeyInverter(columns, ValueOptions()).invert(key)
    assert texts is not None
    assert orjson.dumps(converter.convert(texts)) == key


def test_enum_keys_invert_through_the_type_resolver() -> None:
    mood = TypeInfo(oid=90001, namespace="public", name="mood", kind="e")
    inverter = KeyInverter([Column(1, "m", 90001, -1)], ValueOptions(), types={90001: mood}.get)
    assert inverter.invert(b'{"m":"happy"}') == ("happy",)


@pytest.mark.parametrize(
    ("column", "options"),
    [
        (Column(1, "at", TIMESTAMPTZ, -1), ValueOptions()),
        (Column(1, "b", BYTEA, -1), ValueOptions()),
        (Column(1, "d", NUMERIC, -1), ValueOptions(decimal_handling="double")),
    ],
)
def test_keys_whose_json_is_not_their_text_do_not_invert(
    column: Column, options: ValueOptions
) -> None:
    inverter = KeyInverter([column], options)
    assert not inverter.invertible
    assert inverter.invert(b'{"x":1}') is None


@pytest.mark.parametrize(
    "key", [b"not json", b"[1]", b'{"other":1}', b'{"id":true}', b'{"id":"1"}', b'{"id":1,"x":2}']
)
def test_keys_not_of_the_table_do_not_invert(key: bytes) -> None:
    assert KeyInverter([Column(1, "id", INT8, -1)], ValueOptions()).invert(key) is None


# --- pacing ------------------------------------------------------------------------------------


def test_throttle_spaces_reads_by_rows_over_the_cap() -> None:
    throttle = Throttle(1_000)
    assert throttle.delay(10.0) == 0.0
    throttle.read(500, 10.0)
    assert throttle.delay(10.2) == pytest.approx(0.3)
    assert throttle.delay(11.0) == 0.0


def test_no_cap_never_waits() -> None:
    throttle = Throttle(None)
    throttle.read(1_000_000, 0.0)
    assert throttle.delay(0.0) == 0.0


# --- the report ----------------------------------------------------------------------------


def report(**kwargs: Any) -> TableReport:
    return TableReport(
        table="public.orders",
        compared_with="inv.public.orders.latest",
        side="compacted topic",
        max_differences=2,
        **kwargs,
    )


def test_an_equal_table_is_one_line() -> None:
    assert report(rows=10_000).lines() == ["public.orders: 10,000 rows equal"]


def test_differences_are_counted_and_the_first_ones_shown() -> None:
    table = report(rows=10_000)
    table.add_difference('{"id":1}', RowOutcome(Kind.DIFFERS, (ColumnDifference("a", "1", 2),)))
    table.add_difference('{"id":2}', RowOutcome(Kind.MISSING))
    table.add_difference('{"id":3}', RowOutcome(Kind.EXTRA))
    assert not table.equal
    assert table.lines() == [
        "public.orders: 10,000 rows, 3 differ (1 with other values, 1 missing from the"
        " compacted topic, 1 only in the compacted topic)",
        '  {"id":1}: a: legacy "1", compacted topic 2',
        '  {"id":2}: missing from the compacted topic',
        "  ... and 1 more (--max-differences 2)",
    ]
    document = table.to_json()
    assert document["differences"] == {"total": 3, "differs": 1, "missing": 1, "extra": 1}
    assert document["shown"][0] == {
        "key": {"id": 1},
        "kind": "differs",
        "columns": [{"column": "a", "legacy": "1", "other": 2, "only_in": None}],
    }
    assert len(document["shown"]) == 2


def test_unverifiable_values_and_a_side_that_never_caught_up_are_reported() -> None:
    table = report(rows=3, catch_up=CatchUp(0x16B3_0000_0000, False, "slot s confirmed 0/1"))
    table.add_unverifiable(["body", "body", "doc"])
    table.add_difference('{"id":1}', RowOutcome(Kind.MISSING))
    lines = table.lines()
    assert lines[2] == (
        "  not re-checked: the compacted topic did not catch up to LSN 16B3/0 (slot s"
        " confirmed 0/1); these keys may hold changes still on their way"
    )
    assert lines[3] == (
        "  3 values unverifiable (the unchanged-TOAST placeholder in the compacted topic):"
        " body 2, doc 1"
    )
    assert table.to_json()["catch_up"] == {
        "lsn": "16B3/0",
        "caught_up": False,
        "detail": "slot s confirmed 0/1",
    }
    assert table.to_json()["unverifiable"] == {"body": 2, "doc": 1}


def test_schema_differences_make_a_table_unequal() -> None:
    table = report(rows=5)
    table.schema_differences.append("column v is missing in the target")
    assert not table.equal
    assert table.lines() == [
        "public.orders: 5 rows, the columns differ",
        "  column v is missing in the target",
    ]


def test_the_connector_summary() -> None:
    skipped = report(skipped="no key")
    differing = report(rows=1)
    differing.add_difference('{"id":1}', RowOutcome(Kind.EXTRA))
    document = VerifyReport("inv", "compacted_topic", [skipped, report(rows=2), differing])
    assert not document.equal
    assert document.lines()[0] == "public.orders: skipped: no key"
    assert document.lines()[-1] == (
        "inv: 2 tables compared with the compacted topics: 1 of 2 tables differ"
    )
    assert VerifyReport("inv", "target_database", [report(rows=2)]).lines()[-1] == (
        "inv: 1 table compared with the target database: equal"
    )


# --- re-check rounds -------------------------------------------------------------------------


class FakeSides:
    """A legacy table and a compared side as sequences of states, one per read (the
    legacy table's after the scan)."""

    def __init__(
        self, legacy: list[dict[int, Any]], other: list[dict[int, Any]], caught_up: bool = True
    ) -> None:
        self.legacy = legacy
        self.other = other
        self.caught_up = caught_up
        self.legacy_reads = 0
        self.other_reads = 0
        self.waited_for: list[int] = []

    def legacy_rows(self, keys: list[int]) -> tuple[dict[int, Any], int]:
        state = self.legacy[min(self.legacy_reads, len(self.legacy) - 1)]
        self.legacy_reads += 1
        return {k: state[k] for k in keys if k in state}, 100 * (self.legacy_reads + 1)

    def catch_up(self, lsn: int) -> CatchUp:
        self.waited_for.append(lsn)
        return CatchUp(lsn, self.caught_up, "" if self.caught_up else "behind")

    def other_rows(self, keys: list[int]) -> dict[int, Any]:
        state = self.other[min(self.other_reads, len(self.other) - 1)]
        self.other_reads += 1
        return {k: state[k] for k in keys if k in state}

    def run(self, scanned: dict[int, Any]) -> TableReport:
        """Re-check keys the scan (at LSN 100) saw as ``scanned`` (None: no legacy row)."""
        candidates: Candidates[int] = Candidates()
        for key, row in scanned.items():
            candidates.add(key, row, RowOutcome(Kind.DIFFERS if row else Kind.EXTRA), 100)
        table = report()
        recheck(
            candidates,
            table,
            legacy_rows=self.legacy_rows,
            catch_up=self.catch_up,
            other_rows=self.other_rows,
            compare=lambda a, b: compare_json_rows(a, b, placeholder=PLACEHOLDER),
            label=lambda k: f'{{"id":{k}}}',
        )
        return table


def test_a_key_that_agrees_once_caught_up_is_no_difference() -> None:
    sides = FakeSides([{1: {"v": 1}}], [{1: {"v": 1}}])
    table = sides.run({1: {"v": 1}})
    assert (table.equal, table.recheck_rounds, sides.waited_for) == (True, 1, [100])


def test_a_key_changed_once_during_the_round_is_settled_by_the_later_read() -> None:
    """The topic was read after the change, the scan before it."""
    sides = FakeSides([{1: {"v": 2}}], [{1: {"v": 2}}])
    assert sides.run({1: {"v": 1}}).equal


def test_a_key_that_differs_in_every_round_is_reported_with_its_comparison() -> None:
    sides = FakeSides([{1: {"v": 1}}], [{1: {"v": 9}}])
    table = sides.run({1: {"v": 1}})
    assert table.recheck_rounds == RECHECK_ROUNDS
    assert sides.waited_for == [100 * n for n in range(1, RECHECK_ROUNDS + 1)]
    assert [(d.key, d.outcome.columns) for d in table.shown] == [
        ('{"id":1}', (ColumnDifference("v", 1, 9),))
    ]


def test_missing_and_extra_keys_are_rechecked_too() -> None:
    sides = FakeSides([{1: {"v": 1}}], [{2: {"v": 2}}])
    table = sides.run({1: {"v": 1}, 2: None, 3: {"v": 3}})  # key 3 deleted since the scan
    assert dict(table.counts) == {Kind.MISSING: 1, Kind.EXTRA: 1}


def test_a_hot_key_settles_in_a_later_round() -> None:
    legacy = [{1: {"v": n}} for n in (3, 5, 6)]
    other = [{1: {"v": 2}}, {1: {"v": 4}}, {1: {"v": 6}}]  # in between, then caught up
    table = FakeSides(legacy, other).run({1: {"v": 1}})
    assert (table.equal, table.recheck_rounds) == (True, 3)


def test_a_side_that_does_not_catch_up_keeps_the_scan_outcome_and_says_so() -> None:
    sides = FakeSides([{1: {"v": 1}}], [{1: {"v": 1}}], caught_up=False)
    table = sides.run({1: {"v": 1}})
    assert table.catch_up == CatchUp(100, False, "behind")
    assert [d.outcome for d in table.shown] == [RowOutcome(Kind.DIFFERS)]
    assert (sides.other_reads, sides.legacy_reads) == (0, 0)


def test_placeholders_of_settled_keys_are_counted() -> None:
    sides = FakeSides([{1: {"v": 1, "body": "x"}}], [{1: {"v": 1, "body": PLACEHOLDER}}])
    table = sides.run({1: {"v": 1, "body": "x"}})
    assert (table.equal, dict(table.unverifiable)) == (True, {"body": 1})


def test_nothing_to_recheck_reads_nothing() -> None:
    sides = FakeSides([{}], [{}])
    table = sides.run({})
    assert (table.equal, sides.legacy_reads, sides.waited_for) == (True, 0, [])


def test_columns_on_one_side_long_values_and_odd_keys_render() -> None:
    table = report(rows=1)
    table.add_difference(
        "not json",
        RowOutcome(
            Kind.DIFFERS,
            (
                ColumnDifference("old", "x" * 100, None, only_in="legacy"),
                ColumnDifference("new", None, 3, only_in="other"),
            ),
        ),
    )
    assert table.lines()[1] == (
        f'  not json: old: only in the legacy row ("{"x" * 56}...);'
        " new: only in the compacted topic's row (3)"
    )
    assert table.to_json()["shown"][0]["key"] == "not json"
    document = VerifyReport("inv", "compacted_topic", [table]).to_json()
    assert (document["connector"], document["equal"], len(document["tables"])) == ("inv", False, 1)
