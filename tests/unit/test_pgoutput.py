"""pgoutput decoding: round trips, hostile bytes, decoder state, and golden server bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from cdc.protocol.pgoutput import PgoutputDecoder

from .pgoutput_encoder import encode, encode_tuple, message_to_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pgoutput"

# --- strategies ---------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
lsns = st.integers(0, 2**64 - 1)
timestamps = st.integers(-(2**63), 2**63 - 1)
# Protocol Strings are NUL-terminated UTF-8: no NUL, no lone surrogates.
names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
tuple_values: st.SearchStrategy[TupleValue] = st.one_of(
    st.none(),
    st.just(UNCHANGED_TOAST),
    st.text(st.characters(exclude_categories=["Cs"])),
    st.binary(),
)
columns = st.builds(Column, u8, names, u32, i32)


NO_XID: st.SearchStrategy[int | None] = st.none()


def relations(xid: st.SearchStrategy[int | None] = NO_XID) -> st.SearchStrategy[Relation]:
    return st.builds(
        Relation,
        xid,
        u32,
        names,
        names,
        st.sampled_from(ReplicaIdentity),
        st.lists(columns, max_size=6).map(tuple),
    )


def rows(relation: Relation) -> st.SearchStrategy[TupleData]:
    return st.tuples(*[tuple_values] * len(relation.columns))


# Which messages each protocol version may carry.
V1_TYPES = (
    Begin,
    Commit,
    Origin,
    Relation,
    Type,
    Insert,
    Update,
    Delete,
    Truncate,
    LogicalMessage,
)
V2_TYPES = (StreamStart, StreamStop, StreamCommit, StreamAbort)
V3_TYPES = (BeginPrepare, Prepare, CommitPrepared, RollbackPrepared, StreamPrepare)
ALL_TYPES = V1_TYPES + V2_TYPES + V3_TYPES
# Messages that carry a leading xid inside a streamed block.
STREAMABLE = (Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage)


def min_version(cls: type) -> int:
    if cls in V3_TYPES:
        return 3
    if cls in V2_TYPES:
        return 2
    return 1


class Scenario:
    """A decoder prepared with some relations and maybe inside a stream, and one message."""

    def __init__(
        self,
        version: int,
        in_stream: bool,
        known: list[Relation],
        message: PgoutputMessage,
    ) -> None:
        self.version = version
        self.in_stream = in_stream
        self.known = known
        self.message = message

    def decoder(self) -> PgoutputDecoder:
        decoder = PgoutputDecoder(self.version)
        for relation in self.known:
            decoder.decode(encode(relation))
        if self.in_stream:
            decoder.decode(encode(StreamStart(1, True)))
        return decoder

    def encoded(self) -> bytes:
        return encode(self.message, in_stream=self.in_stream, protocol_version=self.version)

    def __repr__(self) -> str:
        return f"Scenario(v{self.version}, in_stream={self.in_stream}, {self.message!r})"


@st.composite
def scenarios(draw: st.DrawFn, cls: type | None = None) -> Scenario:
    if cls is None:
        cls = draw(st.sampled_from(ALL_TYPES))
    version = draw(st.integers(min_version(cls), 4))
    if cls is StreamStart:
        in_stream = False
    elif cls is StreamStop:
        in_stream = True
    else:
        in_stream = version >= 2 and cls in STREAMABLE and draw(st.booleans())
    xid = draw(u32) if in_stream else None
    # Distinct OIDs: one Relation message per table.
    known = draw(st.lists(relations(), min_size=1, max_size=3, unique_by=lambda r: r.oid))
    relation = draw(st.sampled_from(known))

    message: PgoutputMessage
    if cls is Begin:
        message = Begin(draw(lsns), draw(timestamps), draw(u32))
    elif cls is Commit:
        message = Commit(draw(u8), draw(lsns), draw(lsns), draw(timestamps))
    elif cls is Origin:
        message = Origin(draw(lsns), draw(names))
    elif cls is Relation:
        message = draw(relations(st.just(xid)))
    elif cls is Type:
        message = Type(xid, draw(u32), draw(names), draw(names))
    elif cls is Insert:
        message = Insert(xid, relation, draw(rows(relation)))
    elif cls is Update:
        old_kind = draw(st.sampled_from([None, "K", "O"]))
        old = None if old_kind is None else draw(rows(relation))
        message = Update(xid, relation, old_kind, old, draw(rows(relation)))
    elif cls is Delete:
        message = Delete(xid, relation, draw(st.sampled_from(["K", "O"])), draw(rows(relation)))
    elif cls is Truncate:
        message = Truncate(xid, draw(u8), tuple(draw(st.lists(st.sampled_from(known)))))
    elif cls is LogicalMessage:
        message = LogicalMessage(
            xid, draw(st.booleans()), draw(lsns), draw(names), draw(st.binary())
        )
    elif cls is StreamStart:
        message = StreamStart(draw(u32), draw(st.booleans()))
    elif cls is StreamStop:
        message = StreamStop()
    elif cls is StreamCommit:
        message = StreamCommit(draw(u32), draw(u8), draw(lsns), draw(lsns), draw(timestamps))
    elif cls is StreamAbort:
        if version >= 4 and draw(st.booleans()):
            message = StreamAbort(draw(u32), draw(u32), draw(lsns), draw(timestamps))
        else:
            message = StreamAbort(draw(u32), draw(u32))
    elif cls is BeginPrepare:
        message = BeginPrepare(draw(lsns), draw(lsns), draw(timestamps), draw(u32), draw(names))
    elif cls is RollbackPrepared:
        message = RollbackPrepared(
            draw(u8),
            draw(lsns),
            draw(lsns),
            draw(timestamps),
            draw(timestamps),
            draw(u32),
            draw(names),
        )
    else:
        assert cls in (Prepare, CommitPrepared, StreamPrepare)
        message = cls(draw(u8), draw(lsns), draw(lsns), draw(timestamps), draw(u32), draw(names))
    return Scenario(version, in_stream, known, message)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_decode_inverts_encode_for_every_message_type(cls: type, data: st.DataObject) -> None:
    scenario = data.draw(scenarios(cls))
    assert scenario.message == scenario.decoder().decode(scenario.encoded())


@given(scenarios())
def test_decode_accepts_a_memoryview_like_bytes(scenario: Scenario) -> None:
    encoded = scenario.encoded()
    assert scenario.decoder().decode(memoryview(encoded)) == scenario.decoder().decode(encoded)


@given(scenarios(Relation))
def test_relation_message_fills_the_cache(scenario: Scenario) -> None:
    decoder = scenario.decoder()
    decoder.decode(scenario.encoded())
    assert isinstance(scenario.message, Relation)
    assert decoder.relations[scenario.message.oid] == scenario.message


@given(scenarios(Type))
def test_type_message_fills_the_cache(scenario: Scenario) -> None:
    decoder = scenario.decoder()
    decoder.decode(scenario.encoded())
    assert isinstance(scenario.message, Type)
    assert decoder.types == {scenario.message.oid: scenario.message}


# --- hostile bytes ------------------------------------------------------------------------

MESSAGE_BYTES = b"BCIUDRYTMOSEcAbPKrp"


def protocol_error_of(decode: Callable[[], object]) -> ProtocolError | None:
    """Run ``decode``; return its ProtocolError, or None if it decoded. Anything else fails."""
    try:
        decode()
    except ProtocolError as exc:
        return exc
    return None


def known_relation_decoder(version: int, in_stream: bool) -> PgoutputDecoder:
    """A decoder that knows OIDs 0..3, so random row changes get past the cache lookup."""
    decoder = PgoutputDecoder(version)
    for oid in range(4):
        columns = tuple(Column(0, f"c{i}", 25, -1) for i in range(oid))
        decoder.decode(encode(Relation(None, oid, "s", f"t{oid}", ReplicaIdentity.FULL, columns)))
    if in_stream:
        decoder.decode(b"S\0\0\0\1\1")
    return decoder


@settings(max_examples=500)
@given(
    version=st.integers(1, 4),
    in_stream=st.booleans(),
    data=st.one_of(
        st.binary(),
        st.tuples(st.sampled_from(MESSAGE_BYTES), st.binary()).map(lambda t: bytes([t[0]]) + t[1]),
        # Row changes for OID 0..3 (known), with random tuples after them.
        st.tuples(
            st.sampled_from(b"IUD"), st.integers(0, 3), st.sampled_from(b"NKO"), st.binary()
        ).map(lambda t: bytes([t[0]]) + t[1].to_bytes(4, "big") + bytes([t[2]]) + t[3]),
    ),
)
def test_random_bytes_give_a_message_or_protocol_error(
    version: int, in_stream: bool, data: bytes
) -> None:
    decoder = known_relation_decoder(version, in_stream and version > 1)
    error = protocol_error_of(lambda: decoder.decode(data))
    assert error is None or error.offset is None or 0 <= error.offset <= len(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_corrupted_valid_messages_give_a_message_or_protocol_error(
    scenario: Scenario, data: st.DataObject
) -> None:
    encoded = bytearray(scenario.encoded())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(u8)
    error = protocol_error_of(lambda: scenario.decoder().decode(bytes(encoded)))
    assert error is None or error.offset is None or 0 <= error.offset <= len(encoded)


def is_valid_shorter_form(scenario: Scenario, length: int) -> bool:
    """Protocol 4's Stream Abort has a short form (no abort_lsn/abort_ts) that is valid."""
    message = scenario.message
    return isinstance(message, StreamAbort) and message.abort_lsn is not None and length == 9


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_proper_prefix_is_rejected(cls: type, data: st.DataObject) -> None:
    scenario = data.draw(scenarios(cls))
    encoded = scenario.encoded()
    decoder = scenario.decoder()
    for length in range(len(encoded)):
        if is_valid_shorter_form(scenario, length):
            continue
        with pytest.raises(ProtocolError) as info:
            decoder.decode(encoded[:length])
        assert info.value.offset is not None
        assert 0 <= info.value.offset <= length
    # Failed decodes left the state alone: the whole message still decodes.
    assert decoder.decode(encoded) == scenario.message


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@given(data=st.data(), garbage=st.binary(min_size=1))
def test_trailing_garbage_is_rejected(cls: type, data: st.DataObject, garbage: bytes) -> None:
    scenario = data.draw(scenarios(cls))
    if isinstance(scenario.message, StreamAbort) and scenario.version >= 4:
        # 8 + 8 bytes of garbage after the short form is the long form.
        garbage = garbage[:15] if len(garbage) == 16 else garbage
    with pytest.raises(ProtocolError) as info:
        scenario.decoder().decode(scenario.encoded() + garbage)
    assert info.value.offset is not None


