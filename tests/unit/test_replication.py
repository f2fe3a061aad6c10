"""Replication-protocol framing: XLogData, keepalive, standby status update, clocks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.errors import ProtocolError
from cdc.protocol.messages import PrimaryKeepalive, XLogData
from cdc.protocol.replication import (
    PG_EPOCH_UNIX_US,
    encode_standby_status,
    parse_copy_data,
    pg_us_to_unix_us,
    split_xlog_data,
    unix_us_to_pg_us,
)

from .pgoutput_encoder import encode_copy_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pgoutput"

lsns = st.integers(0, 2**64 - 1)
timestamps = st.integers(-(2**63), 2**63 - 1)
xlog_data = st.builds(XLogData, lsns, lsns, timestamps, st.binary())
keepalives = st.builds(PrimaryKeepalive, lsns, timestamps, st.booleans())


@given(st.one_of(xlog_data, keepalives))
def test_parse_inverts_encode(message: XLogData | PrimaryKeepalive) -> None:
    assert message == parse_copy_data(encode_copy_data(message))


@given(xlog_data)
def test_xlog_data_from_a_memoryview_carries_bytes(message: XLogData) -> None:
    parsed = parse_copy_data(memoryview(encode_copy_data(message)))
    assert isinstance(parsed, XLogData)
    assert type(parsed.data) is bytes
    assert message == parsed


@given(st.one_of(xlog_data, keepalives))
def test_every_truncated_header_is_rejected(message: XLogData | PrimaryKeepalive) -> None:
    encoded = encode_copy_data(message)
    header = 25 if isinstance(message, XLogData) else 18
    for length in range(header):
        with pytest.raises(ProtocolError) as info:
            parse_copy_data(encoded[:length])
        assert info.value.offset == length


@given(st.binary())
def test_random_bytes_give_a_message_or_protocol_error(data: bytes) -> None:
    error: ProtocolError | None = None
    try:
        parse_copy_data(data)
    except ProtocolError as exc:
        error = exc
    assert error is None or (error.offset is not None and 0 <= error.offset <= len(data))


def test_keepalive_with_trailing_bytes_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="keepalive message of 19 bytes") as info:
        parse_copy_data(b"k" + bytes(18))
    assert info.value.offset == 18


def test_unknown_message_byte_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="unknown replication message byte b'r'") as info:
        parse_copy_data(b"r" + bytes(33))
    assert info.value.offset == 0


def test_empty_message_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        parse_copy_data(b"")


def test_standby_status_update_layout() -> None:
    """'r', written, flushed, applied, clock, reply flag: big-endian, 34 bytes."""
    encoded = encode_standby_status(1, 2, 3, -4, reply_requested=True)
    assert b"r" + struct.pack(">QQQqB", 1, 2, 3, -4, 1) == encoded


def test_standby_status_update_does_not_ask_for_a_reply_by_default() -> None:
    assert encode_standby_status(0x16_B374D848, 0x16_B374D848, 0, 0)[-1] == 0


def test_standby_status_update_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_standby_status(-1, 0, 0, 0)


def test_pg_epoch_is_2000_01_01_utc() -> None:
    assert unix_us_to_pg_us(946_684_800_000_000) == 0
    assert pg_us_to_unix_us(0) == PG_EPOCH_UNIX_US


@given(st.integers())
def test_clock_conversions_are_inverse(us: int) -> None:
    assert us == pg_us_to_unix_us(unix_us_to_pg_us(us))


def test_golden_frames_from_postgresql_parse() -> None:
    """An XLogData and a keepalive captured from PostgreSQL 15 parse to the reviewed values."""
    expected = json.loads((FIXTURES / "expected.json").read_text())["frames"]
    xlog = parse_copy_data((FIXTURES / "frame-xlogdata.bin").read_bytes())
    assert isinstance(xlog, XLogData)
    assert expected["xlogdata"] == {
        "wal_start": xlog.wal_start,
        "wal_end": xlog.wal_end,
        "send_time": xlog.send_time,
        "data_hex": xlog.data.hex(),
    }
    keepalive = parse_copy_data((FIXTURES / "frame-keepalive.bin").read_bytes())
    assert isinstance(keepalive, PrimaryKeepalive)
    assert expected["keepalive"] == {
        "wal_end": keepalive.wal_end,
        "send_time": keepalive.send_time,
        "reply_requested": keepalive.reply_requested,
    }


@given(st.one_of(xlog_data, keepalives), st.booleans())
def test_split_xlog_data_agrees_with_parse_copy_data(
    message: XLogData | PrimaryKeepalive, as_memoryview: bool
) -> None:
    frame = encode_copy_data(message)
    data = memoryview(frame) if as_memoryview else frame
    split = split_xlog_data(data)
    if isinstance(message, XLogData) and message.data:
        assert split == (message.wal_start, message.wal_end, message.data)
        assert type(split[2]) is bytes
    else:
        assert split is None  # parse_copy_data's to handle: a keepalive or an empty XLogData


@given(st.binary(max_size=40))
def test_split_xlog_data_never_raises_and_leaves_the_rest_to_parse_copy_data(data: bytes) -> None:
    split = split_xlog_data(data)
    if split is not None:
        parsed = parse_copy_data(data)
        assert isinstance(parsed, XLogData)
        assert split == (parsed.wal_start, parsed.wal_end, parsed.data)
