"""Decode pgoutput messages: one XLogData payload in, one typed message out. No I/O.

The wire format is the PostgreSQL documentation's "Logical Replication Message Formats",
protocol versions 1 to 4 (PostgreSQL 10 to 17). The decoder keeps only the state the format
demands: the relation cache (Insert/Update/Delete/Truncate name a table by OID, described
earlier by a Relation message), the type cache (Type messages) and whether it is inside a
streamed block (StreamStart..StreamStop), where most messages carry an extra leading xid.

This module does no I/O, no logging and no value conversion: column values stay the text
(or binary) form the server sent; :mod:`cdc.protocol.types` turns them into JSON values.

Speed: this is the hot path, run once per changed row. It reads ``bytes`` (a
``memoryview`` is copied once, which is cheaper than slicing and decoding through it) with
precompiled ``struct`` unpackers and does no bounds checks on the way: running off the end
raises ``struct.error`` or ``IndexError``, bad UTF-8 raises ``UnicodeDecodeError``, and
:meth:`PgoutputDecoder.decode` turns all of them into :class:`ProtocolError` at its
boundary. A final length check rejects short values and trailing garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import TracebackType
from typing import Final

from cdc import native
from cdc.errors import ProtocolError
from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Begin,
    BeginPrepare,
    Column,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgoutputMessage,
    Prepare,
    Relation,
    ReplicaIdentity,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    TupleValue,
    Type,
    Update,
)

__all__ = ["MAX_PROTOCOL_VERSION", "MIN_PROTOCOL_VERSION", "PgoutputDecoder"]

MIN_PROTOCOL_VERSION: Final = 1  # PostgreSQL 10
MAX_PROTOCOL_VERSION: Final = 4  # PostgreSQL 16+: parallel streaming

# Precompiled unpackers: one C call per group of fixed fields.
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from
_unpack_u32_u8 = struct.Struct(">IB").unpack_from  # Truncate: relation count + options
_unpack_u32_u32 = struct.Struct(">II").unpack_from  # xid + oid; StreamAbort xid + subxid
_unpack_u8_u64 = struct.Struct(">BQ").unpack_from  # Message flags + lsn
_unpack_column = struct.Struct(">Ii").unpack_from  # type oid + atttypmod

# Fixed fields of the other messages, after the message byte.
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_STREAM_START = struct.Struct(">IB")
_STREAM_COMMIT = struct.Struct(">IBQQq")
_STREAM_ABORT = struct.Struct(">II")
_STREAM_ABORT_V4 = struct.Struct(">IIQq")
_BEGIN_PREPARE = struct.Struct(">QQqI")  # then gid
_PREPARE = struct.Struct(">BQQqI")  # Prepare, Commit Prepared, Stream Prepare; then gid
_ROLLBACK_PREPARED = struct.Struct(">BQQqqI")  # then gid

_unpack_begin = _BEGIN.unpack_from
_unpack_commit = _COMMIT.unpack_from
_BEGIN_SIZE = 1 + _BEGIN.size
_COMMIT_SIZE = 1 + _COMMIT.size

# Message bytes, as ints because indexing bytes gives ints.
_INSERT = ord("I")
_UPDATE = ord("U")
_DELETE = ord("D")
_BEGIN_BYTE = ord("B")
_COMMIT_BYTE = ord("C")
_NEW = ord("N")
_KEY = ord("K")
_OLD = ord("O")
_TEXT = ord("t")
_NULL = ord("n")
_TOAST = ord("u")
_BINARY = ord("b")

_LOOKUP_ERRORS = (struct.error, IndexError, ValueError)  # ValueError: also bad UTF-8


def _read_tuple_py(data: bytes, pos: int) -> tuple[TupleData, int]:
    """Read a TupleData at ``pos``; return it and the offset after it.

    A text value longer than the message yields a short slice and an end offset past the
    message: the caller's final length check rejects it (cheaper than checking each value).
    The reference for the compiled ``decode_tuple``, and the path of every failure.
    """
    (ncols,) = _unpack_u16(data, pos)
    pos += 2
    values: list[TupleValue] = [None] * ncols
    for i in range(ncols):
        kind = data[pos]
        if kind == _TEXT:
            (length,) = _unpack_u32(data, pos + 1)
            pos += 5
            end = pos + length
            values[i] = data[pos:end].decode()
            pos = end
        elif kind == _NULL:
            pos += 1
        elif kind == _TOAST:
            values[i] = UNCHANGED_TOAST
            pos += 1
        elif kind == _BINARY:
            (length,) = _unpack_u32(data, pos + 1)
            pos += 5
            end = pos + length
            values[i] = data[pos:end]
            pos = end
        else:
            raise ProtocolError(
                f"unknown TupleData column kind {bytes([kind])!r} in column {i + 1}: "
                "expected b'n', b'u', b't' or b'b'",
                offset=pos,
            )
    return tuple(values), pos


def _read_tuple_native(data: bytes, pos: int) -> tuple[TupleData, int]:
    """``_read_tuple_py`` by the compiled core (``cdc.native``), equal on every input.

    On any failure (running off the end, bad UTF-8, an unknown kind) the Python reader
    runs again on the same bytes, so the exception, its message and the offset that
    ``decode`` reports from the traceback are exactly the Python path's; failures are
    rare, so reading twice costs nothing that matters.
    """
    try:
        return _native_decode_tuple(data, pos, UNCHANGED_TOAST)  # type: ignore[misc]
    except _NATIVE_TUPLE_ERRORS:
        pass
    return _read_tuple_py(data, pos)


_native_decode_tuple: Final = native.decode_tuple
_NATIVE_TUPLE_ERRORS: Final = (ValueError, IndexError)  # UnicodeDecodeError is a ValueError
_read_tuple: Final = _read_tuple_py if _native_decode_tuple is None else _read_tuple_native


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 String at ``pos``; ValueError if it has no NUL."""
    end = data.index(b"\0", pos)
    return data[pos:end].decode(), end + 1


