"""Typed messages of the streaming replication protocol and of pgoutput. No I/O.

Names follow the PostgreSQL documentation, "Streaming Replication Protocol" and
"Logical Replication Message Formats" (protocol versions 1 to 4). Every class is a frozen,
slotted dataclass: messages are values, created once per WAL record on the hot path.

A column value in a ``TupleData`` is one of:
- ``str``: the text output form of the value (kind ``t``), the only kind pgoutput sends
  unless ``binary 'true'`` is requested;
- ``bytes``: the binary send form (kind ``b``);
- ``None``: SQL NULL (kind ``n``);
- ``UNCHANGED_TOAST``: an unchanged TOASTed value that the server did not send (kind ``u``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "BeginPrepare",
    "Column",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Origin",
    "PgoutputMessage",
    "Prepare",
    "PrimaryKeepalive",
    "Relation",
    "ReplicaIdentity",
    "ReplicationMessage",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "TupleValue",
    "Type",
    "UnchangedToast",
    "Update",
    "XLogData",
]


# --- Streaming replication protocol (CopyData payloads) ---------------------------------


@dataclass(frozen=True, slots=True)
class XLogData:
    """``w``: a chunk of WAL; for logical replication, one pgoutput message in ``data``."""

    wal_start: int
    wal_end: int
    send_time: int  # microseconds since 2000-01-01 00:00:00 UTC, the server's clock
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PrimaryKeepalive:
    """``k``: the server's heartbeat; ``reply_requested`` means answer now or be dropped."""

    wal_end: int
    send_time: int
    reply_requested: bool


ReplicationMessage: TypeAlias = XLogData | PrimaryKeepalive


# --- pgoutput ---------------------------------------------------------------------------


class UnchangedToast(enum.Enum):
    """Marker for an unchanged TOASTed column the server did not send (tuple kind ``u``)."""

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast.UNCHANGED_TOAST

TupleValue: TypeAlias = str | bytes | UnchangedToast | None
TupleData: TypeAlias = tuple[TupleValue, ...]


class ReplicaIdentity(enum.Enum):
    """``pg_class.relreplident``: which old values UPDATE and DELETE carry."""

    DEFAULT = "d"  # the primary key, if there is one
    NOTHING = "n"
    FULL = "f"
    INDEX = "i"  # REPLICA IDENTITY USING INDEX


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a Relation message."""

    flags: int  # 1: part of the replica identity (the key)
    name: str
    type_oid: int
    type_modifier: int  # atttypmod: -1 when none, e.g. numeric(12,2) -> ((12 << 16) | 2) + 4

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Begin:
    """``B``: a transaction starts; ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_ts: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """``C``: the transaction ends; confirming ``end_lsn`` tells the server it is done."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    """``O``: the transaction came from another node through replication origin ``name``."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Relation:
    """``R``: the shape of a table, sent before its first change and after every change of it.

    ``xid`` is set only inside a streamed transaction (protocol 2+).
    """

    xid: int | None
    oid: int
    namespace: str
    name: str
    replica_identity: ReplicaIdentity
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """``Y``: a non-built-in data type used by a following Relation's column."""

    xid: int | None
    oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    """``I``: a new row. ``relation`` is resolved from the decoder's relation cache.

    Unlike the other messages, the three row changes are not frozen: one is built per
    change, and a frozen dataclass's ``__init__`` costs ~0.5 us more (an
    ``object.__setattr__`` per field). Nothing changes a message once decoded.
    """

    xid: int | None
    relation: Relation
    new: TupleData


@dataclass(slots=True)
class Update:
    """``U``: a changed row (not frozen: see ``Insert``).

    ``old_kind`` is ``"K"`` when ``old`` holds only the replica-identity columns (the key
    changed), ``"O"`` when it holds the whole old row (REPLICA IDENTITY FULL), and ``None``
    when the server sent no old values (the key did not change). Columns absent from a
    ``K`` tuple are ``None`` in ``old``.
    """

    xid: int | None
    relation: Relation
    old_kind: str | None
    old: TupleData | None
    new: TupleData


@dataclass(slots=True)
class Delete:
    """``D``: a removed row; ``old`` holds the key (``"K"``) or the whole row (``"O"``).
    Not frozen: see ``Insert``."""

    xid: int | None
    relation: Relation
    old_kind: str
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    """``T``: TRUNCATE of one or more tables. ``options``: 1 CASCADE, 2 RESTART IDENTITY."""

    xid: int | None
    options: int
    relations: tuple[Relation, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``M``: ``pg_logical_emit_message``; transactional ones arrive inside Begin/Commit."""

    xid: int | None
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``S``: a block of an in-progress transaction follows (protocol 2+, ``streaming``)."""

    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    """``E``: the current block of a streamed transaction ends."""


@dataclass(frozen=True, slots=True)
class StreamCommit:
    """``c``: a streamed transaction committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    """``A``: a streamed (sub)transaction aborted; the last two fields come with protocol 4."""

    xid: int
    subxid: int
    abort_lsn: int | None = None
    abort_ts: int | None = None


@dataclass(frozen=True, slots=True)
class BeginPrepare:
    """``b``: a two-phase transaction's PREPARE TRANSACTION starts (protocol 3+)."""

    prepare_lsn: int
    end_lsn: int
    prepare_ts: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class Prepare:
    """``P``: PREPARE TRANSACTION done."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_ts: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class CommitPrepared:
    """``K``: COMMIT PREPARED."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class RollbackPrepared:
    """``r``: ROLLBACK PREPARED."""

    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_ts: int
    rollback_ts: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class StreamPrepare:
    """``p``: a streamed two-phase transaction prepared."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_ts: int
    xid: int
    gid: str


PgoutputMessage: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
    | BeginPrepare
    | Prepare
    | CommitPrepared
    | RollbackPrepared
    | StreamPrepare
)
