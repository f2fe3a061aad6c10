//! date, time, timestamp and timestamptz text (DateStyle=ISO, TimeZone=UTC) to the JSON
//! values of `cdc/protocol/temporal.py` under `time_precision: adaptive`.
//!
//! Every function mirrors its Python reference and returns `false` (nothing written)
//! for any text it is not certain to convert to the same bytes: non-ASCII text (Python's
//! `\d` and `int()` accept other digits), anything outside the strict output grammar,
//! invalid dates and times, values beyond what orjson writes. The caller then runs the
//! Python converter, which gives the exact value or the exact error.

use crate::json;

const US_PER_DAY: i128 = 86_400_000_000;
const DAYS_IN_MONTH: [u32; 13] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
// Years longer than this are refused here (PostgreSQL's own range is 4714 BC..294276 AD).
const MAX_YEAR_DIGITS: usize = 9;

fn is_infinity(text: &[u8]) -> bool {
    text == b"infinity" || text == b"-infinity"
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, byte: u8) -> bool {
        if self.text.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.text[self.at..]
    }

    fn digits(&mut self) -> &'a [u8] {
        let start = self.at;
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    fn two(&mut self) -> Option<i64> {
        let d = self.text.get(self.at..self.at + 2)?;
        if d[0].is_ascii_digit() && d[1].is_ascii_digit() {
            self.at += 2;
            Some(((d[0] - b'0') * 10 + (d[1] - b'0')) as i64)
        } else {
            None
        }
    }

    fn done(&self) -> bool {
        self.at == self.text.len()
    }
}

fn number(digits: &[u8]) -> i64 {
    digits.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64)
}

/// `(\d{4,})-(\d\d)-(\d\d)`: the year as written (not yet made astronomical).
fn date_part(c: &mut Cursor) -> Option<(i64, i64, i64)> {
    let year = c.digits();
    if year.len() < 4 || year.len() > MAX_YEAR_DIGITS || !c.eat(b'-') {
        return None;
    }
    let month = c.two()?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.two()?;
    Some((number(year), month, day))
}

/// `_year_from_text`: year 0 does not exist; year n BC is astronomical 1 - n.
fn astronomical(year: i64, bc: bool) -> Option<i64> {
    if year < 1 {
        return None;
    }
    Some(if bc { 1 - year } else { year })
}

