"""PostgreSQL log sequence numbers: parse and format the "X/Y" text form.

An LSN travels through the pipeline as a plain ``int`` (the hot path must not allocate a
wrapper per event); this module is the one place that knows its text form.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["MAX_LSN", "Lsn", "format_lsn", "parse_lsn"]

Lsn = NewType("Lsn", int)

MAX_LSN = (1 << 64) - 1


def parse_lsn(text: str) -> Lsn:
    """Parse PostgreSQL's ``"16/B374D848"`` form.

    Raises:
        ValueError: when ``text`` is not two hexadecimal halves of at most 32 bits each.
    """
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not an LSN: {text!r} (expected the form 16/B374D848)")
    try:
        return Lsn((int(high, 16) << 32) | int(low, 16))
    except ValueError:
        raise ValueError(f"not an LSN: {text!r} (expected the form 16/B374D848)") from None


def format_lsn(lsn: int) -> str:
    """Format as PostgreSQL does (``pg_lsn`` output): upper-case hex, no padding."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
