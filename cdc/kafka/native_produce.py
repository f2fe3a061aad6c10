"""Edge: produce a unit's records through the compiled core, on confluent-kafka's own handle.

The one job: build, for a real ``confluent_kafka.Producer``, the compiled
``cdc_native.RecordProducer`` (``native/src/produce.rs``) that hands records to the same
``rd_kafka_t`` in one call per unit, or say why not. Used in ``exactly_once`` only, where
no record needs a delivery report: there, ``Producer.produce()`` costs about as much
Python work per record as building the record did, half of it in the report that
``poll()`` must then serve under the GIL (bench/e2e.py's profile: 25 % of the connector
thread in ``produce`` and 11 % in ``poll``).

Nothing here is guessed. The functions are resolved with ``dlsym`` through confluent-kafka's
own extension module, so they are those of the librdkafka it loaded (``RTLD_NOLOAD``: never
a second copy), and that library must report the version confluent-kafka reports. The
handle is read where confluent-kafka keeps it (the first field after the object header of
its ``Handle``, unchanged since 0.9) only for the confluent-kafka major version this was
checked against, and is then checked with librdkafka itself: it must be a producer named
for the client id the sink gave it. Anything else, and ``CDC_NATIVE=0``, keeps the Python
path (``Producer.produce()``), which stays the reference.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Final, Protocol

import confluent_kafka
from confluent_kafka import cimpl

from cdc import native

__all__ = ["PYTHON_PATH", "RecordProduce", "record_producer"]

#: confluent-kafka major versions whose ``Handle`` layout this reads (checked: 2.16).
_KNOWN_MAJORS: Final = (2,)
_RD_KAFKA_PRODUCER: Final = 0  # rd_kafka_type_t
#: What ``RecordProducer.produce`` returns for a record it leaves to confluent-kafka.
PYTHON_PATH: Final[int] = getattr(native.module(), "PYTHON_PATH", -(2**31))


class RecordProduce(Protocol):
    """``produce(records, start) -> (index, error)``: ``records[start:]`` handed to
    librdkafka in order until one is not (``error`` its librdkafka code, or
    ``PYTHON_PATH``), ``(len(records), 0)`` when all were."""

    def __call__(self, records: list[Any], start: int, /) -> tuple[int, int]: ...


def _address(library: ctypes.CDLL, name: str) -> int:
    value = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    if not value:
        raise AttributeError(name)
    return value


def record_producer(producer: object, client_id: str) -> tuple[RecordProduce | None, str]:
    """The compiled ``produce`` for ``producer``, or None, and why (for the start log).

    ``client_id`` is the ``client.id`` the producer was configured with: librdkafka names
    the handle ``<client.id>#producer-<n>``, which proves the handle read is this one.
    """
    module = native.module()
    if module is None or not hasattr(module, "RecordProducer"):
        return None, native.native_core_status()
    if type(producer) is not confluent_kafka.Producer:
        return None, "python (not a confluent_kafka.Producer)"
    major = confluent_kafka.version()[0].split(".")[0]
    if not major.isdigit() or int(major) not in _KNOWN_MAJORS:
        return None, f"python (confluent-kafka {confluent_kafka.version()[0]} not checked)"
    try:
        library = ctypes.CDLL(cimpl.__file__, mode=os.RTLD_NOW | os.RTLD_NOLOAD)
        version = library.rd_kafka_version
        version.restype = ctypes.c_int
        version.argtypes = []
        name = library.rd_kafka_name
        name.restype = ctypes.c_char_p
        name.argtypes = [ctypes.c_void_p]
        kind = library.rd_kafka_type
        kind.restype = ctypes.c_int
        kind.argtypes = [ctypes.c_void_p]
        functions = [
            _address(library, symbol)
            for symbol in (
                "rd_kafka_producev",
                "rd_kafka_headers_new",
                "rd_kafka_header_add",
                "rd_kafka_headers_destroy",
            )
        ]
    except (OSError, AttributeError) as exc:
        return None, f"python (librdkafka's functions not found: {exc})"
    if version() != confluent_kafka.libversion()[1]:
        return None, "python (a librdkafka other than confluent-kafka's answered)"
    # confluent_kafka.h: typedef struct { PyObject_HEAD rd_kafka_t *rk; ... } Handle;
    handle = ctypes.c_void_p.from_address(id(producer) + object.__basicsize__).value
    if (
        not handle
        or kind(handle) != _RD_KAFKA_PRODUCER
        or not (name(handle) or b"").startswith(f"{client_id}#producer-".encode())
    ):
        return None, "python (the producer's handle was not found)"
    compiled = module.RecordProducer(producer, handle, *functions)
    produce: RecordProduce = compiled.produce
    return produce, "native"
