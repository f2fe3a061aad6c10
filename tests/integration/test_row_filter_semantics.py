"""cdc's own row-filter evaluation (cdc.row_filter) against PostgreSQL's ``WHERE``: for
random rows and random filters of the supported form, the rows it keeps are exactly the
rows PostgreSQL selects. The values are read as COPY writes them, which is the text form
pgoutput sends (each type's output function)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.row_filter import parse_row_filter
from tests.integration.helpers import scratch_database

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE t (
  id int PRIMARY KEY, i int, b bigint, n numeric, s text, v varchar(10), c char(4),
  f boolean, u uuid
)
"""
COLUMNS = {"i": 23, "b": 20, "n": 1700, "s": 25, "v": 1043, "c": 1042, "f": 16, "u": 2950}
NAMES = ["id", *COLUMNS]
TYPES = {"id": 23, **COLUMNS}
INDEXES = {name: i for i, name in enumerate(NAMES)}
UUIDS = [
    "00000000-0000-0000-0000-000000000001",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
]
# SQL constants per column, as a user would write them.
CONSTANTS: dict[str, list[str]] = {
    "i": ["0", "1", "-1", "2", "1.5", "'1'", "100000000000"],
    "b": ["0", "3", "-3", "'2'", "2.0"],
    "n": ["0", "1.5", "1.50", "-2", "'NaN'", "'Infinity'", "1e1", "'-Infinity'"],
    "s": ["''", "'a'", "'ab'", "'a b'", "'A'", "'it''s'"],
    "v": ["'a'", "'ab'", "'ab '"],
    "c": ["'ab'", "'ab  '", "'x'", "''"],
    "f": ["true", "false", "'t'", "'no'"],
    "u": [*(f"'{u}'" for u in UUIDS), f"'{UUIDS[1].upper()}'", "'{" + UUIDS[0] + "}'"],
}
ORDERED = {"i", "b", "n"}
VALUES: dict[str, list[Any]] = {
    "i": [None, 0, 1, -1, 2],
    "b": [None, 0, 3, -3, 2],
    "n": [None, "0", "1.5", "-2", "NaN", "Infinity", "10", "-Infinity"],
    "s": [None, "", "a", "ab", "a b", "A", "it's"],
    "v": [None, "a", "ab", "ab "],
    "c": [None, "ab", "x", ""],
    "f": [None, True, False],
    "u": [None, *UUIDS],
}


def _comparison(draw: st.DrawFn) -> str:
    column = draw(st.sampled_from(sorted(COLUMNS)))
    kind = draw(st.sampled_from(["cmp", "null", "in"] + (["bare"] if column == "f" else [])))
    if kind == "null":
        return f"{column} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if kind == "bare":
        return column
    constants = CONSTANTS[column]
    if kind == "in":
        chosen = draw(st.lists(st.sampled_from([*constants, "NULL"]), min_size=1, max_size=3))
        return f"{column} {draw(st.sampled_from(['', 'NOT ']))}IN ({', '.join(chosen)})"
    ops = ["=", "<>", "!="] + (["<", "<=", ">", ">="] if column in ORDERED else [])
    op = draw(st.sampled_from(ops))
    constant = draw(st.sampled_from(constants))
    if draw(st.booleans()):
        flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        return f"{constant} {flipped} {column}"
    return f"{column} {op} {constant}"


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return _comparison(draw)
    how = draw(st.sampled_from(["and", "or", "not"]))
    if how == "not":
        return f"NOT ({draw(filters(depth + 1))})"
    return f"({draw(filters(depth + 1))}) {how.upper()} ({draw(filters(depth + 1))})"


rows = st.lists(
    st.fixed_dictionaries({c: st.sampled_from(v) for c, v in VALUES.items()}),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def conn(postgres_server: Any) -> Iterator[psycopg.Connection[Any]]:
    with (
        scratch_database(postgres_server, "rowfilter", SCHEMA) as (_name, dsn),
        psycopg.connect(dsn, autocommit=True) as connection,
    ):
        yield connection


def _copy_rows(conn: psycopg.Connection[Any]) -> list[list[str | None]]:
    data = bytearray()
    with conn.cursor().copy("COPY t TO STDOUT") as copy:
        for chunk in copy:
            data += chunk
    return [
        [None if field == "\\N" else field for field in line.split("\t")]
        for line in data.decode().splitlines()
    ]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(where=filters(), table=rows)
def test_cdc_keeps_exactly_the_rows_postgresql_selects(
    conn: psycopg.Connection[Any], where: str, table: list[dict[str, Any]]
) -> None:
    conn.execute("TRUNCATE t")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO t VALUES (%s, %s, %s, %s::numeric, %s, %s, %s, %s, %s::uuid)",
            [(i, *(row[c] for c in COLUMNS)) for i, row in enumerate(table)],
        )
    selected = {r[0] for r in conn.execute(f"SELECT id FROM t WHERE {where}").fetchall()}
    parsed = parse_row_filter(where, TYPES, table="public.t", indexes=INDEXES)
    kept = {int(str(values[0])) for values in _copy_rows(conn) if parsed.matches(values)}
    assert kept == selected, where
