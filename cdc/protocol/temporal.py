"""Date, time and interval values: PostgreSQL's text output form to JSON. No I/O.

The one job: the converters of ``date``, ``time``, ``timetz``, ``timestamp``,
``timestamptz`` and ``interval`` under each ``time_precision`` and ``interval_handling``
mode, from the text PostgreSQL prints with ``DateStyle=ISO``, ``TimeZone=UTC`` and
``IntervalStyle=postgres`` (forced by ``cdc.postgres.source.SESSION_OPTIONS``). No I/O, no
logging, no clock.

Dates and timestamps outside Python's ``datetime`` range (BC, years past 9999) are
computed with integer arithmetic on the proleptic Gregorian calendar, PostgreSQL's year
1 BC being astronomical year 0. Leap seconds never reach us: PostgreSQL accepts
``23:59:60`` on input but stores and prints it as the next minute (``24:00:00`` for a
``time``), so a ``:60`` in output is refused as not PostgreSQL's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Final, Literal, TypeAlias

from cdc.errors import ConversionError
from cdc.protocol.typeinfo import Converter, JsonValue

__all__ = [
    "IntervalHandling",
    "TimePrecision",
    "date_converter",
    "interval_converter",
    "time_converter",
    "timestamp_converter",
    "timestamptz_converter",
    "timetz_converter",
]

TimePrecision: TypeAlias = Literal["adaptive", "adaptive_time_microseconds", "connect", "isostring"]
IntervalHandling: TypeAlias = Literal["string", "numeric"]

# --- Calendar arithmetic (proleptic Gregorian, astronomical years) -------------------------

_UNIX_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_US_PER_DAY: Final = 86_400_000_000
_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a valid proleptic Gregorian date, any astronomical year.

    Validates month and day, since nothing downstream would.
    """
    if 1 <= year <= 9999:
        return date(year, month, day).toordinal() - _UNIX_EPOCH_ORDINAL
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month] + (month == 2 and leap):
        raise ValueError(f"day {day} out of range")
    return _days_from_civil_unchecked(year, month, day)


def _days_from_civil_unchecked(year: int, month: int, day: int) -> int:
    """Howard Hinnant's ``days_from_civil``; floor division keeps it exact for years < 1."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of ``_days_from_civil``: (astronomical year, month, day)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _year_from_text(text: str, bc: bool) -> int:
    year = int(text)
    if year < 1:
        raise ValueError("year 0 does not exist in PostgreSQL's output")
    return 1 - year if bc else year


def _java_year(year: int) -> str:
    """A year as Java's ISO_LOCAL_DATE prints it (4 to 10 digits, SignStyle.EXCEEDS_PAD)."""
    if year > 9999:
        return f"+{year}"
    if year < 0:
        return f"-{-year:04d}"
    return f"{year:04d}"


_FRACTION_SCALE: Final = (0, 100_000, 10_000, 1_000, 100, 10, 1)


def _fraction_us(digits: str) -> int:
    """Microseconds of the 1 to 6 fractional digits PostgreSQL prints (trailing zeros cut)."""
    if not 0 < len(digits) <= 6 or not digits.isdigit():
        raise ValueError(f"bad fractional seconds {digits!r}")
    return int(digits) * _FRACTION_SCALE[len(digits)]


# Full grammar of the date/time output (DateStyle=ISO), used when the fast paths below do
# not apply: years of 5+ digits, BC, non-zero offsets, or anything unexpected.
_DATE_RE: Final = re.compile(r"(\d{4,})-(\d\d)-(\d\d)( BC)?")
_TIME_RE: Final = re.compile(
    r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?"
)
_TIMESTAMP_RE: Final = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?"
)

_INFINITIES: Final = frozenset(("infinity", "-infinity"))


def _clock_us(hour: int, minute: int, second: int) -> int:
    # 24:00:00 is a valid time (PostgreSQL docs 8.5.1.2); seconds never leap in output.
    if hour > 24 or minute > 59 or second > 59 or (hour == 24 and (minute or second)):
        raise ValueError("time of day out of range")
    return (hour * 3600 + minute * 60 + second) * 1_000_000


def _offset_seconds(sign: str | None, hh: str | None, mm: str | None, ss: str | None) -> int:
    if sign is None or hh is None:
        return 0
    seconds = int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0)
    return -seconds if sign == "-" else seconds


# --- date ------------------------------------------------------------------------------------


def _date(text: str) -> JsonValue:
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        # 1 <= year <= 9999, no era: the C date constructor validates and counts.
        return date(int(text[:4]), int(text[5:7]), int(text[8:])).toordinal() - _UNIX_EPOCH_ORDINAL
    if text in _INFINITIES:
        return text
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError("not a date in DateStyle=ISO output form")
    year = _year_from_text(m[1], m[4] is not None)
    return _days_from_civil(year, int(m[2]), int(m[3]))


