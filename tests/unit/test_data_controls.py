"""Data controls without services: the config model, the masks, the encoder's hook."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from cdc.config import ConnectorConfig, load_connector_config_text
from cdc.envelope import EnvelopeEncoder, TxContext
from cdc.errors import ConfigError
from cdc.masking import REDACTED, TableControls, data_controls, hash_mask, redact
from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Column,
    Delete,
    Insert,
    Relation,
    ReplicaIdentity,
    Update,
)
from cdc.protocol.values import UNAVAILABLE_VALUE_PLACEHOLDER, ValueOptions

KEY = "0123456789abcdef0123456789abcdef"
BASE = (
    "name: inventory\npostgres:\n  dsn: postgresql://cdc@db/inventory\n"
    "tables: [public.customers, public.orders]\n"
)


def load(extra: str, env: dict[str, str] | None = None) -> ConnectorConfig:
    return load_connector_config_text(BASE + extra, source="inventory.yaml", env=env or {})


def error(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(extra)
    return str(info.value)


def hexhmac(data: bytes) -> str:
    return hmac.new(KEY.encode(), data, hashlib.sha256).hexdigest()


# --- config -----------------------------------------------------------------------------


def test_a_plain_table_list_still_loads_without_options() -> None:
    config = load("")
    assert config.tables == ("public.customers", "public.orders")
    assert config.table_options == {}
    assert data_controls(config) == {}


def test_table_options_load_with_columns_where_and_masks() -> None:
    config = load(
        "masking_key: ${KEY}\n"
        "table_options:\n"
        "  customers:\n"
        "    columns: {exclude: [ssn]}\n"
        "    where: \"country <> 'XX'\"\n"
        "    mask: {email: hash, phone: redact}\n",
        env={"KEY": KEY},
    )
    controls = data_controls(config)["public.customers"]
    assert frozenset({"ssn"}) == controls.exclude
    assert controls.include is None
    assert controls.row_filter == "country <> 'XX'"
    assert controls.mask_kinds == {"email": "hash", "phone": "redact"}
    assert hexhmac(b"a@b.c") == controls.masks["email"]("a@b.c")


def test_include_and_exclude_are_exclusive() -> None:
    message = error("table_options:\n  customers: {columns: {include: [id], exclude: [ssn]}}\n")
    assert "table_options.customers.columns" in message
    assert "not both" in message


def test_a_table_not_in_tables_is_refused() -> None:
    assert "public.other is not in tables" in error("table_options:\n  other: {where: 'x > 1'}\n")


def test_hash_needs_a_masking_key() -> None:
    assert "needs masking_key" in error("table_options:\n  customers: {mask: {email: hash}}\n")


def test_a_short_masking_key_is_refused() -> None:
    assert "at least 16 bytes" in error("masking_key: short\n")


def test_a_column_excluded_and_masked_is_refused() -> None:
    message = error("table_options:\n  customers: {columns: {exclude: [a]}, mask: {a: redact}}\n")
    assert "both excluded and masked" in message


def test_a_masked_column_outside_the_include_list_is_refused() -> None:
    message = error("table_options:\n  customers: {columns: {include: [id]}, mask: {a: redact}}\n")
    assert "not in columns.include" in message


def test_a_row_filter_must_be_one_expression() -> None:
    assert "one SQL boolean expression" in error(
        "table_options:\n  customers: {where: 'true; DROP TABLE x'}\n"
    )


def test_the_masking_key_is_not_in_repr() -> None:
    config = load(f"masking_key: {KEY}\n")
    assert KEY not in repr(config)


# --- checks against the catalog ---------------------------------------------------------


def controls(**kwargs: Any) -> TableControls:
    return TableControls(table="public.customers", **kwargs)


def test_an_unknown_column_names_the_table_and_the_column() -> None:
    with pytest.raises(ConfigError) as info:
        controls(exclude=frozenset({"sssn"})).check(["id", "ssn"], ["id"])
    assert "table_options.public.customers.columns.exclude" in str(info.value)
    assert "public.customers has no column 'sssn'" in str(info.value)


def test_a_key_column_cannot_be_excluded() -> None:
    with pytest.raises(ConfigError, match="part of its key"):
        controls(exclude=frozenset({"id"})).check(["id", "ssn"], ["id"])


def test_a_key_column_left_out_of_include_is_refused() -> None:
    with pytest.raises(ConfigError, match="part of its key"):
        controls(include=frozenset({"ssn"})).check(["id", "ssn"], ["id"])


def test_a_key_column_cannot_be_masked() -> None:
    with pytest.raises(ConfigError, match="cannot be masked"):
        controls(masks={"id": redact}).check(["id", "ssn"], ["id"])


def test_valid_controls_pass_the_check() -> None:
    controls(include=frozenset({"id", "email"}), masks={"email": redact}).check(
        ["id", "email", "ssn"], ["id"]
    )


# --- masks ------------------------------------------------------------------------------


def test_hash_is_keyed_hmac_sha256_of_the_text_in_hex() -> None:
    mask = hash_mask(KEY.encode())
    assert hexhmac(b"ada@example.org") == mask("ada@example.org")
    assert mask("x") == mask("x")
    assert hash_mask(b"another key of 16+ bytes")("x") != mask("x")


def test_hash_of_a_non_string_value_hashes_its_json_text() -> None:
    mask = hash_mask(KEY.encode())
    assert hexhmac(b"42") == mask(42)
    assert hexhmac(orjson.dumps([1, None])) == mask([1, None])


def test_masks_keep_null() -> None:
    assert hash_mask(KEY.encode())(None) is None
    assert redact(None) is None


def test_redact_is_a_fixed_string() -> None:
    assert redact("secret") == REDACTED
    assert redact(7) == REDACTED


# --- the envelope's hook ----------------------------------------------------------------

TX = TxContext(xid=1, commit_lsn=200, commit_ts_us=1_700_000_000_000_000, last_commit_lsn=None)
CUSTOMERS = Relation(
    xid=None,
    oid=16500,
    namespace="public",
    name="customers",
    replica_identity=ReplicaIdentity.FULL,
    columns=(
        Column(1, "id", 20, -1),
        Column(1, "email", 25, -1),
        Column(1, "ssn", 25, -1),
        Column(1, "age", 23, -1),
    ),
)


def encoder_with(control: TableControls) -> EnvelopeEncoder:
    """The connector's encoder with ``control`` on public.customers (key: id)."""
    return EnvelopeEncoder(
        connector="shop",
        database="db",
        retention_topic=lambda s, t: f"shop.{s}.{t}",
        compacted_topic=lambda s, t: f"shop.{s}.{t}.latest",
        options=ValueOptions(),
        key_columns=lambda relation: ("id",),
        controls={"public.customers": control},
    )