def test_empty_message_is_rejected_at_offset_zero() -> None:
    with pytest.raises(ProtocolError) as info:
        PgoutputDecoder().decode(b"")
    assert info.value.offset == 0


def test_unknown_message_byte_is_rejected_at_offset_zero() -> None:
    with pytest.raises(ProtocolError, match="unknown pgoutput message byte b'Z'") as info:
        PgoutputDecoder().decode(b"Zzz")
    assert info.value.offset == 0


RELATION = Relation(
    None,
    16384,
    "public",
    "items",
    ReplicaIdentity.DEFAULT,
    (Column(1, "id", 20, -1), Column(0, "body", 25, -1)),
)


def decoder_knowing(relation: Relation = RELATION, version: int = 2) -> PgoutputDecoder:
    decoder = PgoutputDecoder(version)
    decoder.decode(encode(relation))
    return decoder


def test_invalid_utf8_in_a_text_value_is_rejected() -> None:
    bad = b"I" + (16384).to_bytes(4, "big") + b"N\0\2t\0\0\0\1\xfft\0\0\0\0"
    with pytest.raises(ProtocolError, match="utf-8") as info:
        decoder_knowing().decode(bad)
    assert info.value.offset == 13  # the first byte of the value being decoded


def test_unknown_tuple_column_kind_is_rejected_at_its_offset() -> None:
    bad = b"I" + (16384).to_bytes(4, "big") + b"N\0\2nx"
    with pytest.raises(ProtocolError, match="column kind b'x' in column 2") as info:
        decoder_knowing().decode(bad)
    assert info.value.offset == 9


