"""Turn pgoutput row changes into Kafka records: Debezium's envelope and the compacted row.

The one job: from one Insert, Update, Delete or Truncate (and the transaction it belongs
to), build the bytes of every Kafka message it produces. No I/O, no logging, no clock
(processing time comes in as ``now_us``), no Kafka client.

Each table has two topics.

Retention topic (every change, in Debezium's PostgreSQL connector format as written by
JsonConverter with ``schemas.enable=false``, so Debezium consumers read it unchanged):

- key: the key columns as a JSON object, ``{"id":1}``; ``null`` (no key) when the table
  has no key columns;
- value::

    {"before": {...} | null,
     "after": {...} | null,
     "source": {"version": "<cdc version>", "connector": "postgresql",
                "name": "<connector name>", "ts_ms": <commit time, ms>,
                "snapshot": "false", "db": "<database>",
                "sequence": "[\\"<last commit LSN>\\",\\"<LSN>\\"]",
                "ts_us": <commit time, us>, "ts_ns": <commit time, ns>,
                "schema": "<schema>", "table": "<table>", "txId": <xid>,
                "lsn": <LSN of the change>, "xmin": null, "origin": null,
                "origin_lsn": null},
     "transaction": null | {"id": "<xid>:<commit LSN>", "total_order": n,
                            "data_collection_order": m},
     "op": "c" | "u" | "d" | "t",
     "ts_ms": <processing time, ms>, "ts_us": ..., "ts_ns": ...}

  LSNs in ``sequence`` are decimal strings; the first is ``null`` when the previous
  commit's LSN is unknown, as in Debezium. Keys appear in this order.

Compacted topic (the latest row per key, for consumers that want a table, not a log):
the same key bytes; the value is the ``after`` row as a flat JSON object for inserts and
updates, and a tombstone (no value) for deletes. Tables without key columns have no
compacted records, since Kafka cannot compact unkeyed messages.

Per change:

- Insert: ``op "c"``, ``before`` null.
- Update: ``op "u"``; ``before`` is the old row when the server sent one (REPLICA
  IDENTITY FULL: the whole row; the key columns with the others ``null`` when the identity
  key was sent), otherwise ``null`` as in Debezium. When the key changed, like Debezium:
  a ``"d"`` event for the old key (and a tombstone for it on the compacted topic), then a
  ``"c"`` event for the new key.
- Delete: ``op "d"``, ``after`` null, ``before`` the old row (key columns only, others
  ``null``, unless REPLICA IDENTITY FULL); tombstone on the compacted topic.
- Truncate: ``op "t"``, one event per table, key and ``before``/``after`` null; retention
  topic only (a compacted topic cannot express "all keys gone").

An unchanged TOASTed value the server did not send becomes Debezium's placeholder
``"__debezium_unavailable_value"``, never ``null``, unless the old row sent with the same
Update (REPLICA IDENTITY FULL, or the key) holds its value: then that exact value is used.

Every record of a change carries two Kafka headers, its place in the stream: ``cdc.lsn``,
the commit LSN of its source transaction, and ``cdc.seq``, the index of its message in that
transaction (every record of one message shares them, the ``d`` and ``c`` of a key change
too), as ASCII decimals; the caller builds them once per message. A snapshot read carries
``cdc.lsn`` = the commit LSN its row is as of (``tx.commit_lsn``) and ``cdc.seq`` = ``-1``:
before every change committed there.

With transaction metadata on (``tx.order``), each event's ``transaction`` block says which
source transaction it belongs to and where in it (Debezium's ``total_order`` and
``data_collection_order``); snapshot reads keep ``transaction: null``.

Where we differ from Debezium (beyond the values, see ``cdc.protocol.values``): Debezium
puts both records on one topic and marks a key change with ``__debezium.oldkey`` /
``newkey`` headers; we do not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

import orjson

from cdc import __version__, native
from cdc.errors import ConfigError, ConversionError
from cdc.masking import Mask, TableControls
from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Delete,
    Insert,
    Relation,
    ReplicaIdentity,
    Truncate,
    TupleData,
    Update,
)
from cdc.protocol.typeinfo import TypeResolver
from cdc.protocol.values import (
    UNAVAILABLE_VALUE_PLACEHOLDER,
    ConversionStats,
    JsonValue,
    RowConverter,
    ValueOptions,
)
from cdc.row_filter import parse_row_filter

__all__ = [
    "LSN_HEADER",
    "SEQ_HEADER",
    "SEQ_HEADERS",
    "SNAPSHOT_SEQ",
    "EnvelopeEncoder",
    "Headers",
    "Record",
    "Row",
    "TableEncoder",
    "ToastMemory",
    "TxContext",
    "lsn_header",
    "seq_header",
]

_dumps: Final = orjson.dumps
_Fragment: Final = orjson.Fragment
_NativeUnsupported: Final = native.NativeUnsupported

# Only values at least this long are remembered for ``toast.mode: fill``: PostgreSQL
# moves values out of line (and then leaves them out of UPDATEs that do not change them)
# only when a row passes ~2 KB. A shorter value moved out of a very wide row is not
# remembered; it falls back to the placeholder, listed in the event, never a wrong value.
REMEMBER_FROM_BYTES: Final = 256

# Types whose values have a fixed length: never TOASTed, never remembered.
_FIXED_LENGTH_OIDS: Final = frozenset(
    {16, 18, 19, 20, 21, 23, 26, 27, 28, 29, 600, 700, 701, 774, 790, 829, 1082, 1083,
     1114, 1184, 1186, 1266, 2950, 3220}
)  # fmt: skip


class ToastMemory(Protocol):
    """Where ``toast.mode: fill`` remembers the large values of each row (an edge)."""

    def get(self, table: str, key: bytes) -> dict[str, str]: ...

    def put(self, table: str, key: bytes, values: dict[str, str]) -> None: ...

    def forget_table(self, table: str) -> None: ...


# Debezium's source.connector for PostgreSQL; consumers dispatch on it.
CONNECTOR_TYPE: Final = "postgresql"


# Kafka headers of a record: (name, value) pairs, built once per message and shared by
# all its records. A list where the hot path builds them (confluent-kafka takes a list,
# so the sink passes it as it is), a tuple elsewhere; nobody changes one once built.
Headers = Sequence[tuple[str, bytes]]

#: Header names of a record's place in the stream (docs/events.md#position-headers).
LSN_HEADER: Final = "cdc.lsn"
SEQ_HEADER: Final = "cdc.seq"
#: ``cdc.seq`` of snapshot reads: the row as of before anything committed at ``cdc.lsn``.
SNAPSHOT_SEQ: Final = -1

#: ``cdc.seq`` headers of the first messages of a transaction, built once: nearly every
#: message has one of these, so the hot path only looks it up (``seq_header`` otherwise).
SEQ_HEADERS: Final = tuple((SEQ_HEADER, b"%d" % seq) for seq in range(1024))
_SNAPSHOT_SEQ_HEADER: Final = (SEQ_HEADER, b"%d" % SNAPSHOT_SEQ)


def lsn_header(commit_lsn: int) -> tuple[str, bytes]:
    """The ``cdc.lsn`` header of a transaction's records (built once per transaction)."""
    return (LSN_HEADER, b"%d" % commit_lsn)


