"""Dates, times and timestamps of an event back to PostgreSQL's input text. No I/O.

The one job: the per-value inverses of ``cdc.protocol.temporal`` for ``date``, ``time``,
``timetz``, ``timestamp`` and ``timestamptz`` under each ``time_precision``: numbers of
days, milliseconds or microseconds become the text ``date_out``/``time_out``/
``timestamp_out`` print with ``DateStyle=ISO`` (BC and years past 9999 included); the
ISO strings of ``isostring`` and of timestamptz/timetz are read by PostgreSQL as they
are, except Java's signed and year-0 years. Interval strings need no work (their ISO
8601 designator form is ``interval_in``'s input). No I/O, no logging, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Final

from cdc.protocol.typeinfo import JsonValue
from cdc.replay.scalar_inputs import TextConverter, Where

__all__ = [
    "date_input",
    "iso_date_input",
    "iso_timestamp_input",
    "time_input",
    "timestamp_input",
    "timestamptz_input",
    "timetz_input",
]

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# Days since the epoch that Python's date covers (years 1..9999): the fast path.
_FAST_FIRST_DAY: Final = date(1, 1, 1).toordinal() - _EPOCH_ORDINAL
_FAST_LAST_DAY: Final = date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL
_US_PER_DAY: Final = 86_400_000_000
_INFINITIES: Final = frozenset(("infinity", "-infinity"))
_fromordinal = date.fromordinal
_EPOCH: Final = datetime(1970, 1, 1)
_timedelta = timedelta


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(astronomical year, month, day) of days since 1970-01-01, any year (Howard
    Hinnant's ``civil_from_days``, as ``cdc.protocol.temporal`` computes it forward)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _date_text(days: int) -> str:
    """date_out's ISO text of days since the epoch: ``4714-11-24 BC``, ``5874897-12-31``."""
    if _FAST_FIRST_DAY <= days <= _FAST_LAST_DAY:
        return _fromordinal(days + _EPOCH_ORDINAL).isoformat()
    year, month, day = _civil_from_days(days)
    if year <= 0:  # astronomical year 0 is 1 BC
        return f"{1 - year:04d}-{month:02d}-{day:02d} BC"
    return f"{year:04d}-{month:02d}-{day:02d}"


def _clock_text(seconds: int, micros: int) -> str:
    """``HH:MM:SS[.ffffff]`` (trailing zeros cut, as PostgreSQL prints it); 24:00:00 too."""
    hour, rest = divmod(seconds, 3600)
    minute, second = divmod(rest, 60)
    if micros:
        return f"{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}".rstrip("0")
    return f"{hour:02d}:{minute:02d}:{second:02d}"


def _timestamp_text(us: int) -> str:
    """timestamp_out's text of microseconds since 1970-01-01 00:00, any year."""
    days, us_of_day = divmod(us, _US_PER_DAY)
    seconds, micros = divmod(us_of_day, 1_000_000)
    clock = _clock_text(seconds, micros)
    if _FAST_FIRST_DAY <= days <= _FAST_LAST_DAY:
        return f"{_fromordinal(days + _EPOCH_ORDINAL).isoformat()} {clock}"
    year, month, day = _civil_from_days(days)
    if year <= 0:
        return f"{1 - year:04d}-{month:02d}-{day:02d} {clock} BC"
    return f"{year:04d}-{month:02d}-{day:02d} {clock}"


def date_input(w: Where, fallback: bool) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            return _date_text(value)
        if value is None:
            return None
        if type(value) is str and (value in _INFINITIES or fallback):
            return value
        raise w.bad(value, "days since 1970-01-01 or 'infinity'/'-infinity'")

    return convert


def timestamp_input(w: Where, fallback: bool, us_per_unit: int) -> TextConverter:
    unit = "ms" if us_per_unit == 1000 else "µs"
    expected = f"{unit} since 1970-01-01 or 'infinity'/'-infinity'"

    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            us = value * us_per_unit
            try:
                # Years 1..9999 in C; isoformat prints 6 digits, PostgreSQL cuts zeros.
                text = (_EPOCH + _timedelta(microseconds=us)).isoformat(" ")
            except OverflowError:
                return _timestamp_text(us)
            return text.rstrip("0") if len(text) > 19 else text
        if value is None:
            return None
        if type(value) is str and (value in _INFINITIES or fallback):
            return value
        raise w.bad(value, expected)

    return convert