# --- timestamp (without time zone) ------------------------------------------------------------


def _timestamp_epoch_us(text: str) -> int:
    """Microseconds since 1970-01-01 00:00 of a ``timestamp`` (or, with its offset applied,
    ``timestamptz``) text value."""
    if (
        len(text) >= 19
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == " "
        and text[13] == ":"
        and text[16] == ":"
        and (len(text) == 19 or (text[19] == "." and text[-1] != "C"))
    ):
        days = date(int(text[:4]), int(text[5:7]), int(text[8:10])).toordinal()
        us = (days - _UNIX_EPOCH_ORDINAL) * _US_PER_DAY + _clock_us(
            int(text[11:13]), int(text[14:16]), int(text[17:19])
        )
        if len(text) > 19:
            us += _fraction_us(text[20:])
        return us
    m = _TIMESTAMP_RE.fullmatch(text)
    if m is None or m[8] is not None:
        raise ValueError("not a timestamp in DateStyle=ISO output form")
    return _timestamp_match_us(m)


def _timestamp_match_us(m: re.Match[str]) -> int:
    year = _year_from_text(m[1], m[12] is not None)
    us = _days_from_civil(year, int(m[2]), int(m[3])) * _US_PER_DAY
    us += _clock_us(int(m[4]), int(m[5]), int(m[6]))
    if m[7] is not None:
        us += _fraction_us(m[7])
    return us - _offset_seconds(m[8], m[9], m[10], m[11]) * 1_000_000


def _timestamp_us(text: str) -> JsonValue:
    if text in _INFINITIES:
        return text
    return _timestamp_epoch_us(text)


def _timestamp_ms(text: str) -> JsonValue:
    if text in _INFINITIES:
        return text
    # Exact: timestamp(0..3) values carry at most 3 fractional digits.
    return _timestamp_epoch_us(text) // 1000


# --- timestamptz ----------------------------------------------------------------------------


def _zoned_timestamp(width: int) -> Converter:
    """ZonedTimestamp text with exactly ``width`` fractional digits (none when 0).

    Debezium >= 2.2 formats timestamptz(p) with p digits, p being the column's scale,
    which pgjdbc reports as 6 when no precision is declared (DBZ-5996, DBZ-6163).
    """
    zeros = "0" * width

    def convert(text: str) -> JsonValue:
        n = len(text)
        # Fast path: "YYYY-MM-DD HH:MM:SS[.f{1,6}]+00", what TimeZone=UTC produces for
        # years 1..9999. Pure string surgery, no number is computed: it trusts that
        # timestamptz_out wrote a valid date and time, and only checks the layout.
        if (
            n >= 22
            and text[-3:] == "+00"
            and text[4] == "-"
            and text[7] == "-"
            and text[10] == " "
            and text[13] == ":"
            and text[16] == ":"
            and text[:4].isdigit()
        ):
            if n == 22:
                if width:
                    return f"{text[:10]}T{text[11:19]}.{zeros}Z"
                return f"{text[:10]}T{text[11:19]}Z"
            if text[19] == "." and n <= 29 and text[20:-3].isdigit():
                digits = text[20:-3]
                if len(digits) <= width:
                    return f"{text[:10]}T{text[11:19]}.{digits}{zeros[len(digits) :]}Z"
        if text in _INFINITIES:
            return text
        m = _TIMESTAMP_RE.fullmatch(text)
        if m is None or m[8] is None:
            raise ValueError("not a timestamptz in DateStyle=ISO output form")
        return _format_zoned_timestamp(_timestamp_match_us(m), width)

    return convert