def test_text_value_longer_than_the_message_is_rejected() -> None:
    bad = b"I" + (16384).to_bytes(4, "big") + b"N\0\2nt\0\0\0\x10abc"
    with pytest.raises(ProtocolError, match="truncated") as info:
        decoder_knowing().decode(bad)
    assert info.value.offset == len(bad)


def test_unknown_replica_identity_is_rejected() -> None:
    bad = b"R\0\0\0\1s\0t\0x\0\0"
    with pytest.raises(ProtocolError, match="Relation"):
        PgoutputDecoder().decode(bad)


def test_string_without_nul_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="Origin"):
        PgoutputDecoder().decode(b"O" + bytes(8) + b"no terminator")


def test_row_change_with_wrong_column_count_is_rejected() -> None:
    insert = Insert(None, RELATION, ("1",))
    with pytest.raises(ProtocolError, match=r"tuple of 1 columns for public\.items"):
        decoder_knowing().decode(encode(insert))


@pytest.mark.parametrize(
    "message",
    [
        Update(None, RELATION, "K", ("1",), ("1", "x")),
        Update(None, RELATION, None, None, ("1",)),
        Delete(None, RELATION, "O", ("1", "x", "y")),
    ],
    ids=["update-old", "update-new", "delete"],
)
def test_update_and_delete_with_wrong_column_count_are_rejected(message: PgoutputMessage) -> None:
    with pytest.raises(ProtocolError, match=r"columns for public\.items"):
        decoder_knowing().decode(encode(message))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"I\0\0\x40\0X\0\0", "Insert without a new tuple"),
        (b"U\0\0\x40\0X\0\0", "Update without a new tuple"),
        (b"U\0\0\x40\0K\0\2nnX\0\0", "Update without a new tuple"),
        (b"D\0\0\x40\0N\0\2nn", "Delete without an old tuple"),
    ],
)
def test_row_change_with_a_wrong_tuple_tag_is_rejected(data: bytes, what: str) -> None:
    with pytest.raises(ProtocolError, match=what):
        decoder_knowing().decode(data)