def masked_encoder(**kwargs: Any) -> EnvelopeEncoder:
    return encoder_with(
        TableControls(
            table="public.customers",
            exclude=frozenset({"ssn"}),
            masks={"email": hash_mask(KEY.encode()), "age": redact},
            **kwargs,
        )
    )


def values(records: list[Any]) -> list[Any]:
    return [None if r.value is None else orjson.loads(r.value) for r in records]


def test_insert_drops_excluded_and_masks_masked_columns() -> None:
    records = masked_encoder().encode(
        Insert(xid=None, relation=CUSTOMERS, new=("1", "a@b.c", "123-45", "40")), TX, 100, 0
    )
    event, compacted = values(records)
    expected = {"id": 1, "email": hexhmac(b"a@b.c"), "age": REDACTED}
    assert expected == event["after"]
    assert expected == compacted
    assert b"123-45" not in b"".join(r.value or b"" for r in records)
    assert b"a@b.c" not in b"".join(r.value or b"" for r in records)


def test_before_images_are_masked_too() -> None:
    old = ("1", "a@b.c", "123-45", "40")
    new = ("1", "z@b.c", "123-45", "41")
    encoder = masked_encoder()
    update = values(encoder.encode(Update(None, CUSTOMERS, "O", old, new), TX, 100, 0))[0]
    delete = values(encoder.encode(Delete(None, CUSTOMERS, "O", old), TX, 101, 0))[0]
    masked_old = {"id": 1, "email": hexhmac(b"a@b.c"), "age": REDACTED}
    assert masked_old == update["before"]
    assert {"id": 1, "email": hexhmac(b"z@b.c"), "age": REDACTED} == update["after"]
    assert masked_old == delete["before"]


def test_an_unchanged_toast_placeholder_is_not_masked() -> None:
    old = None
    new = ("1", UNCHANGED_TOAST, UNCHANGED_TOAST, "41")
    event = values(masked_encoder().encode(Update(None, CUSTOMERS, None, old, new), TX, 100, 0))[0]
    assert event["after"]["email"] == UNAVAILABLE_VALUE_PLACEHOLDER
    assert event["unavailable_columns"] == ["email"]  # the excluded ssn is not named


def test_a_snapshot_read_is_masked_like_the_stream() -> None:
    encoder = masked_encoder()
    row = ("1", "a@b.c", "123-45", "40")
    streamed = values(encoder.encode(Insert(None, CUSTOMERS, row), TX, 100, 0))[0]["after"]
    table = encoder.table(CUSTOMERS)
    assert streamed == table.row(row, 100)


def test_an_encoder_refuses_a_masked_key() -> None:
    encoder = encoder_with(TableControls(table="public.customers", masks={"id": redact}))
    with pytest.raises(ConfigError, match="part of its key"):
        encoder.table(CUSTOMERS)