def seq_header(seq: int) -> tuple[str, bytes]:
    """The ``cdc.seq`` header of the message with index ``seq`` in its transaction."""
    if 0 <= seq < len(SEQ_HEADERS):
        return SEQ_HEADERS[seq]
    return (SEQ_HEADER, b"%d" % seq)


class Record(NamedTuple):
    """One Kafka message. ``value`` ``None`` is a tombstone (never ``b""``).

    A NamedTuple rather than a frozen dataclass: two are built per event on the hot path,
    and a tuple is built in a third of the time.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int = -1  # -1: chosen by the key (librdkafka's RD_KAFKA_PARTITION_UA)


@dataclass(frozen=True, slots=True)
class TxContext:
    """What the envelope needs of the current transaction; built once at Begin."""

    xid: int | None  # None for snapshot reads, which have no transaction id of their own
    commit_lsn: int  # Begin.final_lsn
    commit_ts_us: int  # Unix epoch microseconds
    last_commit_lsn: int | None  # LSN of the previous commit, if known
    # provide_transaction_metadata: called once per data event, in publication order, with
    # its table ("schema.table"); returns the event's transaction block. None: null.
    order: Callable[[str], Row] | None = None


Row = dict[str, JsonValue]

# A converted row: the dict (Python path), or from the native encoder (cdc.native) its
# JSON as a Fragment for the envelope, the same bytes for the compacted record, and the
# key's JSON. Only TableEncoder sees the tuple form; its public methods take and give rows.
_Image = Row | tuple[orjson.Fragment, bytes, bytes]

# Stands for the LSN while a transaction's source block is serialised once (see
# TableEncoder._source_parts); characters orjson writes as they are.
_LSN_MARKER: Final = "~cdc-lsn-7f3a~"
# The "op" member of each kind of event, as orjson writes it.
_OP_FIELDS: Final = {op: b',"op":"%s"' % op.encode() for op in ("c", "u", "d", "r", "t")}


def _filled_from_old(new: TupleData, old: TupleData) -> TupleData:
    """``new`` with each unchanged TOASTed value taken from the old row (FULL) or key,
    which carries the exact value the server left out."""
    return tuple(
        o if n is UNCHANGED_TOAST and o.__class__ is str else n
        for n, o in zip(new, old)  # noqa: B905 (RowConverter checks lengths)
    )


def _row_json(image: _Image) -> bytes:
    """A row image's JSON: the native encoder's bytes, or the dict serialised. Also the
    compacted record's value."""
    if isinstance(image, tuple):
        return image[1]
    return _dumps(image)