/// `_days_from_civil`: days since 1970-01-01, validating month and day.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let last = DAYS_IN_MONTH[month as usize] as i64 + i64::from(month == 2 && leap);
    if !(1..=last).contains(&day) {
        return None;
    }
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `_civil_from_days`: (astronomical year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `_clock_us`: 24:00:00 is valid, seconds never leap.
fn clock_us(hour: i64, minute: i64, second: i64) -> Option<i128> {
    if hour > 24 || minute > 59 || second > 59 || (hour == 24 && (minute != 0 || second != 0)) {
        return None;
    }
    Some(((hour * 3600 + minute * 60 + second) as i128) * 1_000_000)
}

const FRACTION_SCALE: [i128; 7] = [0, 100_000, 10_000, 1_000, 100, 10, 1];

/// `(?:\.(\d{1,6}))?` and its microseconds. A seventh digit cannot be followed by
/// anything the grammar allows, so the whole text is refused.
fn fraction(c: &mut Cursor) -> Option<i128> {
    if !c.eat(b'.') {
        return Some(0);
    }
    let digits = c.digits();
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    Some(number(digits) as i128 * FRACTION_SCALE[digits.len()])
}

/// `(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?` as seconds east (not range-checked, as in
/// Python's `_offset_seconds`); `Some(None)` when there is none.
fn offset(c: &mut Cursor) -> Option<Option<i64>> {
    let negative = if c.eat(b'+') {
        false
    } else if c.eat(b'-') {
        true
    } else {
        return Some(None);
    };
    let mut seconds = c.two()? * 3600;
    if c.eat(b':') {
        seconds += c.two()? * 60;
        if c.eat(b':') {
            seconds += c.two()?;
        }
    }
    Some(Some(if negative { -seconds } else { seconds }))
}

/// The whole `_TIMESTAMP_RE` grammar: (epoch microseconds before the offset, offset).
fn timestamp_parts(text: &[u8]) -> Option<(i128, Option<i64>)> {
    let mut c = Cursor { text, at: 0 };
    let (year, month, day) = date_part(&mut c)?;
    if !c.eat(b' ') {
        return None;
    }
    let time_us = time_of_day(&mut c)?;
    let zone = offset(&mut c)?;
    let bc = c.rest() == b" BC";
    if !bc && !c.done() {
        return None;
    }
    let days = days_from_civil(astronomical(year, bc)?, month, day)?;
    Some((days as i128 * US_PER_DAY + time_us, zone))
}

/// `HH:MM:SS[.ffffff]`, shared by timestamps and times: microseconds since midnight.
fn time_of_day(c: &mut Cursor) -> Option<i128> {
    let hour = c.two()?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.two()?;
    if !c.eat(b':') {
        return None;
    }
    let second = c.two()?;
    let micros = fraction(c)?;
    Some(clock_us(hour, minute, second)? + micros)
}

fn write_checked_int(out: &mut Vec<u8>, value: i128) -> bool {
    if !json::int_in_range(value) {
        return false;
    }
    json::write_int(out, value);
    true
}

/// `_date`: days since 1970-01-01; `infinity` and `-infinity` as strings.
pub fn date(out: &mut Vec<u8>, text: &[u8]) -> bool {
    if is_infinity(text) {
        json::write_str(out, text);
        return true;
    }
    let mut c = Cursor { text, at: 0 };
    let Some((year, month, day)) = date_part(&mut c) else {
        return false;
    };
    let bc = c.rest() == b" BC";
    if !bc && !c.done() {
        return false;
    }
    let Some(days) = astronomical(year, bc).and_then(|y| days_from_civil(y, month, day)) else {
        return false;
    };
    write_checked_int(out, days as i128)
}

/// `_timestamp_us` / `_timestamp_ms` (timestamp without time zone).
pub fn timestamp(out: &mut Vec<u8>, text: &[u8], millis: bool) -> bool {
    if is_infinity(text) {
        json::write_str(out, text);
        return true;
    }
    match timestamp_parts(text) {
        Some((us, None)) => write_checked_int(out, if millis { us.div_euclid(1000) } else { us }),
        _ => false,
    }
}

/// `_time_us` / `_time_ms` (time without time zone).
pub fn time(out: &mut Vec<u8>, text: &[u8], millis: bool) -> bool {
    let mut c = Cursor { text, at: 0 };
    let parts = time_of_day(&mut c).filter(|_| c.done());
    match parts {
        Some(us) => write_checked_int(out, if millis { us / 1000 } else { us }),
        None => false,
    }
}

/// `_java_year`: ISO_LOCAL_DATE's year (`+10000`, `-0044`, `0001`).
fn push_java_year(s: &mut String, year: i64) {
    use std::fmt::Write;
    let _ = if year > 9999 {
        write!(s, "+{year}")
    } else if year < 0 {
        write!(s, "-{:04}", -year)
    } else {
        write!(s, "{year:04}")
    };
}

/// `_zoned_timestamp(width)`: Debezium's ZonedTimestamp text with `width` fractional digits.
pub fn timestamptz(out: &mut Vec<u8>, text: &[u8], width: usize) -> bool {
    const ZEROS: &[u8; 6] = b"000000";
    let n = text.len();
    // The Python fast path, byte for byte: string surgery that checks only the layout.
    // (The text is ASCII, so byte offsets are Python's character offsets.)
    if n >= 22
        && text.ends_with(b"+00")
        && text[4] == b'-'
        && text[7] == b'-'
        && text[10] == b' '
        && text[13] == b':'
        && text[16] == b':'
        && text[..4].iter().all(u8::is_ascii_digit)
    {
        let digits: Option<&[u8]> = if n == 22 {
            Some(b"")
        } else if text[19] == b'.'
            && n <= 29
            && n > 23
            && text[20..n - 3].iter().all(u8::is_ascii_digit)
            && n - 23 <= width
        {
            Some(&text[20..n - 3])
        } else {
            None
        };
        if let Some(digits) = digits {
            let mut s = Vec::with_capacity(32);
            s.extend_from_slice(&text[..10]);
            s.push(b'T');
            s.extend_from_slice(&text[11..19]);
            if width > 0 {
                s.push(b'.');
                s.extend_from_slice(digits);
                s.extend_from_slice(&ZEROS[digits.len()..width]);
            }
            s.push(b'Z');
            json::write_str(out, &s);
            return true;
        }
    }
    if is_infinity(text) {
        json::write_str(out, text);
        return true;
    }
    let Some((local_us, Some(east))) = timestamp_parts(text) else {
        return false;
    };
    let epoch_us = local_us - east as i128 * 1_000_000;
    let days = epoch_us.div_euclid(US_PER_DAY);
    let us_of_day = epoch_us.rem_euclid(US_PER_DAY);
    let Ok(days) = i64::try_from(days) else {
        return false;
    };
    let (year, month, day) = civil_from_days(days);
    let seconds = us_of_day / 1_000_000;
    let micros = us_of_day % 1_000_000;
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    use std::fmt::Write;
    let mut s = String::with_capacity(40);
    push_java_year(&mut s, year);
    let _ = write!(s, "-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    let six = format!("{micros:06}");
    if width > 0 {
        s.push('.');
        s.push_str(&six[..width]);
    } else if micros != 0 {
        s.push('.');
        s.push_str(six.trim_end_matches('0'));
    }
    s.push('Z');
    json::write_str(out, s.as_bytes());
    true
}