def test_unchanged_toast_and_binary_values_decode_to_their_markers() -> None:
    update = b"U" + (16384).to_bytes(4, "big") + b"N" + encode_tuple((b"\0\1", UNCHANGED_TOAST))
    decoded = decoder_knowing().decode(update)
    assert Update(None, RELATION, None, None, (b"\0\1", UNCHANGED_TOAST)) == decoded


def test_unsupported_protocol_version_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol version 5"):
        PgoutputDecoder(5)


@pytest.mark.parametrize("byte", [b"S", b"E", b"c", b"A"])
def test_protocol_1_rejects_streaming_messages(byte: bytes) -> None:
    with pytest.raises(ProtocolError, match="needs protocol version 2"):
        PgoutputDecoder(1).decode(byte + bytes(8))


@pytest.mark.parametrize("byte", [b"b", b"P", b"K", b"r", b"p"])
def test_protocol_2_rejects_two_phase_messages(byte: bytes) -> None:
    with pytest.raises(ProtocolError, match="needs protocol version 3"):
        PgoutputDecoder(2).decode(byte + bytes(40))


def test_protocol_3_rejects_stream_abort_with_abort_info() -> None:
    with pytest.raises(ProtocolError, match="trailing garbage"):
        PgoutputDecoder(3).decode(b"A" + bytes(24))


# --- relation cache -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Insert(None, RELATION, ("1", "x")),
        Update(None, RELATION, None, None, ("1", "x")),
        Delete(None, RELATION, "K", ("1", None)),
        Truncate(None, 0, (RELATION,)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_change_for_unknown_relation_is_rejected(message: PgoutputMessage) -> None:
    with pytest.raises(ProtocolError, match="unknown relation OID 16384") as info:
        PgoutputDecoder().decode(encode(message))
    assert info.value.offset == (6 if isinstance(message, Truncate) else 1)


def test_row_change_resolves_the_latest_relation_message() -> None:
    decoder = decoder_knowing()
    altered = Relation(None, 16384, "public", "items", ReplicaIdentity.FULL, RELATION.columns)
    decoder.decode(encode(altered))
    decoded = decoder.decode(encode(Insert(None, RELATION, ("1", "x"))))
    assert isinstance(decoded, Insert)
    assert decoded.relation is decoder.relations[16384]
    assert decoded.relation.replica_identity is ReplicaIdentity.FULL


# --- streamed transactions ----------------------------------------------------------------


def test_stream_block_messages_carry_the_xid_and_others_do_not() -> None:
    decoder = decoder_knowing()
    inside = Insert(777, RELATION, ("1", "x"))
    outside = Insert(None, RELATION, ("2", "y"))
    states = [decoder.in_stream]
    assert StreamStart(777, True) == decoder.decode(encode(StreamStart(777, True)))
    states.append(decoder.in_stream)
    assert inside == decoder.decode(encode(inside, in_stream=True))
    assert StreamStop() == decoder.decode(b"E")
    states.append(decoder.in_stream)
    assert outside == decoder.decode(encode(outside))
    assert states == [False, True, False]


def test_stream_start_inside_a_block_is_rejected() -> None:
    decoder = decoder_knowing()
    decoder.decode(encode(StreamStart(1, True)))
    with pytest.raises(ProtocolError, match="no Stream Stop"):
        decoder.decode(encode(StreamStart(2, False)))


def test_stream_stop_outside_a_block_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="outside a streamed block"):
        decoder_knowing().decode(b"E")