class TableEncoder:
    """Everything about one table that does not change per event, computed once.

    Built by ``EnvelopeEncoder.table`` for each Relation message; per event only the rows
    are converted and the dicts serialised.
    """

    __slots__ = (
        "_db",
        "_dropped",
        "_fast_insert",
        "_filter",
        "_key_in_old",
        "_key_indexes",
        "_key_names",
        "_masks",
        "_name",
        "_native",
        "_native_insert",
        "_qualified",
        "_read_headers",
        "_rows",
        "_schema",
        "_source_template",
        "_table",
        "_toast",
        "_toastable",
        "compacted_topic",
        "has_key",
        "key_columns",
        "relation",
        "retention_topic",
        "unavailable_count",
    )

    def __init__(
        self,
        relation: Relation,
        *,
        connector: str,
        database: str,
        retention_topic: str,
        compacted_topic: str,
        options: ValueOptions,
        key_columns: Sequence[str] | None = None,
        toast: ToastMemory | None = None,
        placeholder: str = UNAVAILABLE_VALUE_PLACEHOLDER,
        types: TypeResolver | None = None,
        stats: ConversionStats | None = None,
        controls: TableControls | None = None,
    ) -> None:
        self.relation = relation
        self.retention_topic = retention_topic
        self.compacted_topic = compacted_topic
        qualified = f"{relation.namespace}.{relation.name}"
        self._rows = RowConverter(
            relation.columns,
            options,
            table=qualified,
            unchanged_toast=placeholder,
            types=types,
            stats=stats,
        )
        names = [c.name for c in relation.columns]
        if key_columns is None:
            key_columns = [c.name for c in relation.columns if c.is_key]
        else:
            missing = [k for k in key_columns if k not in names]
            if missing:
                raise ConversionError(
                    f"table {qualified} has no column {', '.join(missing)} configured as its "
                    f"key; its columns are {', '.join(names)}",
                    table=qualified,
                )
        self.key_columns: tuple[str, ...] = tuple(key_columns)
        self.has_key = bool(self.key_columns)
        self._key_names = self.key_columns
        self._key_indexes = tuple(names.index(k) for k in self.key_columns)
        # Data controls (cdc.masking): columns the publication still sends but must not be
        # published (a server or table where the column list is not pushed down), and
        # masks, applied to the converted values before anything is serialised.
        self._dropped, self._masks = _controls_of(controls, names, self.key_columns, qualified)
        # The row filter the publication cannot apply (cdc.row_filter), evaluated on the
        # values as sent, before any conversion or mask; None: nothing to filter here.
        self._filter = (
            parse_row_filter(
                controls.row_filter,
                {c.name: c.type_oid for c in relation.columns},
                table=qualified,
                indexes={c.name: i for i, c in enumerate(relation.columns)},
            )
            if controls is not None and controls.filter_in_cdc and controls.row_filter
            else None
        )
        # The compiled encoder of this table's rows, when it converts every column's kind
        # exactly (cdc.native); None: the Python path. A row it refuses (a value it cannot
        # convert exactly) takes the Python path too, which gives the exact error.
        encoders = (
            None
            if self._dropped or self._masks
            else native.row_encoders(
                relation.columns, self._rows.converters, self._key_indexes, placeholder
            )
        )
        self._native: native.RowEncode | None = None
        self._native_insert: native.InsertEncode | None = None
        if encoders is not None:
            self._native, self._native_insert = encoders
        # Old tuples of kind "K" hold only the replica identity columns; the key can be
        # read from them only if it is part of the identity (always so by default).
        identity = {c.name for c in relation.columns if c.is_key}
        self._key_in_old = relation.replica_identity is ReplicaIdentity.FULL or identity.issuperset(
            self.key_columns
        )
        self._name = connector
        self._db = database
        self._schema = relation.namespace
        self._table = relation.name
        self._qualified = qualified
        # The headers of snapshot reads, with the TxContext they were built for.
        self._read_headers: tuple[TxContext, Headers] | None = None
        # The source block of the current transaction (and snapshot kind), split where
        # the LSN goes: (tx, snapshot, parts or None).
        self._source_template: tuple[TxContext, str, tuple[bytes, bytes, bytes] | None] | None = (
            None
        )
        # Columns whose values can be TOASTed out of line (variable length, not the key).
        self._toastable = tuple(
            (i, c.name)
            for i, c in enumerate(relation.columns)
            if c.type_oid not in _FIXED_LENGTH_OIDS and c.name not in self.key_columns
        )
        self._toast = toast if self._toastable and self.has_key else None
        # The common insert: compiled rows, a key, nothing to remember or filter. Its
        # event is put together here in one step (the same bytes as _event's).
        self._fast_insert = self.has_key and self._toast is None and self._filter is None
        # Values published as the placeholder because they could not be filled.
        self.unavailable_count = 0

    # -- building blocks --------------------------------------------------------------

    def _source(self, tx: TxContext, lsn: int, snapshot: str = "false") -> bytes:
        """The ``source`` block's JSON: the transaction's template (built once per
        transaction and table) with the event's LSN put in its two places."""
        parts = self._source_split(tx, snapshot)
        if parts is None:  # a name holds the marker: serialise the whole block
            return _dumps(self._source_dict(tx, lsn, snapshot))
        digits = b"%d" % lsn
        return parts[0] + digits + parts[1] + digits + parts[2]

    def _source_split(self, tx: TxContext, snapshot: str) -> tuple[bytes, bytes, bytes] | None:
        """``_source_parts`` of the transaction, built once per transaction and table."""
        template = self._source_template
        if template is None or template[0] is not tx or template[1] != snapshot:
            template = self._source_template = (tx, snapshot, self._source_parts(tx, snapshot))
        return template[2]

    def _source_parts(self, tx: TxContext, snapshot: str) -> tuple[bytes, bytes, bytes] | None:
        """``source`` as orjson writes it, split where the LSN goes: once inside
        ``sequence``, once as ``lsn``. None if a name or value contains the marker (the
        caller then serialises each block whole: same bytes, slower)."""
        marker = _LSN_MARKER
        block = self._source_dict(tx, 0, snapshot)
        last = tx.last_commit_lsn
        block["sequence"] = f'[null,"{marker}"]' if last is None else f'["{last}","{marker}"]'
        block["lsn"] = marker
        text = _dumps(block)
        pieces = text.split(marker.encode())
        if len(pieces) != 3 or not pieces[2].startswith(b'",'):
            return None
        # pieces[1] ends with the opening quote of the marker-as-string in "lsn": drop it,
        # and the closing quote that starts pieces[2]: the LSN is a number there.
        if not pieces[1].endswith(b'"'):
            return None
        return pieces[0], pieces[1][:-1], pieces[2][1:]

    def _source_dict(self, tx: TxContext, lsn: int, snapshot: str) -> Row:
        ts_us = tx.commit_ts_us
        last = tx.last_commit_lsn
        return {
            "version": __version__,
            "connector": CONNECTOR_TYPE,
            "name": self._name,
            "ts_ms": ts_us // 1000,
            "snapshot": snapshot,
            "db": self._db,
            "sequence": f'[null,"{lsn}"]' if last is None else f'["{last}","{lsn}"]',
            "ts_us": ts_us,
            "ts_ns": ts_us * 1000,
            "schema": self._schema,
            "table": self._table,
            "txId": tx.xid,
            "lsn": lsn,
            "xmin": None,
            "origin": None,
            "origin_lsn": None,
        }

    def _event(  # noqa: PLR0917 - private and hot: positional arguments are cheapest
        self,
        op: str,
        before: _Image | None,
        after: _Image | None,
        source: bytes,
        now_us: int,
        unavailable: list[str] | None = None,
        transaction: Row | None = None,
    ) -> bytes:
        """The event's JSON, assembled as orjson would write the dict ``{"before",
        "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"[,
        "unavailable_columns"]}``: the row images and the source block are JSON already."""
        tail = b'%s,"ts_ms":%d,"ts_us":%d,"ts_ns":%d' % (
            _OP_FIELDS[op],
            now_us // 1000,
            now_us,
            now_us * 1000,
        )
        if unavailable:
            # Columns whose value PostgreSQL did not send (unchanged TOAST) and that hold
            # the placeholder: a consumer must keep its previous value of them.
            tail += b',"unavailable_columns":' + _dumps(unavailable)
        return b'{"before":%s,"after":%s,"source":%s,"transaction":%s%s}' % (
            b"null" if before is None else _row_json(before),
            b"null" if after is None else _row_json(after),
            source,
            b"null" if transaction is None else _dumps(transaction),
            tail,
        )

    def large_values(self, values: TupleData) -> dict[str, str] | None:
        """``toast.mode: fill``: the large values of a row, to remember (None otherwise)."""
        if self._toast is None:
            return None
        large: dict[str, str] = {}
        for index, name in self._toastable:
            value = values[index]
            if isinstance(value, str) and len(value) >= REMEMBER_FROM_BYTES:
                large[name] = value
        return large

    def remember(self, key: bytes, large: dict[str, str] | None) -> None:
        """``toast.mode: fill``: remember what ``large_values`` found (forget small ones)."""
        if self._toast is not None and large is not None:
            self._toast.put(f"{self._schema}.{self._table}", key, large)

    def _remember(self, values: TupleData, key: bytes) -> None:
        self.remember(key, self.large_values(values))

    def _fill(self, new: TupleData, key: bytes) -> TupleData:
        """``toast.mode: fill``: the remembered text of the unchanged TOASTed values."""
        toast = self._toast
        if toast is None:
            return new
        remembered = toast.get(f"{self._schema}.{self._table}", key)
        if not remembered:
            return new
        names = self._rows.names
        return tuple(
            remembered.get(names[i], value) if value is UNCHANGED_TOAST else value
            for i, value in enumerate(new)
        )

    def _unavailable(self, new: TupleData) -> list[str]:
        names = self._rows.names
        dropped = self._dropped
        missing = [
            names[i]
            for i, value in enumerate(new)
            if value is UNCHANGED_TOAST and names[i] not in dropped
        ]
        self.unavailable_count += len(missing)
        return missing

    def _order(self, tx: TxContext) -> Row | None:
        """The transaction block of the next data event (None: metadata off)."""
        order = tx.order
        return None if order is None else order(self._qualified)

    def _key(self, row: _Image) -> bytes:
        if isinstance(row, tuple):
            return row[2]
        return _dumps({name: row[name] for name in self._key_names})

    def _convert(self, values: TupleData, lsn: int) -> _Image:
        encode = self._native
        if encode is not None:
            try:
                row, key = encode(values)
            except _NativeUnsupported:
                pass  # the Python path gives the exact value or error
            else:
                return (_Fragment(row), row, key)
        return self._convert_py(values, lsn)

    def _convert_py(self, values: TupleData, lsn: int) -> Row:
        try:
            row = self._rows.convert(values)
        except ConversionError as exc:
            raise ConversionError(
                f"{exc} (at LSN {lsn})",
                table=exc.table,
                column=exc.column,
                type_name=exc.type_name,
                lsn=lsn,
            ) from exc
        for name in self._dropped:
            del row[name]
        for index, name, mask in self._masks:
            # The unchanged-TOAST placeholder is not a value: it stays as it is.
            if values[index] is not UNCHANGED_TOAST:
                row[name] = mask(row[name])
        return row

    def _passes(self, values: TupleData, lsn: int) -> bool:
        """Whether the row filter cdc evaluates keeps this row."""
        assert self._filter is not None
        try:
            return self._filter.matches(values)
        except ValueError as exc:
            raise ConversionError(
                f"table {self._qualified}: its row filter cannot be evaluated on a change at"
                f" LSN {lsn}: {exc} (an unchanged TOASTed value the server did not send)",
                table=self._qualified,
                lsn=lsn,
            ) from exc

    def _check_old_key(self, lsn: int) -> None:
        if not self._key_in_old:
            raise ConversionError(
                f"table {self._schema}.{self._table}: the old row sent by the server lacks "
                f"key column(s) {', '.join(self.key_columns)}, so the changed or deleted "
                "key is unknown; make the key the table's replica identity (ALTER TABLE ... "
                "REPLICA IDENTITY USING INDEX or FULL)",
                table=f"{self._schema}.{self._table}",
                lsn=lsn,
            )

    # -- changes ----------------------------------------------------------------------

    def insert(
        self, message: Insert, tx: TxContext, lsn: int, now_us: int, headers: Headers | None = None
    ) -> list[Record]:
        """Records for an inserted row (``headers``: its message's position headers)."""
        insert = self._native_insert
        if insert is not None and self._fast_insert and tx.order is None:
            # The whole event in one compiled call: the same bytes as _event's.
            parts = self._source_split(tx, "false")
            if parts is not None:
                try:
                    value, row, key = insert(message.new, parts, lsn, now_us)
                except _NativeUnsupported:
                    pass  # the general path below gives the exact value or error
                else:
                    return [
                        Record(self.retention_topic, key, value, headers),
                        Record(self.compacted_topic, key, row, headers),
                    ]
        if self._filter is not None and not self._passes(message.new, lsn):
            return []
        after = self._convert(message.new, lsn)
        order = tx.order
        value = self._event(
            "c",
            None,
            after,
            self._source(tx, lsn),
            now_us,
            None,
            None if order is None else order(self._qualified),
        )
        if not self.has_key:
            return [Record(self.retention_topic, None, value, headers)]
        key = self._key(after)
        if self._toast is not None:
            self._remember(message.new, key)
        return [
            Record(self.retention_topic, key, value, headers),
            Record(self.compacted_topic, key, _row_json(after), headers),
        ]

    def update(
        self, message: Update, tx: TxContext, lsn: int, now_us: int, headers: Headers | None = None
    ) -> list[Record]:
        """Records for an updated row: one ``u`` event, or ``d`` + ``c`` if the key changed
        (all with the message's ``headers``).

        Under a row filter cdc evaluates, as PostgreSQL 15 transforms it in the
        publication: old and new rows pass, an update; only the old one, a delete of it;
        only the new one, an insert of it; neither, nothing."""
        if self._filter is None:
            return self._update(message, tx, lsn, now_us, headers)
        old, new = message.old, message.new
        if old is not None and UNCHANGED_TOAST in new:
            new = _filled_from_old(new, old)
        new_passes = self._passes(new, lsn)
        # No old row: the key did not change, and the filter reads identity columns only.
        old_passes = new_passes if old is None else self._passes(old, lsn)
        if old_passes and new_passes:
            return self._update(message, tx, lsn, now_us, headers)
        if not old_passes and not new_passes:
            return []
        if message.old_kind == "K" and self.has_key:
            # The key changed: the update is a d of the old key and a c of the new one.
            records = self._update(message, tx, lsn, now_us, headers)
            return records[:2] if old_passes else records[2:]
        if old_passes:
            assert old is not None
            gone = Delete(message.xid, message.relation, message.old_kind or "O", old)
            return self.delete(gone, tx, lsn, now_us, headers)
        return self.insert(Insert(message.xid, message.relation, new), tx, lsn, now_us, headers)

    def _update(
        self, message: Update, tx: TxContext, lsn: int, now_us: int, headers: Headers | None
    ) -> list[Record]:
        old = message.old
        new = message.new
        if old is None:
            for index, name in zip(self._key_indexes, self._key_names):  # noqa: B905
                if new[index] is UNCHANGED_TOAST:
                    # A key is never a placeholder: it would address the wrong Kafka key.
                    raise ConversionError(
                        f"table {self._schema}.{self._table}: the server sent neither the "
                        f"unchanged TOASTed key column {name!r} nor the old key, so the "
                        "record key is unknown",
                        table=f"{self._schema}.{self._table}",
                        column=name,
                        lsn=lsn,
                    )
            after = self._convert(new, lsn)
            unavailable: list[str] | None = None
            if UNCHANGED_TOAST in new:
                if self.has_key:
                    filled = self._fill(new, self._key(after))
                    if filled is not new:
                        new = filled
                        after = self._convert(new, lsn)
                if UNCHANGED_TOAST in new:
                    unavailable = self._unavailable(new)
            order = tx.order
            value = self._event(
                "u",
                None,
                after,
                self._source(tx, lsn),
                now_us,
                unavailable,
                None if order is None else order(self._qualified),
            )
            if not self.has_key:
                return [Record(self.retention_topic, None, value, headers)]
            key = self._key(after)
            if self._toast is not None and unavailable is None:
                self._remember(new, key)
            return [
                Record(self.retention_topic, key, value, headers),
                Record(self.compacted_topic, key, _row_json(after), headers),
            ]
        if message.old_kind == "K":
            self._check_old_key(lsn)
        if UNCHANGED_TOAST in new:
            new = _filled_from_old(new, old)
        before = self._convert(old, lsn)
        if UNCHANGED_TOAST in new and self.has_key:
            new = self._fill(new, self._key(before))
        unavailable = self._unavailable(new) if UNCHANGED_TOAST in new else None
        after = self._convert(new, lsn)
        source = self._source(tx, lsn)
        if not self.has_key:
            return [
                Record(
                    self.retention_topic,
                    None,
                    self._event("u", before, after, source, now_us, unavailable, self._order(tx)),
                    headers,
                )
            ]
        old_key = self._key(before)
        key = self._key(after)
        if self._toast is not None and unavailable is None:
            if old_key != key:
                self._toast.put(f"{self._schema}.{self._table}", old_key, {})
            self._remember(new, key)
        if old_key == key:
            return [
                Record(
                    self.retention_topic,
                    key,
                    self._event("u", before, after, source, now_us, unavailable, self._order(tx)),
                    headers,
                ),
                Record(self.compacted_topic, key, _row_json(after), headers),
            ]
        # Two events: the d is ordered (and published) before the c.
        deleted = self._event("d", before, None, source, now_us, None, self._order(tx))
        created = self._event("c", None, after, source, now_us, unavailable, self._order(tx))
        return [
            Record(self.retention_topic, old_key, deleted, headers),
            Record(self.compacted_topic, old_key, None, headers),
            Record(self.retention_topic, key, created, headers),
            Record(self.compacted_topic, key, _row_json(after), headers),
        ]

    def delete(
        self, message: Delete, tx: TxContext, lsn: int, now_us: int, headers: Headers | None = None
    ) -> list[Record]:
        """Records for a deleted row: a ``d`` event and a tombstone."""
        if self._filter is not None and not self._passes(message.old, lsn):
            return []
        if message.old_kind == "K" and self.has_key:
            self._check_old_key(lsn)
        before = self._convert(message.old, lsn)
        value = self._event("d", before, None, self._source(tx, lsn), now_us, None, self._order(tx))
        if not self.has_key:
            return [Record(self.retention_topic, None, value, headers)]
        key = self._key(before)
        if self._toast is not None:
            self._toast.put(f"{self._schema}.{self._table}", key, {})
        return [
            Record(self.retention_topic, key, value, headers),
            Record(self.compacted_topic, key, None, headers),
        ]

    def read(
        self, values: TupleData, tx: TxContext, lsn: int, now_us: int, snapshot: str
    ) -> list[Record]:
        """Records for a row read by a snapshot: op ``r``, as Debezium's snapshot events.

        ``snapshot`` is ``source.snapshot``: ``"first"``, ``"true"`` or ``"last"`` for an
        initial snapshot, ``"incremental"`` for a chunk of an incremental one. ``tx``
        describes the snapshot: its start time as ``commit_ts_us``, and ``lsn`` the
        position the stream continues from.
        """
        after = self._convert(values, lsn)
        if self._toast is not None:
            self._remember(values, self._key(after))
        return self._read_row(after, tx, lsn, now_us, snapshot)

    def row(self, values: TupleData, lsn: int) -> Row:
        """The converted row (the ``after`` image) of a snapshot read, e.g. to hold it."""
        return self._convert_py(values, lsn)

    def key(self, row: Row) -> bytes | None:
        """The record key of a converted row; None for a table without key columns."""
        return self._key(row) if self.has_key else None

    def read_row(
        self, after: Row, tx: TxContext, lsn: int, now_us: int, snapshot: str
    ) -> list[Record]:
        """``read`` for a row already converted with ``row``.

        Its records carry ``cdc.lsn`` = ``tx.commit_lsn`` (the point the row is as of: the
        consistent point of an initial snapshot, the HIGH watermark's commit of a chunk)
        and ``cdc.seq`` = ``SNAPSHOT_SEQ``; its ``transaction`` block is null (a snapshot
        read belongs to no source transaction)."""
        return self._read_row(after, tx, lsn, now_us, snapshot)

    def _read_row(
        self, after: _Image, tx: TxContext, lsn: int, now_us: int, snapshot: str
    ) -> list[Record]:
        value = self._event("r", None, after, self._source(tx, lsn, snapshot), now_us)
        cached = self._read_headers
        if cached is None or cached[0] is not tx:
            # One tuple per snapshot (per chunk), not per row; readers of one table in
            # several threads at worst each build it once.
            cached = (tx, (lsn_header(tx.commit_lsn), _SNAPSHOT_SEQ_HEADER))
            self._read_headers = cached
        headers = cached[1]
        if not self.has_key:
            return [Record(self.retention_topic, None, value, headers)]
        key = self._key(after)
        return [
            Record(self.retention_topic, key, value, headers),
            Record(self.compacted_topic, key, _row_json(after), headers),
        ]

    def truncate(
        self, tx: TxContext, lsn: int, now_us: int, headers: Headers | None = None
    ) -> Record:
        """The ``t`` event of this table; it has no key and no compacted counterpart."""
        if self._toast is not None:
            self._toast.forget_table(f"{self._schema}.{self._table}")
        return Record(
            self.retention_topic,
            None,
            self._event("t", None, None, self._source(tx, lsn), now_us, None, self._order(tx)),
            headers,
        )