# --- a row filter cdc evaluates (PostgreSQL before 15, FOR ALL TABLES) ---------------------

ORDERS = Relation(
    xid=None,
    oid=16600,
    namespace="public",
    name="customers",
    replica_identity=ReplicaIdentity.DEFAULT,
    columns=(Column(1, "id", 20, -1), Column(0, "note", 25, -1)),
)


def filtered(where: str) -> EnvelopeEncoder:
    """An encoder evaluating ``where`` on public.customers (FULL: ``CUSTOMERS``)."""
    return encoder_with(
        TableControls(table="public.customers", row_filter=where, filter_in_cdc=True)
    )


def ops(records: list[Any]) -> list[tuple[str, Any]]:
    """Per record: ("log", its op) on the retention topic; ("latest", "row") for a row
    on the compacted topic, ("latest", None) for a tombstone."""
    out: list[tuple[str, Any]] = []
    for record in records:
        if record.topic.endswith(".latest"):
            out.append(("latest", None if record.value is None else "row"))
        else:
            out.append(("log", orjson.loads(record.value)["op"]))
    return out


def test_inserts_and_deletes_outside_the_filter_publish_nothing() -> None:
    encoder = filtered("age >= 18")
    kept = encoder.encode(Insert(None, CUSTOMERS, ("1", "a", "s", "40")), TX, 100, 0)
    assert ops(kept) == [("log", "c"), ("latest", "row")]
    assert encoder.encode(Insert(None, CUSTOMERS, ("2", "b", "s", "9")), TX, 101, 0) == []
    assert encoder.encode(Insert(None, CUSTOMERS, ("3", "b", "s", None)), TX, 102, 0) == []
    assert encoder.encode(Delete(None, CUSTOMERS, "O", ("2", "b", "s", "9")), TX, 103, 0) == []
    gone = encoder.encode(Delete(None, CUSTOMERS, "O", ("1", "a", "s", "40")), TX, 104, 0)
    assert ops(gone) == [("log", "d"), ("latest", None)]


@pytest.mark.parametrize(
    ("old_age", "new_age", "expected"),
    [
        ("40", "41", [("log", "u"), ("latest", "row")]),  # both pass: an update
        ("9", "10", []),  # neither: nothing
        ("40", "9", [("log", "d"), ("latest", None)]),  # leaves the filter: a delete
        ("9", "40", [("log", "c"), ("latest", "row")]),  # enters it: an insert
    ],
)
def test_an_update_is_transformed_as_postgresql_15_does(
    old_age: str, new_age: str, expected: list[tuple[str, Any]]
) -> None:
    old = ("1", "a", "s", old_age)
    new = ("1", "a", "s", new_age)
    records = filtered("age >= 18").encode(Update(None, CUSTOMERS, "O", old, new), TX, 100, 0)
    assert ops(records) == expected
    if expected and expected[0][1] == "d":
        assert values(records)[0]["before"]["age"] == 40
    if expected and expected[0][1] == "c":
        assert values(records)[0]["after"]["age"] == 40


def test_an_update_entering_the_filter_takes_unchanged_values_from_the_old_row() -> None:
    old = ("1", "long text", "s", "9")
    new = ("1", UNCHANGED_TOAST, "s", "40")
    records = filtered("age >= 18").encode(Update(None, CUSTOMERS, "O", old, new), TX, 100, 0)
    assert values(records)[0]["after"]["email"] == "long text"


@pytest.mark.parametrize(
    ("old_id", "new_id", "expected"),
    [
        ("5", "6", ["d", None, "c", "row"]),
        ("5", "500", ["d", None]),  # the old key passes, the new one not
        ("500", "6", ["c", "row"]),
        ("500", "600", []),
    ],
)
def test_a_key_change_keeps_the_side_that_passes(
    old_id: str, new_id: str, expected: list[Any]
) -> None:
    encoder = EnvelopeEncoder(
        connector="shop",
        database="db",
        retention_topic=lambda s, t: f"shop.{s}.{t}",
        compacted_topic=lambda s, t: f"shop.{s}.{t}.latest",
        options=ValueOptions(),
        controls={
            "public.customers": TableControls(
                table="public.customers", row_filter="id < 100", filter_in_cdc=True
            )
        },
    )
    old = (old_id, None)
    new = (new_id, "x")
    records = encoder.encode(Update(None, ORDERS, "K", old, new), TX, 100, 0)
    assert [op for _, op in ops(records)] == expected


def test_a_filter_the_publication_applies_is_not_evaluated_again() -> None:
    encoder = encoder_with(TableControls(table="public.customers", row_filter="age >= 18"))
    records = encoder.encode(Insert(None, CUSTOMERS, ("2", "b", "s", "9")), TX, 101, 0)
    assert ops(records) == [("log", "c"), ("latest", "row")]
