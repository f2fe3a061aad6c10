"""Framing of the streaming replication protocol's CopyData payloads. No I/O.

Once ``START_REPLICATION`` has switched the connection to COPY BOTH mode, every CopyData
message the server sends is an XLogData (``w``) or a Primary keepalive (``k``), and every
one we send is a Standby status update (``r``); see the PostgreSQL documentation,
"Streaming Replication Protocol", START_REPLICATION. This module turns those payloads into
typed messages and back. It does no I/O, reads no clock (time is passed in) and does not
look inside the WAL data: pgoutput decoding is :mod:`cdc.protocol.pgoutput`'s job.
"""

from __future__ import annotations

import struct

from cdc.errors import ProtocolError
from cdc.protocol.messages import PrimaryKeepalive, XLogData

__all__ = [
    "PG_EPOCH_UNIX_US",
    "encode_standby_status",
    "parse_copy_data",
    "pg_us_to_unix_us",
    "split_xlog_data",
    "unix_us_to_pg_us",
]

# PostgreSQL timestamps count microseconds from 2000-01-01 00:00:00 UTC, which is Unix time
# 946684800 s (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE days).
PG_EPOCH_UNIX_US = 946_684_800 * 1_000_000

# 'w': Int64 wal_start, Int64 wal_end, Int64 send_time, then the data.
_XLOG_HEADER = struct.Struct(">QQq")
_XLOG_DATA_OFFSET = 1 + _XLOG_HEADER.size
_unpack_xlog_header = _XLOG_HEADER.unpack_from

# 'k': Int64 wal_end, Int64 send_time, Byte1 reply_requested.
_KEEPALIVE = struct.Struct(">QqB")
_KEEPALIVE_SIZE = 1 + _KEEPALIVE.size
_unpack_keepalive = _KEEPALIVE.unpack_from

# 'r': Int64 written, Int64 flushed, Int64 applied, Int64 clock, Byte1 reply_requested.
_pack_standby_status = struct.Struct(">cQQQqB").pack

_XLOG_DATA = ord("w")
_KEEPALIVE_BYTE = ord("k")


def parse_copy_data(data: bytes | memoryview) -> XLogData | PrimaryKeepalive:
    """Parse one CopyData payload received during ``START_REPLICATION``.

    ``XLogData.data`` is returned as ``bytes``: the pgoutput decoder slices and decodes it
    field by field, which is faster on ``bytes`` than on a ``memoryview``, and taking the
    one unavoidable copy here means nothing downstream copies again.

    Raises:
        ProtocolError: for an unknown message byte or a truncated or overlong message;
            ``offset`` is where the bytes ran out or stopped making sense.
    """
    size = len(data)
    if size == 0:
        raise ProtocolError("empty CopyData message from the server", offset=0)
    kind = data[0]
    if kind == _XLOG_DATA:
        if size < _XLOG_DATA_OFFSET:
            raise ProtocolError(
                f"truncated XLogData message: {size} bytes, the header needs {_XLOG_DATA_OFFSET}",
                offset=size,
            )
        wal_start, wal_end, send_time = _unpack_xlog_header(data, 1)
        payload = data[_XLOG_DATA_OFFSET:]
        if isinstance(payload, memoryview):
            return XLogData(wal_start, wal_end, send_time, payload.tobytes())
        return XLogData(wal_start, wal_end, send_time, payload)
    if kind == _KEEPALIVE_BYTE:
        if size != _KEEPALIVE_SIZE:
            raise ProtocolError(
                f"primary keepalive message of {size} bytes, expected {_KEEPALIVE_SIZE}",
                offset=min(size, _KEEPALIVE_SIZE),
            )
        wal_end, send_time, reply_requested = _unpack_keepalive(data, 1)
        return PrimaryKeepalive(wal_end, send_time, reply_requested != 0)
    raise ProtocolError(
        f"unknown replication message byte {bytes([kind])!r}: expected b'w' (XLogData) "
        "or b'k' (keepalive); is the server speaking the streaming replication protocol?",
        offset=0,
    )


_unpack_wal_positions = struct.Struct(">QQ").unpack_from


def split_xlog_data(data: bytes | memoryview) -> tuple[int, int, bytes] | None:
    """The hot path of ``parse_copy_data``: an XLogData message as ``(wal_start, wal_end,
    payload)``, without building an ``XLogData``; None for anything else (a keepalive, or
    a message too short to be one), which ``parse_copy_data`` then parses or rejects."""
    if len(data) <= _XLOG_DATA_OFFSET or data[0] != _XLOG_DATA:
        return None
    wal_start, wal_end = _unpack_wal_positions(data, 1)
    payload = data[_XLOG_DATA_OFFSET:]
    if isinstance(payload, memoryview):
        return wal_start, wal_end, payload.tobytes()
    return wal_start, wal_end, payload


def encode_standby_status(
    written_lsn: int,
    flushed_lsn: int,
    applied_lsn: int,
    now_us: int,
    *,
    reply_requested: bool = False,
) -> bytes:
    """Build a Standby status update (``r``) to send as one CopyData message.

    ``flushed_lsn`` is what the server may forget: for a logical slot, it advances
    ``confirmed_flush_lsn``. Send only an LSN whose changes are durable downstream.

    Args:
        written_lsn: last WAL byte + 1 received.
        flushed_lsn: last WAL byte + 1 made durable downstream.
        applied_lsn: last WAL byte + 1 applied downstream.
        now_us: the client's clock, microseconds since 2000-01-01 UTC
            (see :func:`unix_us_to_pg_us`); passed in, never read here.
        reply_requested: ask the server to answer with a keepalive at once.

    Raises:
        ValueError: an LSN outside 0..2**64-1 or a clock outside a signed 64-bit range.
    """
    try:
        return _pack_standby_status(
            b"r", written_lsn, flushed_lsn, applied_lsn, now_us, 1 if reply_requested else 0
        )
    except struct.error as exc:
        raise ValueError(
            "standby status update out of range: LSNs must be 0..2**64-1 and the clock a "
            f"signed 64-bit count of microseconds ({exc})"
        ) from exc


def unix_us_to_pg_us(us: int) -> int:
    """Microseconds since the Unix epoch -> microseconds since 2000-01-01 UTC."""
    return us - PG_EPOCH_UNIX_US


def pg_us_to_unix_us(us: int) -> int:
    """Microseconds since 2000-01-01 UTC (a PostgreSQL timestamp) -> since the Unix epoch."""
    return us + PG_EPOCH_UNIX_US
