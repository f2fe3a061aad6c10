"""Test-only encoder: typed messages -> pgoutput and replication-protocol bytes.

The inverse of :mod:`cdc.protocol.pgoutput` and :mod:`cdc.protocol.replication`, written
separately from them (straight from "Logical Replication Message Formats") so property
tests can check ``decode(encode(m)) == m``. Also turns decoded messages into JSON-able dicts
for the golden fixtures. Never imported by ``cdc``: the daemon only decodes.
"""

from __future__ import annotations

import struct
from typing import Any

from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Begin,
    BeginPrepare,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgoutputMessage,
    Prepare,
    PrimaryKeepalive,
    Relation,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    Type,
    Update,
    XLogData,
)

__all__ = [
    "encode",
    "encode_copy_data",
    "encode_tuple",
    "message_to_json",
]


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def encode_tuple(values: TupleData) -> bytes:
    """TupleData: Int16 column count, then a kind byte (and length + bytes) per column."""
    out = bytearray(struct.pack(">H", len(values)))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, str):
            encoded = value.encode()
            out += b"t" + struct.pack(">I", len(encoded)) + encoded
        elif isinstance(value, bytes):
            out += b"b" + struct.pack(">I", len(value)) + value
        else:
            raise TypeError(f"not a TupleData value: {value!r}")
    return bytes(out)


def _xid_prefix(xid: int | None, in_stream: bool) -> bytes:
    """The leading Int32 xid that messages carry inside a streamed block, and only there."""
    if in_stream:
        if xid is None:
            raise ValueError("a message inside a streamed block needs an xid")
        return struct.pack(">I", xid)
    if xid is not None:
        raise ValueError("a message outside a streamed block carries no xid")
    return b""


def encode(msg: PgoutputMessage, *, in_stream: bool = False, protocol_version: int = 4) -> bytes:
    """Encode one pgoutput message as the server would send it in an XLogData."""
    match msg:
        case Begin():
            return b"B" + struct.pack(">QqI", msg.final_lsn, msg.commit_ts, msg.xid)
        case Commit():
            return b"C" + struct.pack(
                ">BQQq", msg.flags, msg.commit_lsn, msg.end_lsn, msg.commit_ts
            )
        case Origin():
            return b"O" + struct.pack(">Q", msg.commit_lsn) + _string(msg.name)
        case Relation():
            out = bytearray(b"R" + _xid_prefix(msg.xid, in_stream))
            out += struct.pack(">I", msg.oid) + _string(msg.namespace) + _string(msg.name)
            out += msg.replica_identity.value.encode()
            out += struct.pack(">H", len(msg.columns))
            for column in msg.columns:
                out += bytes([column.flags]) + _string(column.name)
                out += struct.pack(">Ii", column.type_oid, column.type_modifier)
            return bytes(out)
        case Type():
            return (
                b"Y"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">I", msg.oid)
                + _string(msg.namespace)
                + _string(msg.name)
            )
        case Insert():
            return (
                b"I"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">I", msg.relation.oid)
                + b"N"
                + encode_tuple(msg.new)
            )
        case Update():
            old = b""
            if msg.old_kind is not None:
                assert msg.old is not None
                old = msg.old_kind.encode() + encode_tuple(msg.old)
            return (
                b"U"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">I", msg.relation.oid)
                + old
                + b"N"
                + encode_tuple(msg.new)
            )
        case Delete():
            return (
                b"D"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">I", msg.relation.oid)
                + msg.old_kind.encode()
                + encode_tuple(msg.old)
            )
        case Truncate():
            return (
                b"T"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">IB", len(msg.relations), msg.options)
                + b"".join(struct.pack(">I", relation.oid) for relation in msg.relations)
            )
        case LogicalMessage():
            return (
                b"M"
                + _xid_prefix(msg.xid, in_stream)
                + struct.pack(">BQ", 1 if msg.transactional else 0, msg.lsn)
                + _string(msg.prefix)
                + struct.pack(">I", len(msg.content))
                + msg.content
            )
        case StreamStart():
            return b"S" + struct.pack(">IB", msg.xid, 1 if msg.first_segment else 0)
        case StreamStop():
            return b"E"
        case StreamCommit():
            return b"c" + struct.pack(
                ">IBQQq", msg.xid, msg.flags, msg.commit_lsn, msg.end_lsn, msg.commit_ts
            )
        case StreamAbort():
            out = bytearray(b"A" + struct.pack(">II", msg.xid, msg.subxid))
            if msg.abort_lsn is not None or msg.abort_ts is not None:
                if protocol_version < 4:
                    raise ValueError("abort_lsn and abort_ts need protocol version 4")
                assert msg.abort_lsn is not None
                assert msg.abort_ts is not None
                out += struct.pack(">Qq", msg.abort_lsn, msg.abort_ts)
            return bytes(out)
        case BeginPrepare():
            return (
                b"b"
                + struct.pack(">QQqI", msg.prepare_lsn, msg.end_lsn, msg.prepare_ts, msg.xid)
                + _string(msg.gid)
            )
        case Prepare() | CommitPrepared() | StreamPrepare():
            byte = {Prepare: b"P", CommitPrepared: b"K", StreamPrepare: b"p"}[type(msg)]
            lsn = msg.commit_lsn if isinstance(msg, CommitPrepared) else msg.prepare_lsn
            ts = msg.commit_ts if isinstance(msg, CommitPrepared) else msg.prepare_ts
            return (
                byte
                + struct.pack(">BQQqI", msg.flags, lsn, msg.end_lsn, ts, msg.xid)
                + _string(msg.gid)
            )
        case RollbackPrepared():
            return (
                b"r"
                + struct.pack(
                    ">BQQqqI",
                    msg.flags,
                    msg.prepare_end_lsn,
                    msg.rollback_end_lsn,
                    msg.prepare_ts,
                    msg.rollback_ts,
                    msg.xid,
                )
                + _string(msg.gid)
            )
    raise TypeError(f"not a pgoutput message: {msg!r}")  # pragma: no cover