def time_input(w: Where, fallback: bool, us_per_unit: int) -> TextConverter:
    unit = "ms" if us_per_unit == 1000 else "µs"
    expected = f"{unit} since midnight"

    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            us = value * us_per_unit
            if 0 <= us <= _US_PER_DAY:
                return _clock_text(*divmod(us, 1_000_000))
            raise w.bad(value, f"{expected} (0 to 24:00:00)")
        return w.other(value, expected, fallback=fallback)

    return convert


# Java's ISO years (LocalDate, ZonedTimestamp): 4 digits, '+' past 9999, '-' before year
# 0 (astronomical: 0000 is 1 BC). PostgreSQL reads years 1..9999 as they are, and wants
# the others as a plain number or with " BC" (after the offset, as timestamptz_out).
_SIGNS: Final = frozenset("+-")
_JAVA_DATE: Final = r"([+-]?)(\d{4,})-(\d\d)-(\d\d)"
_JAVA_DATE_RE: Final = re.compile(_JAVA_DATE)
_JAVA_TIMESTAMP_RE: Final = re.compile(_JAVA_DATE + r"T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?")
_JAVA_ZONED_RE: Final = re.compile(_JAVA_DATE + r"T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z")


def _pg_date(m: re.Match[str]) -> tuple[str, bool]:
    """(``YYYY-MM-DD`` as PostgreSQL reads it, whether BC) of a matched Java ISO date."""
    year = -int(m[2]) if m[1] == "-" else int(m[2])
    if year <= 0:
        return f"{1 - year:04d}-{m[3]}-{m[4]}", True
    return f"{year:04d}-{m[3]}-{m[4]}", False


def _pg_clock(m: re.Match[str]) -> str:
    """The matched clock with its fraction as PostgreSQL prints it (trailing zeros cut)."""
    fraction = (m[6] or "").rstrip("0")
    return f"{m[5]}.{fraction}" if fraction else m[5]


def _needs_rewrite(value: str) -> bool:
    """Whether a Java ISO year is one PostgreSQL cannot read as it is (signed, or 0000)."""
    return value[:1] in _SIGNS or value[:4] == "0000"


def timestamptz_input(w: Where, fallback: bool) -> TextConverter:
    """``2024-03-01T10:34:56.789012Z`` is read by timestamptz_in as it is (ISO 8601);
    only signed and year-0 years are rewritten, to ``... +00 BC`` or a plain year."""
    expected = "a ZonedTimestamp string"
    signs = _SIGNS

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            # The common case first, inline (the hot path of the commonest time type).
            if (value[:1] not in signs and value[:4] != "0000") or value == "-infinity":
                return value
            m = _JAVA_ZONED_RE.fullmatch(value)
            if m is None:
                if fallback:
                    return value
                raise w.bad(value, expected)
            day, bc = _pg_date(m)
            clock = _pg_clock(m)
            return f"{day} {clock}+00 BC" if bc else f"{day} {clock}+00"
        return w.other(value, expected, fallback=False)

    return convert


def timetz_input(w: Where, fallback: bool) -> TextConverter:
    """``11:08:31.7+05:30`` is timetz_in's input as it is; ``Z`` becomes ``+00``."""

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return value[:-1] + "+00" if value[-1:] == "Z" else value
        return w.other(value, "a ZonedTime string", fallback=False)

    return convert


def _iso_input(
    w: Where,
    fallback: bool,
    expected: str,
    pattern: re.Pattern[str],
    render: Callable[[re.Match[str]], str],
) -> TextConverter:
    """A ``time_precision: isostring`` value: PostgreSQL reads it as it is, unless it
    has Java's year forms (``+10000``, ``-0043`` BC), which ``pattern``/``render`` turn
    into PostgreSQL's."""

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            if not _needs_rewrite(value) or value == "-infinity":
                return value
            m = pattern.fullmatch(value)
            if m is None:
                if fallback:
                    return value
                raise w.bad(value, expected)
            return render(m)
        return w.other(value, expected, fallback=False)

    return convert


def _date_from_java(m: re.Match[str]) -> str:
    day, bc = _pg_date(m)
    return f"{day} BC" if bc else day


def _timestamp_from_java(m: re.Match[str]) -> str:
    day, bc = _pg_date(m)
    clock = _pg_clock(m)
    return f"{day} {clock} BC" if bc else f"{day} {clock}"


def iso_date_input(w: Where, fallback: bool) -> TextConverter:
    expected = "an ISO date string (time_precision: isostring)"
    return _iso_input(w, fallback, expected, _JAVA_DATE_RE, _date_from_java)


def iso_timestamp_input(w: Where, fallback: bool) -> TextConverter:
    expected = "an ISO timestamp string (time_precision: isostring)"
    return _iso_input(w, fallback, expected, _JAVA_TIMESTAMP_RE, _timestamp_from_java)