def _format_zoned_timestamp(epoch_us: int, width: int) -> str:
    days, us_of_day = divmod(epoch_us, _US_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, micros = divmod(us_of_day, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    if width:
        fraction = "." + f"{micros:06d}"[:width].ljust(width, "0")
    elif micros:  # precision 0 has no fraction; ISO_OFFSET_DATE_TIME prints what exists
        fraction = "." + f"{micros:06d}".rstrip("0")
    else:
        fraction = ""
    return (
        f"{_java_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}Z"
    )


# --- time and timetz ------------------------------------------------------------------------


def _time_of_day_us(text: str) -> int:
    if len(text) == 8 and text[2] == ":" and text[5] == ":":
        return _clock_us(int(text[:2]), int(text[3:5]), int(text[6:]))
    m = _TIME_RE.fullmatch(text)
    if m is None or m[5] is not None:
        raise ValueError("not a time in its output form")
    us = _clock_us(int(m[1]), int(m[2]), int(m[3]))
    return us + _fraction_us(m[4]) if m[4] is not None else us


def _time_us(text: str) -> JsonValue:
    return _time_of_day_us(text)


def _time_ms(text: str) -> JsonValue:
    # Exact: time(0..3) values carry at most 3 fractional digits.
    return _time_of_day_us(text) // 1000


def _zoned_time(text: str) -> JsonValue:
    """timetz as Java's ``OffsetTime`` ISO form, keeping the value's own offset."""
    m = _TIME_RE.fullmatch(text)
    if m is None or m[5] is None:
        raise ValueError("not a timetz in its output form")
    _clock_us(int(m[1]), int(m[2]), int(m[3]))
    clock = text[:8]
    fraction = m[4]
    if fraction is not None:
        fraction = fraction.rstrip("0")
        if fraction:
            clock = f"{clock}.{fraction}"
    sign, hh, mm, ss = m[5], m[6], m[7] or "00", m[8]
    if hh == "00" and mm == "00" and (ss is None or ss == "00"):
        return f"{clock}Z"
    # ZoneOffset.getId(): +HH:MM, or +HH:MM:SS when the seconds are not zero.
    if ss is None or ss == "00":
        return f"{clock}{sign}{hh}:{mm}"
    return f"{clock}{sign}{hh}:{mm}:{ss}"


# --- Modes other than adaptive ------------------------------------------------------------


def _exact_ms(us: int, text: str) -> int:
    """Milliseconds of a value in microseconds, refusing to drop digits.

    Connect's ``Time``/``Timestamp`` carry milliseconds only; Debezium truncates the rest.
    A truncated instant is a different instant, so it is an error here.
    """
    ms, rest = divmod(us, 1000)
    if rest:
        raise ConversionError(
            f"{text[:40]!r} has sub-millisecond digits, which time_precision 'connect' "
            "cannot carry; use 'adaptive' or 'isostring'"
        )
    return ms


def _timestamp_connect(text: str) -> JsonValue:
    if text in _INFINITIES:
        return text
    return _exact_ms(_timestamp_epoch_us(text), text)


def _time_connect(text: str) -> JsonValue:
    return _exact_ms(_time_of_day_us(text), text)


def _iso_date(text: str) -> JsonValue:
    """``YYYY-MM-DD`` as Java's ``LocalDate.toString`` (``+10000-01-01``, ``-0044-03-15``)."""
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        date(int(text[:4]), int(text[5:7]), int(text[8:]))  # validates
        return text
    if text in _INFINITIES:
        return text
    year, month, day = _civil_from_days(_check_date(text))
    return f"{_java_year(year)}-{month:02d}-{day:02d}"


def _check_date(text: str) -> int:
    result = _date(text)
    assert isinstance(result, int)
    return result


def _iso_timestamp(text: str) -> JsonValue:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]`` as Java's ``LocalDateTime.toString`` would print
    the value's own digits (PostgreSQL's fraction, trailing zeros already cut)."""
    if text in _INFINITIES:
        return text
    us = _timestamp_epoch_us(text)  # validates
    if len(text) >= 19 and text[10] == " " and text[4] == "-" and text[-1] != "C":
        return f"{text[:10]}T{text[11:]}"
    days, us_of_day = divmod(us, _US_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, micros = divmod(us_of_day, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    fraction = f".{micros:06d}".rstrip("0") if micros else ""
    clock = f"{hour:02d}:{minute:02d}:{second:02d}{fraction}"
    return f"{_java_year(year)}-{month:02d}-{day:02d}T{clock}"


def _iso_time(text: str) -> JsonValue:
    _time_of_day_us(text)  # validates; the text is already ISO-8601 (24:00:00 included)
    return text


# --- interval -------------------------------------------------------------------------------

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UNITS: Final = {
    "year": 0,
    "years": 0,
    "mon": 1,
    "mons": 1,
    "day": 2,
    "days": 2,
}
_INTERVAL_TIME_RE: Final = re.compile(r"([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _interval_parts(text: str) -> tuple[int, int, int, int, int, int, int]:
    """(years, months, days, hours, minutes, seconds, microseconds) of IntervalStyle=postgres
    output, e.g. ``-1 years -2 mons +3 days -04:05:06.5``. The time fields share one sign."""
    fields = [0, 0, 0]
    seen = [False, False, False]
    tokens = text.split(" ")
    index = 0
    count = len(tokens)
    hours = minutes = seconds = micros = 0
    while index < count:
        token = tokens[index]
        if ":" in token:
            if index != count - 1:
                raise ValueError("interval time is not the last field")
            m = _INTERVAL_TIME_RE.fullmatch(token)
            if m is None:
                raise ValueError("bad interval time")
            if int(m[3]) > 59 or int(m[4]) > 59:
                raise ValueError("interval minutes or seconds out of range")
            sign = -1 if m[1] == "-" else 1
            hours = sign * int(m[2])
            minutes = sign * int(m[3])
            seconds = sign * int(m[4])
            micros = sign * _fraction_us(m[5]) if m[5] else 0
            index += 1
            continue
        if index + 1 >= count:
            raise ValueError("interval number without unit")
        unit = _UNITS.get(tokens[index + 1])
        if unit is None or seen[unit] or any(seen[unit + 1 :]):
            raise ValueError(f"unexpected interval unit {tokens[index + 1]!r}")
        if not token.lstrip("+-").isdigit():
            raise ValueError("bad interval number")
        seen[unit] = True
        fields[unit] = int(token)
        index += 2
    return fields[0], fields[1], fields[2], hours, minutes, seconds, micros


def _interval_string(text: str) -> JsonValue:
    """Debezium's ``io.debezium.time.Interval``: ``P<y>Y<m>M<d>DT<h>H<m>M<s>S``.

    The fields are PostgreSQL's own (months, days and time kept apart), so the value is
    exact; seconds as ``BigDecimal.stripTrailingZeros().toPlainString()`` writes them.
    """
    years, months, days, hours, minutes, seconds, micros = _interval_parts(text)
    total = seconds * 1_000_000 + micros
    if total % 1_000_000 == 0:
        secs = str(total // 1_000_000)
    else:
        sign = "-" if total < 0 else ""
        whole, frac = divmod(abs(total), 1_000_000)
        secs = f"{sign}{whole}.{frac:06d}".rstrip("0")
    return f"P{years}Y{months}M{days}DT{hours}H{minutes}M{secs}S"


def _interval_numeric(text: str) -> JsonValue:
    """Debezium's ``io.debezium.time.MicroDuration`` (int64 microseconds), when exact.

    Debezium counts a month as 30.4375 days, which is not PostgreSQL's value: a month has
    no fixed length. An interval with months (or years) therefore has no exact number and
    raises; days count 24 hours, as in PostgreSQL's ``extract(epoch from interval)``.
    The sum is integer arithmetic (Debezium's double sum can be off by a microsecond).
    """
    years, months, days, hours, minutes, seconds, micros = _interval_parts(text)
    if years or months:
        raise ConversionError(
            f"interval {text[:40]!r} has months, which have no fixed number of "
            "microseconds; set interval_handling to 'string' to emit it exactly"
        )
    total = (((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1_000_000 + micros
    if not _INT64_MIN <= total <= _INT64_MAX:
        raise ConversionError(
            f"interval {text[:40]!r} is beyond int64 microseconds; "
            "set interval_handling to 'string' to emit it exactly"
        )
    return total


# --- Factories by type modifier and options ------------------------------------------------

TemporalFactory: TypeAlias = Callable[[int, TimePrecision], "Converter | None"]


def date_converter(_typmod: int, precision: TimePrecision) -> Converter | None:
    """date: days since 1970-01-01 (Debezium ``Date`` and Connect ``Date`` alike)."""
    return _iso_date if precision == "isostring" else _date


def timestamp_converter(typmod: int, precision: TimePrecision) -> Converter | None:
    """timestamp: ms for p <= 3 and µs otherwise (adaptive), ms (connect) or ISO text."""
    if precision == "isostring":
        return _iso_timestamp
    if precision == "connect":
        return _timestamp_connect
    # Debezium's adaptive time precision: p <= 3 -> io.debezium.time.Timestamp (ms),
    # otherwise (including "not given", typmod -1) io.debezium.time.MicroTimestamp.
    return _timestamp_ms if 0 <= typmod <= 3 else _timestamp_us


def time_converter(typmod: int, precision: TimePrecision) -> Converter | None:
    """time: ms for p <= 3 and µs otherwise (adaptive), µs (adaptive_time_microseconds),
    ms (connect) or the ISO text."""
    if precision == "isostring":
        return _iso_time
    if precision == "connect":
        return _time_connect
    if precision == "adaptive_time_microseconds":
        return _time_us
    return _time_ms if 0 <= typmod <= 3 else _time_us


def timestamptz_converter(typmod: int, _precision: TimePrecision) -> Converter | None:
    """timestamptz: ZonedTimestamp text in every mode, as Debezium."""
    return _zoned_timestamp(typmod if 0 <= typmod <= 6 else 6)


def timetz_converter(_typmod: int, _precision: TimePrecision) -> Converter | None:
    """timetz: ZonedTime text keeping the offset, in every mode."""
    return _zoned_time


def interval_converter(handling: IntervalHandling) -> Converter:
    """interval: ISO-8601 duration text (``"string"``) or exact µs (``"numeric"``)."""
    return _interval_numeric if handling == "numeric" else _interval_string