def _controls_of(
    controls: TableControls | None,
    names: Sequence[str],
    key_columns: Sequence[str],
    table: str,
) -> tuple[frozenset[str], tuple[tuple[int, str, Mask], ...]]:
    """The columns a table's encoder drops and the masks it applies (by column index).

    Raises:
        ConfigError: a key column would be dropped or masked (the record key).
    """
    if controls is None:
        return frozenset(), ()
    present = set(names)
    dropped = frozenset(n for n in names if not controls.keeps(n))
    for column in key_columns:
        if column in dropped or column in controls.masks:
            # Checked at start too (TableControls.check); a key that changed since is
            # refused here, never published without (or with a masked) record key.
            raise ConfigError(
                f"column {column!r} of table {table} is part of its key (the record key of"
                " both topics): it cannot be excluded or masked",
                key=f"table_options.{table}",
            )
    masks = tuple(
        (names.index(name), name, mask)
        for name, mask in controls.masks.items()
        if name in present and name not in dropped
    )
    return dropped, masks


class EnvelopeEncoder:
    """Encodes the changes of one connector; keeps one ``TableEncoder`` per Relation.

    Args:
        connector: the connector name (``source.name``; Debezium's topic prefix).
        database: the database name (``source.db``).
        retention_topic: ``(schema, table) -> topic`` of the change events.
        compacted_topic: ``(schema, table) -> topic`` of the latest rows.
        options: how values are converted.
        key_columns: ``relation -> key column names``, or ``None`` to use the replica
            identity columns the Relation message flags. Needed for REPLICA IDENTITY FULL
            tables, where PostgreSQL flags every column: the edge looks up the primary key
            (``pg_index.indisprimary``) so the key is the primary key, as in Debezium.
        controls: ``"schema.table"`` -> its column list and masks (``cdc.masking``);
            a table with columns to drop or mask is encoded on the Python path.
    """

    __slots__ = (
        "_compacted_topic",
        "_connector",
        "_controls",
        "_database",
        "_key_columns",
        "_options",
        "_placeholder",
        "_retention_topic",
        "_stats",
        "_tables",
        "_toast",
        "_types",
    )

    def __init__(
        self,
        *,
        connector: str,
        database: str,
        retention_topic: Callable[[str, str], str],
        compacted_topic: Callable[[str, str], str],
        options: ValueOptions,
        key_columns: Callable[[Relation], Sequence[str] | None] | None = None,
        toast: ToastMemory | None = None,
        placeholder: str = UNAVAILABLE_VALUE_PLACEHOLDER,
        types: TypeResolver | None = None,
        stats: ConversionStats | None = None,
        controls: Mapping[str, TableControls] | None = None,
    ) -> None:
        self._connector = connector
        self._controls = controls or {}
        self._toast = toast
        self._placeholder = placeholder
        self._types = types
        self._stats = stats
        self._database = database
        self._retention_topic = retention_topic
        self._compacted_topic = compacted_topic
        self._options = options
        self._key_columns = key_columns
        self._tables: dict[int, TableEncoder] = {}

    def unavailable_values(self) -> int:
        """Unchanged TOASTed values published as the placeholder so far (a metric)."""
        return sum(encoder.unavailable_count for encoder in self._tables.values())

    def table(self, relation: Relation) -> TableEncoder:
        """The encoder of ``relation``, built on first use and whenever a new Relation
        message (a new object, even with the same OID) replaces the previous one."""
        encoder = self._tables.get(relation.oid)
        if encoder is not None and encoder.relation is relation:
            return encoder
        schema, name = relation.namespace, relation.name
        encoder = TableEncoder(
            relation,
            connector=self._connector,
            database=self._database,
            retention_topic=self._retention_topic(schema, name),
            compacted_topic=self._compacted_topic(schema, name),
            options=self._options,
            key_columns=None if self._key_columns is None else self._key_columns(relation),
            toast=self._toast,
            placeholder=self._placeholder,
            types=self._types,
            stats=self._stats,
            controls=self._controls.get(f"{schema}.{name}"),
        )
        self._tables[relation.oid] = encoder
        return encoder

    def encode(
        self,
        message: Insert | Update | Delete | Truncate,
        tx: TxContext,
        lsn: int,
        now_us: int,
        headers: Headers | None = None,
    ) -> list[Record]:
        """All records of one change, in the order they must be produced.

        Args:
            message: the decoded change.
            tx: its transaction.
            lsn: the LSN of the change (``source.lsn``).
            now_us: processing time, Unix epoch microseconds (top-level ``ts_*``).
            headers: the message's position headers (``lsn_header``, ``seq_header``),
                put on every record it produces.

        Raises:
            ConversionError: a value cannot be converted exactly; ``table``, ``column``,
                ``type_name`` and ``lsn`` say which.
        """
        if isinstance(message, Insert):
            return self.table(message.relation).insert(message, tx, lsn, now_us, headers)
        if isinstance(message, Update):
            return self.table(message.relation).update(message, tx, lsn, now_us, headers)
        if isinstance(message, Delete):
            return self.table(message.relation).delete(message, tx, lsn, now_us, headers)
        return [self.table(r).truncate(tx, lsn, now_us, headers) for r in message.relations]
