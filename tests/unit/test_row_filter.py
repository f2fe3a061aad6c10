"""cdc.row_filter: what it refuses (at start, naming the setting) and the columns it
reads. Its results are tested against PostgreSQL's own WHERE in
tests/integration/test_row_filter_semantics.py."""

from __future__ import annotations

import pytest

from cdc.errors import ConfigError
from cdc.row_filter import parse_row_filter

TYPES = {"id": 23, "amount": 1700, "name": 25, "code": 1042, "ok": 16, "u": 2950, "x": 701}
INDEXES = {name: i for i, name in enumerate(TYPES)}


def parse(where: str) -> object:
    return parse_row_filter(where, TYPES, table="public.orders", indexes=INDEXES)


@pytest.mark.parametrize(
    ("where", "what"),
    [
        ("name < 'm'", "'<' on column 'name'"),
        ("country <> 'XX'::text", "':"),
        ("x = 1", "column 'x' (type OID 701)"),
        ("id = '1.5'", "'1.5' as a value of integer column 'id'"),
        ("name = 5", "'5' compared with 'name'"),
        ("ok = 1", "'1' as a boolean"),
        ("u = 'nope'", "'nope' as a uuid"),
        ("id = name", "'name' where a constant was expected"),
        ("name", "column 'name' on its own"),
        ("id IN ()", "')' where a constant was expected"),
        ("lower(name) = 'a'", "the function call lower(...)"),
        ("id = 1 AND", "the end"),
        ("amount = TRUE", "TRUE compared with column 'amount'"),
    ],
)
def test_what_cdc_cannot_evaluate_exactly_is_refused_naming_the_setting(
    where: str, what: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(where)
    message = str(info.value)
    assert message.startswith("table_options.public.orders.where: table public.orders:")
    assert what in message, message
    assert "PostgreSQL 15+" in message


def test_an_unknown_column_is_named() -> None:
    with pytest.raises(ConfigError, match="has no column 'country'"):
        parse("country = 'UK'")


def test_the_columns_it_reads_are_known() -> None:
    parsed = parse_row_filter(
        "(id > 5 AND NOT ok) OR \"name\" IN ('a', 'b') OR code IS NULL",
        TYPES,
        table="t",
        indexes=INDEXES,
    )
    assert parsed.columns == {"id", "ok", "name", "code"}


def test_unknown_is_not_true() -> None:
    parsed = parse_row_filter("id <> 5", TYPES, table="t", indexes=INDEXES)
    row: list[object] = [None] * len(TYPES)
    assert not parsed.matches(row)
    row[0] = "6"
    assert parsed.matches(row)
