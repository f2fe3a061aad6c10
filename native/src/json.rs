//! JSON text exactly as orjson writes it (orjson 3.x, no options).
//!
//! Strings: `"` and `\` are escaped, control characters below 0x20 use the short forms
//! `\b \t \n \f \r` and otherwise `\u00xx` with lowercase hex; everything else, `/`,
//! DEL (0x7f), U+2028/U+2029 and all non-ASCII included, is copied as UTF-8.

/// 0: copy; b'u': `\u00xx`; otherwise the letter after the backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append `text` as a JSON string.
#[inline]
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &byte) in text.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&text[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// Append a decimal integer.
#[inline]
pub fn write_int(out: &mut Vec<u8>, value: i128) {
    // i128 Display is exact and allocation-free into a Vec via io::Write.
    use std::io::Write;
    let _ = write!(out, "{value}");
}

/// Whether orjson serialises an integer of this value (it refuses beyond 64 bits).
#[inline]
pub fn int_in_range(value: i128) -> bool {
    (i64::MIN as i128..=u64::MAX as i128).contains(&value)
}

/// Whether `text` is the canonical decimal form of an integer orjson can write:
/// `0` or `-?[1-9][0-9]*` within -2^63..2^64-1 (`-0`, leading zeros, `+`, spaces and
/// underscores are not canonical: Python's `int()` accepts them but prints another text).
#[inline]
pub fn is_canonical_int(text: &[u8]) -> bool {
    let digits = match text.first() {
        Some(b'-') => &text[1..],
        _ => text,
    };
    match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [b'0', ..] => false,
        _ => {
            if digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
                return false;
            }
            let mut value: u128 = 0;
            for &d in digits {
                value = value * 10 + (d - b'0') as u128;
            }
            if digits.len() == text.len() {
                value <= u64::MAX as u128
            } else {
                value <= 1u128 << 63
            }
        }
    }
}