def _check_end(data: bytes, pos: int, what: str) -> None:
    if pos != len(data):
        if pos > len(data):
            raise ProtocolError(f"truncated pgoutput {what} message", offset=len(data))
        raise ProtocolError(
            f"{len(data) - pos} bytes of trailing garbage after a pgoutput {what} message",
            offset=pos,
        )


def _failure_offset(tb: TracebackType | None, size: int) -> int:
    """Where a decode failed: the ``pos`` of this module's innermost frame, within 0..size.

    Reading it from the traceback costs nothing on the success path, unlike keeping the
    position in an attribute as we go. A frame without ``pos`` failed on the fixed fields
    right after the message byte, at offset 1.
    """
    offset = 1
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals is _MODULE_GLOBALS:
            pos = frame.f_locals.get("pos")
            if isinstance(pos, int):
                offset = pos
        tb = tb.tb_next
    return min(offset, size)


_MODULE_GLOBALS: Final = globals()


class PgoutputDecoder:
    """Turn pgoutput messages into typed messages, keeping the relation and type caches.

    Use one decoder per replication connection: the caches and the streamed-block state
    belong to one conversation, and the server resends Relation messages on reconnect.
    """

    __slots__ = ("_in_stream", "protocol_version", "relations", "types")

    def __init__(self, protocol_version: int = 1) -> None:
        """
        Args:
            protocol_version: the ``proto_version`` given to START_REPLICATION. It decides
                which messages may arrive (streaming from 2, two-phase from 3) and whether a
                Stream Abort may carry ``abort_lsn``/``abort_ts`` (4, parallel streaming).
        """
        if not MIN_PROTOCOL_VERSION <= protocol_version <= MAX_PROTOCOL_VERSION:
            raise ValueError(
                f"pgoutput protocol version {protocol_version} is not supported: use "
                f"{MIN_PROTOCOL_VERSION} to {MAX_PROTOCOL_VERSION}"
            )
        self.protocol_version = protocol_version
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, Type] = {}
        self._in_stream = False

    @property
    def in_stream(self) -> bool:
        """True between a StreamStart and its StreamStop."""
        return self._in_stream

    def decode(self, data: bytes | memoryview) -> PgoutputMessage:
        """Decode one complete pgoutput message (the payload of one XLogData).

        Raises:
            ProtocolError: the bytes are not a valid pgoutput message for this protocol
                version and decoder state; ``offset`` points at the field that failed.
                No other exception escapes.
        """
        if type(data) is not bytes:
            data = bytes(data)
        try:
            kind = data[0]
            # Ordered by frequency: row changes, then transaction boundaries.
            if kind == _INSERT:
                return self._decode_insert(data)
            if kind == _UPDATE:
                return self._decode_update(data)
            if kind == _DELETE:
                return self._decode_delete(data)
            if kind == _BEGIN_BYTE:
                if len(data) != _BEGIN_SIZE:
                    _check_end(data, _BEGIN_SIZE, "Begin")
                return Begin(*_unpack_begin(data, 1))
            if kind == _COMMIT_BYTE:
                if len(data) != _COMMIT_SIZE:
                    _check_end(data, _COMMIT_SIZE, "Commit")
                return Commit(*_unpack_commit(data, 1))
            return self._decode_rare(kind, data)
        except _LOOKUP_ERRORS as exc:
            if not data:
                raise ProtocolError("empty pgoutput message", offset=0) from exc
            raise ProtocolError(
                f"malformed pgoutput {_NAMES.get(data[0], 'unknown')} message: {exc}",
                offset=_failure_offset(exc.__traceback__, len(data)),
            ) from exc

    # --- row changes ----------------------------------------------------------------------

    def _decode_insert(self, data: bytes) -> Insert:
        if self._in_stream:
            xid, oid = _unpack_u32_u32(data, 1)
            pos = 9
        else:
            xid = None
            (oid,) = _unpack_u32(data, 1)
            pos = 5
        relation = self.relations.get(oid)
        if relation is None:
            raise _unknown_relation(oid, pos - 4)
        if data[pos] != _NEW:
            raise ProtocolError(
                f"Insert without a new tuple: {data[pos : pos + 1]!r} instead of b'N'",
                offset=pos,
            )
        new, pos = _read_tuple(data, pos + 1)
        if pos != len(data):
            _check_end(data, pos, "Insert")
        if len(new) != len(relation.columns):
            raise _column_count_error(relation, len(new))
        return Insert(xid, relation, new)

    def _decode_update(self, data: bytes) -> Update:
        if self._in_stream:
            xid, oid = _unpack_u32_u32(data, 1)
            pos = 9
        else:
            xid = None
            (oid,) = _unpack_u32(data, 1)
            pos = 5
        relation = self.relations.get(oid)
        if relation is None:
            raise _unknown_relation(oid, pos - 4)
        tag = data[pos]
        old_kind: str | None = None
        old: TupleData | None = None
        if tag == _KEY:
            old_kind = "K"
        elif tag == _OLD:
            old_kind = "O"
        if old_kind is not None:
            old, pos = _read_tuple(data, pos + 1)
            if len(old) != len(relation.columns):
                raise _column_count_error(relation, len(old))
            tag = data[pos]
        if tag != _NEW:
            raise ProtocolError(
                f"Update without a new tuple: {bytes([tag])!r} instead of b'N'", offset=pos
            )
        new, pos = _read_tuple(data, pos + 1)
        if pos != len(data):
            _check_end(data, pos, "Update")
        if len(new) != len(relation.columns):
            raise _column_count_error(relation, len(new))
        return Update(xid, relation, old_kind, old, new)

    def _decode_delete(self, data: bytes) -> Delete:
        if self._in_stream:
            xid, oid = _unpack_u32_u32(data, 1)
            pos = 9
        else:
            xid = None
            (oid,) = _unpack_u32(data, 1)
            pos = 5
        relation = self.relations.get(oid)
        if relation is None:
            raise _unknown_relation(oid, pos - 4)
        tag = data[pos]
        if tag == _KEY:
            old_kind = "K"
        elif tag == _OLD:
            old_kind = "O"
        else:
            raise ProtocolError(
                f"Delete without an old tuple: {bytes([tag])!r} instead of b'K' or b'O'",
                offset=pos,
            )
        old, pos = _read_tuple(data, pos + 1)
        if pos != len(data):
            _check_end(data, pos, "Delete")
        if len(old) != len(relation.columns):
            raise _column_count_error(relation, len(old))
        return Delete(xid, relation, old_kind, old)

    # --- everything else: rare, so clarity first ------------------------------------------

    def _decode_rare(self, kind: int, data: bytes) -> PgoutputMessage:
        handler = _RARE.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown pgoutput message byte {bytes([kind])!r}", offset=0)
        min_version = _MIN_VERSION.get(kind, 1)
        if self.protocol_version < min_version:
            raise ProtocolError(
                f"pgoutput {_NAMES[kind]} message needs protocol version {min_version}, "
                f"but this connection uses {self.protocol_version}",
                offset=0,
            )
        return handler(self, data)

    def _stream_xid(self, data: bytes) -> tuple[int | None, int]:
        """The leading xid of a message inside a streamed block, and where the rest starts."""
        if self._in_stream:
            return _unpack_u32(data, 1)[0], 5
        return None, 1

    def _decode_relation(self, data: bytes) -> Relation:
        xid, pos = self._stream_xid(data)
        (oid,) = _unpack_u32(data, pos)
        namespace, pos = _read_string(data, pos + 4)
        name, pos = _read_string(data, pos)
        replica_identity = ReplicaIdentity(chr(data[pos]))
        (ncols,) = _unpack_u16(data, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = data[pos]
            column_name, pos = _read_string(data, pos + 1)
            type_oid, type_modifier = _unpack_column(data, pos)
            pos += 8
            columns.append(Column(flags, column_name, type_oid, type_modifier))
        _check_end(data, pos, "Relation")
        relation = Relation(xid, oid, namespace, name, replica_identity, tuple(columns))
        self.relations[oid] = relation
        return relation

    def _decode_type(self, data: bytes) -> Type:
        xid, pos = self._stream_xid(data)
        (oid,) = _unpack_u32(data, pos)
        namespace, pos = _read_string(data, pos + 4)
        name, pos = _read_string(data, pos)
        _check_end(data, pos, "Type")
        type_ = Type(xid, oid, namespace, name)
        self.types[oid] = type_
        return type_

    def _decode_truncate(self, data: bytes) -> Truncate:
        xid, pos = self._stream_xid(data)
        nrelations, options = _unpack_u32_u8(data, pos)
        pos += 5
        _check_end(data, pos + 4 * nrelations, "Truncate")
        oids = struct.unpack_from(f">{nrelations}I", data, pos)
        relations = []
        for i, oid in enumerate(oids):
            relation = self.relations.get(oid)
            if relation is None:
                raise _unknown_relation(oid, pos + 4 * i)
            relations.append(relation)
        return Truncate(xid, options, tuple(relations))

    def _decode_message(self, data: bytes) -> LogicalMessage:
        xid, pos = self._stream_xid(data)
        flags, lsn = _unpack_u8_u64(data, pos)
        prefix, pos = _read_string(data, pos + 9)
        (length,) = _unpack_u32(data, pos)
        pos += 4
        _check_end(data, pos + length, "Message")
        return LogicalMessage(xid, bool(flags & 1), lsn, prefix, data[pos:])

    def _decode_origin(self, data: bytes) -> Origin:
        (commit_lsn,) = _unpack_u64(data, 1)
        name, pos = _read_string(data, 9)
        _check_end(data, pos, "Origin")
        return Origin(commit_lsn, name)

    def _decode_stream_start(self, data: bytes) -> StreamStart:
        if self._in_stream:
            raise ProtocolError(
                "Stream Start inside a streamed block: the previous block had no Stream Stop",
                offset=0,
            )
        _check_end(data, 1 + _STREAM_START.size, "Stream Start")
        xid, first_segment = _STREAM_START.unpack_from(data, 1)
        self._in_stream = True
        return StreamStart(xid, first_segment != 0)

    def _decode_stream_stop(self, data: bytes) -> StreamStop:
        if not self._in_stream:
            raise ProtocolError("Stream Stop outside a streamed block", offset=0)
        _check_end(data, 1, "Stream Stop")
        self._in_stream = False
        return StreamStop()

    def _decode_stream_commit(self, data: bytes) -> StreamCommit:
        _check_end(data, 1 + _STREAM_COMMIT.size, "Stream Commit")
        return StreamCommit(*_STREAM_COMMIT.unpack_from(data, 1))

    def _decode_stream_abort(self, data: bytes) -> StreamAbort:
        # abort_lsn and abort_ts are sent only with streaming = parallel, which needs
        # protocol 4; a protocol 4 connection with streaming = on omits them. The message
        # length tells which form this is.
        if self.protocol_version >= 4 and len(data) == 1 + _STREAM_ABORT_V4.size:
            return StreamAbort(*_STREAM_ABORT_V4.unpack_from(data, 1))
        _check_end(data, 1 + _STREAM_ABORT.size, "Stream Abort")
        return StreamAbort(*_STREAM_ABORT.unpack_from(data, 1))

    def _decode_begin_prepare(self, data: bytes) -> BeginPrepare:
        prepare_lsn, end_lsn, prepare_ts, xid = _BEGIN_PREPARE.unpack_from(data, 1)
        gid, pos = _read_string(data, 1 + _BEGIN_PREPARE.size)
        _check_end(data, pos, "Begin Prepare")
        return BeginPrepare(prepare_lsn, end_lsn, prepare_ts, xid, gid)

    def _decode_prepare(self, data: bytes) -> Prepare:
        flags, lsn, end_lsn, ts, xid = _PREPARE.unpack_from(data, 1)
        gid, pos = _read_string(data, 1 + _PREPARE.size)
        _check_end(data, pos, "Prepare")
        return Prepare(flags, lsn, end_lsn, ts, xid, gid)

    def _decode_commit_prepared(self, data: bytes) -> CommitPrepared:
        flags, lsn, end_lsn, ts, xid = _PREPARE.unpack_from(data, 1)
        gid, pos = _read_string(data, 1 + _PREPARE.size)
        _check_end(data, pos, "Commit Prepared")
        return CommitPrepared(flags, lsn, end_lsn, ts, xid, gid)

    def _decode_rollback_prepared(self, data: bytes) -> RollbackPrepared:
        flags, prepare_end_lsn, rollback_end_lsn, prepare_ts, rollback_ts, xid = (
            _ROLLBACK_PREPARED.unpack_from(data, 1)
        )
        gid, pos = _read_string(data, 1 + _ROLLBACK_PREPARED.size)
        _check_end(data, pos, "Rollback Prepared")
        return RollbackPrepared(
            flags, prepare_end_lsn, rollback_end_lsn, prepare_ts, rollback_ts, xid, gid
        )

    def _decode_stream_prepare(self, data: bytes) -> StreamPrepare:
        flags, lsn, end_lsn, ts, xid = _PREPARE.unpack_from(data, 1)
        gid, pos = _read_string(data, 1 + _PREPARE.size)
        _check_end(data, pos, "Stream Prepare")
        return StreamPrepare(flags, lsn, end_lsn, ts, xid, gid)


def _unknown_relation(oid: int, offset: int) -> ProtocolError:
    return ProtocolError(
        f"change for unknown relation OID {oid}: no Relation message for it was seen on "
        "this connection (a decoder must live as long as its replication connection)",
        offset=offset,
    )


def _column_count_error(relation: Relation, ncols: int) -> ProtocolError:
    return ProtocolError(
        f"tuple of {ncols} columns for {relation.namespace}.{relation.name} "
        f"(OID {relation.oid}), whose Relation message has {len(relation.columns)}"
    )


_Handler = Callable[[PgoutputDecoder, bytes], PgoutputMessage]

_RARE: Final[dict[int, _Handler]] = {
    ord("R"): PgoutputDecoder._decode_relation,
    ord("Y"): PgoutputDecoder._decode_type,
    ord("T"): PgoutputDecoder._decode_truncate,
    ord("M"): PgoutputDecoder._decode_message,
    ord("O"): PgoutputDecoder._decode_origin,
    ord("S"): PgoutputDecoder._decode_stream_start,
    ord("E"): PgoutputDecoder._decode_stream_stop,
    ord("c"): PgoutputDecoder._decode_stream_commit,
    ord("A"): PgoutputDecoder._decode_stream_abort,
    ord("b"): PgoutputDecoder._decode_begin_prepare,
    ord("P"): PgoutputDecoder._decode_prepare,
    ord("K"): PgoutputDecoder._decode_commit_prepared,
    ord("r"): PgoutputDecoder._decode_rollback_prepared,
    ord("p"): PgoutputDecoder._decode_stream_prepare,
}

# Protocol version that introduced each message (docs: "available since protocol version").
_MIN_VERSION: Final = {
    ord("S"): 2,
    ord("E"): 2,
    ord("c"): 2,
    ord("A"): 2,
    ord("b"): 3,
    ord("P"): 3,
    ord("K"): 3,
    ord("r"): 3,
    ord("p"): 3,
}

_NAMES: Final = {
    ord("B"): "Begin",
    ord("C"): "Commit",
    ord("I"): "Insert",
    ord("U"): "Update",
    ord("D"): "Delete",
    ord("R"): "Relation",
    ord("Y"): "Type",
    ord("T"): "Truncate",
    ord("M"): "Message",
    ord("O"): "Origin",
    ord("S"): "Stream Start",
    ord("E"): "Stream Stop",
    ord("c"): "Stream Commit",
    ord("A"): "Stream Abort",
    ord("b"): "Begin Prepare",
    ord("P"): "Prepare",
    ord("K"): "Commit Prepared",
    ord("r"): "Rollback Prepared",
    ord("p"): "Stream Prepare",
}
