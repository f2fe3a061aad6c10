"""Micro benchmark: µs per value of the replay's inverse converters, next to the forward ones.

Prints one JSON line. The values are those of bench/decode_bench.py's six-column row
(bigint, int, a ~100-character text, numeric(12,2), timestamptz, a small jsonb), first
converted forward (PostgreSQL text -> JSON value, ``cdc.protocol.values.converter_for``)
and read back from JSON bytes as the replay gets them; then each direction is timed per
value, and the whole row back (the six inverse converters applied in turn, as the
replay's batch does). This is a script, not a test: numbers depend on the machine and
are never asserted.

    .venv/bin/python bench/replay_values_bench.py [--values N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from cdc.protocol.values import ValueOptions, converter_for
from cdc.replay.values import text_converter_for

COLUMNS = (
    ("bigint", 20, -1, "9007199254740993"),
    ("int", 23, -1, "42"),
    (
        "text",
        25,
        -1,
        "A sturdy oak side table with two drawers, brass handles and a hand-rubbed oil "
        "finish (ships flat).",
    ),
    ("numeric", 1700, (12 << 16 | 2) + 4, "1234.56"),
    ("timestamptz", 1184, -1, "2024-05-01 12:34:56.789012+00"),
    ("jsonb", 3802, -1, '{"color": "oak", "tags": ["furniture", "table"], "stock": 17}'),
)
# Other common types, timed alone (not part of the row).
OTHERS = (
    ("timestamp", 1114, -1, "2024-05-01 12:34:56.789012"),
    ("date", 1082, -1, "2024-05-01"),
    ("bytea", 17, -1, "\\x" + "5c22" * 16),
    ("integer[]", 1007, -1, "{1,2,3,4,5,6,7,8}"),
    ("text[]", 1009, -1, '{oak,"side table",NULL,"a \\"b\\""}'),
)


def best_us_per_call(function: Callable[[Any], Any], value: Any, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            function(value)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of R runs is reported")
    args = parser.parse_args()
    options = ValueOptions()
    n, repeat = args.values, args.repeat

    per_type: dict[str, dict[str, float | None]] = {}
    inverses = []
    event_values = []
    for name, oid, typmod, text in COLUMNS + OTHERS:
        forward = converter_for(oid, typmod, options)
        forward_call: Callable[[Any], Any] = forward if forward is not None else str
        value = orjson.loads(orjson.dumps(forward_call(text)))
        inverse = text_converter_for(oid, typmod, options, column=name)
        assert inverse(value) is not None
        if (name, oid, typmod, text) in COLUMNS:
            inverses.append(inverse)
            event_values.append(value)
        per_type[name] = {
            # None: no forward converter, the daemon puts the text itself in the event.
            "forward_us": round(best_us_per_call(forward, text, n, repeat), 3)
            if forward is not None
            else None,
            "inverse_us": round(best_us_per_call(inverse, value, n, repeat), 3),
        }

    pairs = tuple(zip(inverses, event_values, strict=True))

    def row_back(_: object) -> tuple[str | None, ...]:
        return tuple([convert(value) for convert, value in pairs])

    row_us = best_us_per_call(row_back, None, n, repeat)
    print(
        json.dumps(
            {
                "benchmark": "replay_values_6_columns",
                "values": n,
                "per_type": per_type,
                "row_inverse_us": round(row_us, 3),
                "row_inverse_per_s": round(1e6 / row_us),
                "python": platform.python_version(),
                "implementation": sys.implementation.name,
            }
        )
    )


if __name__ == "__main__":
    main()
