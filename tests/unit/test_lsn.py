"""LSN text form: PostgreSQL's pg_lsn output, round-tripped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.lsn import MAX_LSN, format_lsn, parse_lsn


def test_formats_as_pg_lsn_does() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"


def test_parses_pg_lsn_text() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn(" 0/1528DB8 ") == 0x1528DB8


@given(st.integers(min_value=0, max_value=MAX_LSN))
def test_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


@pytest.mark.parametrize("text", ["", "16", "/1", "1/", "G/1", "1/2/3", "123456789/0", "x/y"])
def test_rejects_what_is_not_an_lsn(text: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(text)