def test_stream_commit_after_the_block_is_decoded_outside_it() -> None:
    decoder = decoder_knowing()
    block: list[PgoutputMessage] = [
        StreamStart(5, True),
        Insert(5, RELATION, ("1", None)),
        StreamStop(),
    ]
    for message in block:
        decoder.decode(encode(message, in_stream=decoder.in_stream))
    commit = StreamCommit(5, 0, 100, 200, 300)
    assert commit == decoder.decode(encode(commit))


@pytest.mark.parametrize("version", [2, 3, 4])
def test_stream_abort_without_abort_info_decodes_in_every_version(version: int) -> None:
    assert StreamAbort(5, 6) == PgoutputDecoder(version).decode(encode(StreamAbort(5, 6)))


# --- sequences ----------------------------------------------------------------------------


@st.composite
def transactions(draw: st.DrawFn) -> list[PgoutputMessage]:
    """A stream of committed transactions, as pgoutput sends them (Relation before use)."""
    known = draw(st.lists(relations(), min_size=1, max_size=3, unique_by=lambda r: r.oid))
    sent: set[int] = set()
    out: list[PgoutputMessage] = []
    lsn = draw(st.integers(0, 2**40))
    for xid in range(draw(st.integers(1, 6))):
        changes: list[PgoutputMessage] = []
        for _ in range(draw(st.integers(0, 4))):
            relation = draw(st.sampled_from(known))
            if relation.oid not in sent:
                sent.add(relation.oid)
                changes.append(relation)
            new = draw(rows(relation))
            change: list[PgoutputMessage] = [
                Insert(None, relation, new),
                Update(None, relation, None, None, new),
                Delete(None, relation, "K", new),
            ]
            changes.append(draw(st.sampled_from(change)))
        commit_lsn = lsn + draw(st.integers(1, 1000))
        end_lsn = commit_lsn + draw(st.integers(1, 100))
        ts = draw(timestamps)
        out.append(Begin(commit_lsn, ts, xid))
        out.extend(changes)
        out.append(Commit(0, commit_lsn, end_lsn, ts))
        lsn = end_lsn
    return out


@given(transactions())
def test_begin_commit_pairing_is_preserved_over_a_stream(messages: list[PgoutputMessage]) -> None:
    decoder = PgoutputDecoder(1)
    decoded = [decoder.decode(encode(message)) for message in messages]
    assert messages == decoded
    open_begin: Begin | None = None
    for message in decoded:
        if isinstance(message, Begin):
            assert open_begin is None
            open_begin = message
        elif isinstance(message, Commit):
            assert open_begin is not None
            assert open_begin.final_lsn == message.commit_lsn
            assert open_begin.commit_ts == message.commit_ts
            open_begin = None
        else:
            assert open_begin is not None
    assert open_begin is None


# --- golden bytes from a real PostgreSQL 15 ----------------------------------------------


def golden_fixtures() -> list[dict[str, Any]]:
    index = FIXTURES / "expected.json"
    if not index.exists():  # pragma: no cover - fixtures are committed
        return []
    fixtures: list[dict[str, Any]] = json.loads(index.read_text())["messages"]
    return fixtures


def test_golden_fixtures_are_present() -> None:
    assert len(golden_fixtures()) >= 20


def test_golden_bytes_decode_to_the_reviewed_messages() -> None:
    """Every captured message decodes, in capture order, to its reviewed JSON."""
    meta = json.loads((FIXTURES / "expected.json").read_text())
    decoder = PgoutputDecoder(meta["protocol_version"])
    for fixture in golden_fixtures():
        data = (FIXTURES / fixture["file"]).read_bytes()
        assert fixture["expected"] == message_to_json(decoder.decode(data)), fixture["file"]