def encode_copy_data(msg: XLogData | PrimaryKeepalive) -> bytes:
    """A CopyData payload of the streaming replication protocol: ``w`` or ``k``."""
    if isinstance(msg, XLogData):
        return b"w" + struct.pack(">QQq", msg.wal_start, msg.wal_end, msg.send_time) + msg.data
    return b"k" + struct.pack(">QqB", msg.wal_end, msg.send_time, 1 if msg.reply_requested else 0)


def _value_to_json(value: object) -> Any:
    if value is UNCHANGED_TOAST:
        return {"unchanged_toast": True}
    if isinstance(value, bytes):
        return {"bytes_hex": value.hex()}
    if isinstance(value, tuple):
        return [_value_to_json(item) for item in value]
    return value


def message_to_json(msg: PgoutputMessage) -> dict[str, Any]:
    """A decoded message as a JSON-able dict: its type name and fields.

    Relations inside row changes are named ``"namespace.name"``: their full shape is in the
    Relation message that precedes them. Replica identity is its one-letter code.
    """
    fields: dict[str, Any] = {}
    for name in type(msg).__slots__:
        value = getattr(msg, name)
        if isinstance(value, Relation):
            fields[name] = f"{value.namespace}.{value.name}"
        elif name == "relations":
            fields[name] = [f"{r.namespace}.{r.name}" for r in value]
        elif name == "columns":
            fields[name] = [
                {
                    "flags": c.flags,
                    "name": c.name,
                    "type_oid": c.type_oid,
                    "type_modifier": c.type_modifier,
                }
                for c in value
            ]
        elif name == "replica_identity":
            fields[name] = value.value
        else:
            fields[name] = _value_to_json(value)
    return {"type": type(msg).__name__, **fields}
