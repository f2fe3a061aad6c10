"""Load the optional compiled core and map converters to its column kinds. No I/O.

The one job: decide once, at import, whether the compiled hot paths (the ``cdc_native``
extension module, built from ``native/`` by ``scripts/bootstrap``) are used, and build its
``RowEncoder`` for a table: the converters it has twins of (integers, booleans, text,
numeric as a string, date/time/timestamp/timestamptz) run compiled, every other one is
called from the compiled loop and its value written by ``orjson.dumps``. The Python
code stays the reference: the compiled functions equal it byte for byte on what they
accept and refuse (raise) everything else, which then takes the Python path; without the
module, or with ``CDC_NATIVE=0`` in the environment, only the Python path runs.

``cdc_native`` is a top-level module of its own distribution (``cdc-native``), not
``cdc._native``: cdc is installed editable by setuptools, and a second ``cdc/`` directory
in site-packages would not join the editable package.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Final

import orjson

from cdc.protocol import scalars, temporal
from cdc.protocol.messages import UNCHANGED_TOAST, Column, TupleData
from cdc.protocol.typeinfo import Converter, JsonValue

__all__ = [
    "ACTIVE",
    "DISABLED_BY_ENV",
    "InsertEncode",
    "NativeUnsupported",
    "RowEncode",
    "TupleDecode",
    "column_kinds",
    "decode_tuple",
    "module",
    "native_core_active",
    "native_core_status",
    "row_encoder",
    "row_encoders",
]


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("cdc_native")
    except ImportError:
        return None


#: ``CDC_NATIVE=0`` forces the Python path (read once, here).
DISABLED_BY_ENV: Final = os.environ.get("CDC_NATIVE", "1").strip() == "0"
_MODULE: Final = None if DISABLED_BY_ENV else _load()
#: Whether the compiled core is in use.
ACTIVE: Final = _MODULE is not None

TupleDecode = Callable[[bytes, int, object], tuple[TupleData, int]]
RowEncode = Callable[[TupleData], tuple[bytes, bytes]]
InsertEncode = Callable[
    [TupleData, tuple[bytes, bytes, bytes], int, int], tuple[bytes, bytes, bytes]
]

#: ``decode_tuple(data, pos, unchanged) -> (values, offset)``, or None (Python path).
decode_tuple: Final[TupleDecode | None] = None if _MODULE is None else _MODULE.decode_tuple


class _NoNativeError(Exception):
    """Stands for the native ``Unsupported`` when there is no native module."""


#: What ``RowEncoder.encode`` raises for a row it cannot convert exactly.
NativeUnsupported: Final[type[Exception]] = (
    _NoNativeError if _MODULE is None else _MODULE.Unsupported
)


def module() -> ModuleType | None:
    """The compiled module, or None (not built, or ``CDC_NATIVE=0``): for the edge
    modules that wrap its I/O parts (``cdc.kafka.native_produce``)."""
    return _MODULE


def native_core_active() -> bool:
    """Whether the compiled hot paths are in use (for a start-up log line)."""
    return ACTIVE


def native_core_status() -> str:
    """``"native"``, ``"python (CDC_NATIVE=0)"`` or ``"python (cdc_native not built)"``."""
    if ACTIVE:
        return "native"
    return "python (CDC_NATIVE=0)" if DISABLED_BY_ENV else "python (cdc_native not built)"


# Column kinds of the native RowEncoder (native/src/lib.rs ``Kind::from_code``), by the
# converter RowConverter picked: the converter, not the type, decides the output, so a
# domain over int or an option that picks another converter is handled without a list
# of types and options here.
_TEXT: Final = 0
_KINDS: Final[dict[object, int]] = {
    int: 1,
    scalars.bool: 2,
    scalars.numeric_string: 3,
    temporal._date: 4,  # the reference converters, by identity
    temporal._timestamp_us: 5,
    temporal._timestamp_ms: 6,
    temporal._time_us: 7,
    temporal._time_ms: 8,
}
_TIMESTAMPTZ_OID: Final = 1184
_TIMESTAMPTZ_KIND: Final = 10  # + the number of fractional digits, 0..6
_ZONED_TIMESTAMP: Final = "_zoned_timestamp.<locals>.convert"


# Any other converter: RowEncoder calls it and writes its value with orjson.dumps.
_PYTHON: Final = 100


def _kind(column: Column, converter: Converter | None) -> int:
    if converter is None:
        return _TEXT
    kind = _KINDS.get(converter)
    if kind is not None:
        return kind
    if (
        column.type_oid == _TIMESTAMPTZ_OID
        and getattr(converter, "__module__", None) == temporal.__name__
        and getattr(converter, "__qualname__", None) == _ZONED_TIMESTAMP
    ):
        # temporal.timestamptz_converter's width, from the same type modifier.
        typmod = column.type_modifier
        return _TIMESTAMPTZ_KIND + (typmod if 0 <= typmod <= 6 else 6)
    return _PYTHON


def column_kinds(columns: Sequence[Column], converters: Sequence[Converter | None]) -> list[int]:
    """The native kind code of each column (100: its Python converter is called)."""
    return [_kind(c, f) for c, f in zip(columns, converters, strict=True)]


def row_encoder(
    columns: Sequence[Column],
    converters: Sequence[Converter | None],
    key_indexes: Sequence[int],
    unchanged_toast: JsonValue,
) -> RowEncode | None:
    """The native ``encode(values) -> (row JSON, key JSON)`` of a table, or None.

    None when the native core is off or names repeat (a dict would merge them).
    ``encode`` raises ``NativeUnsupported`` for a row it cannot convert exactly, a
    converter's failure included: the Python path then gives the exact error.
    """
    encoders = row_encoders(columns, converters, key_indexes, unchanged_toast)
    return None if encoders is None else encoders[0]


def row_encoders(
    columns: Sequence[Column],
    converters: Sequence[Converter | None],
    key_indexes: Sequence[int],
    unchanged_toast: JsonValue,
) -> tuple[RowEncode, InsertEncode] | None:
    """``row_encoder``'s ``encode`` and, of the same table, ``insert(values, source,
    lsn, now_us) -> (event JSON, row JSON, key JSON)``: a whole insert event, ``source``
    the transaction's ``source`` template split where the LSN goes (three bytes). Both
    raise ``NativeUnsupported`` alike."""
    if _MODULE is None:
        return None
    names = [c.name for c in columns]
    if len(set(names)) != len(names) or len(set(key_indexes)) != len(key_indexes):
        return None
    kinds = column_kinds(columns, converters)
    called = [f if k == _PYTHON else None for k, f in zip(kinds, converters, strict=True)]
    encoder = _MODULE.RowEncoder(
        kinds,
        names,
        list(key_indexes),
        orjson.dumps(unchanged_toast),
        UNCHANGED_TOAST,
        called,
        orjson.dumps,
    )
    encode: RowEncode = encoder.encode
    insert: InsertEncode = encoder.insert
    return encode, insert
