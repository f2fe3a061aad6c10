//! cdc's compiled hot paths, each an exact twin of a Python reference it must equal byte
//! for byte (tests/unit/test_native.py proves it with hypothesis):
//!
//! - `decode_tuple`: `cdc.protocol.pgoutput._read_tuple_py`, one pgoutput TupleData;
//! - `RowEncoder.encode`: `orjson.dumps(RowConverter.convert(values))` and the record key
//!   for the column kinds below, under the default `ValueOptions`; `RowEncoder.insert`:
//!   an inserted row's whole event, as `cdc.envelope.TableEncoder.insert` assembles it;
//! - `RecordProducer.produce` (produce.rs): `Producer.produce()` of each record of a unit.
//!
//! None ever guesses: on any input it is not certain to handle exactly (an error, an
//! unusual value) it raises, and the Python caller runs the reference path, which gives
//! the exact result or the exact error message. Loaded by `cdc/native.py`.

use std::io::Write;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

mod json;
mod produce;
mod temporal;

create_exception!(
    cdc_native,
    Unsupported,
    PyException,
    "The native encoder cannot convert this row exactly: use the Python path for it."
);

const TEXT: u8 = b't';
const NULL: u8 = b'n';
const TOAST: u8 = b'u';
const BINARY: u8 = b'b';

fn truncated() -> PyErr {
    PyIndexError::new_err("TupleData runs past the end of the message")
}

/// A pgoutput TupleData at `pos` of `data`: `(values, offset after it)`.
///
/// Text values become `str` (strict UTF-8, CPython's own decoder: the same
/// `UnicodeDecodeError` as `bytes.decode()`), `n` None, `u` the `unchanged` object, `b`
/// bytes. A value longer than the message is cut at its end and the offset returned
/// points past it, exactly as the Python slice does (the caller's length check rejects
/// it). Running off the end raises IndexError and an unknown kind ValueError; the Python
/// caller then re-runs its reference decoder for the exact message and offset.
#[pyfunction]
fn decode_tuple<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
    pos: usize,
    unchanged: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyTuple>, usize)> {
    let data = data.as_bytes();
    let size = data.len();
    let header = data.get(pos..pos + 2).ok_or_else(truncated)?;
    let ncols = u16::from_be_bytes([header[0], header[1]]) as usize;
    let mut pos = pos + 2;
    let mut values: Vec<Bound<'py, PyAny>> = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let kind = *data.get(pos).ok_or_else(truncated)?;
        match kind {
            TEXT | BINARY => {
                let raw = data.get(pos + 1..pos + 5).ok_or_else(truncated)?;
                let length = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
                let start = pos + 5;
                let end = start + length;
                let value = &data[start..end.min(size)];
                values.push(if kind == TEXT {
                    // SAFETY: pointer and length of a live slice; a new reference or NULL
                    // with the exception set, which from_owned_ptr_or_err turns into Err.
                    unsafe {
                        Bound::from_owned_ptr_or_err(
                            py,
                            ffi::PyUnicode_DecodeUTF8(
                                value.as_ptr().cast(),
                                value.len() as ffi::Py_ssize_t,
                                std::ptr::null(),
                            ),
                        )?
                    }
                } else {
                    PyBytes::new(py, value).into_any()
                });
                pos = end;
            }
            NULL => {
                values.push(py.None().into_bound(py));
                pos += 1;
            }
            TOAST => {
                values.push(unchanged.clone());
                pos += 1;
            }
            _ => return Err(PyValueError::new_err("unknown TupleData column kind")),
        }
    }
    Ok((PyTuple::new(py, values)?, pos))
}

/// How one column's text becomes JSON; the Python side maps converters to these numbers
/// (`cdc/native.py`), so they are part of the module's interface.
#[derive(Clone, Copy)]
enum Kind {
    /// converter None: the text itself, as a JSON string.
    Text,
    /// `int`: a JSON integer, canonical text only.
    Int,
    /// `scalars.bool`: `t`/`f`.
    Bool,
    /// `scalars.numeric_string`: the text, NaN and the infinities by Debezium's names.
    NumericString,
    /// `temporal._date`.
    Date,
    /// `temporal._timestamp_us` / `_timestamp_ms`.
    Timestamp { millis: bool },
    /// `temporal._time_us` / `_time_ms`.
    Time { millis: bool },
    /// `temporal._zoned_timestamp(width)`.
    Timestamptz { width: usize },
    /// Any other converter: called from here, its value written by `orjson.dumps`
    /// (orjson writes a value nested in a dict exactly as alone).
    Python,
}

impl Kind {
    fn from_code(code: u32) -> PyResult<Kind> {
        Ok(match code {
            0 => Kind::Text,
            1 => Kind::Int,
            2 => Kind::Bool,
            3 => Kind::NumericString,
            4 => Kind::Date,
            5 => Kind::Timestamp { millis: false },
            6 => Kind::Timestamp { millis: true },
            7 => Kind::Time { millis: false },
            8 => Kind::Time { millis: true },
            10..=16 => Kind::Timestamptz {
                width: (code - 10) as usize,
            },
            100 => Kind::Python,
            _ => return Err(PyValueError::new_err(format!("unknown column kind {code}"))),
        })
    }

    /// Append the JSON of `text`; false (output unspecified) when it must go to Python.
    #[inline]
    fn write(self, out: &mut Vec<u8>, text: &[u8]) -> bool {
        match self {
            Kind::Text => {
                json::write_str(out, text);
                true
            }
            Kind::Int => {
                if json::is_canonical_int(text) {
                    out.extend_from_slice(text);
                    true
                } else {
                    false
                }
            }
            Kind::Bool => match text {
                b"t" => {
                    out.extend_from_slice(b"true");
                    true
                }
                b"f" => {
                    out.extend_from_slice(b"false");
                    true
                }
                _ => false,
            },
            Kind::NumericString => {
                let name: &[u8] = match text {
                    b"NaN" => b"NAN",
                    b"Infinity" => b"POSITIVE_INFINITY",
                    b"-Infinity" => b"NEGATIVE_INFINITY",
                    _ => text,
                };
                json::write_str(out, name);
                true
            }
            // Python's regexes and int() take non-ASCII digits: those go to Python.
            _ if !text.is_ascii() => false,
            Kind::Date => temporal::date(out, text),
            Kind::Timestamp { millis } => temporal::timestamp(out, text, millis),
            Kind::Time { millis } => temporal::time(out, text, millis),
            Kind::Timestamptz { width } => temporal::timestamptz(out, text, width),
            Kind::Python => unreachable!("Python kinds are converted by RowEncoder::encode"),
        }
    }
}

/// Encodes the rows of one table: built once per Relation from the column kinds, names
/// and key column indexes; `encode(values)` returns `(row JSON, key JSON)`.
#[pyclass(frozen, module = "cdc_native")]
struct RowEncoder {
    kinds: Vec<Kind>,
    /// `"name":` of each column, with the separating comma before all but the first.
    fields: Vec<Vec<u8>>,
    /// `"name":` of each key column (no comma), and the column's index.
    keys: Vec<(Vec<u8>, usize)>,
    placeholder: Vec<u8>,
    unchanged: Py<PyAny>,
    /// The converter of each `Kind::Python` column (None for the others).
    converters: Vec<Option<Py<PyAny>>>,
    dumps: Option<Py<PyAny>>,
}

fn field(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 3);
    json::write_str(&mut out, name.as_bytes());
    out.push(b':');
    out
}

#[pymethods]
impl RowEncoder {
    /// Args: `kinds` (one code per column), `names` (unique column names), `key_indexes`
    /// (positions of the key columns, in key order), `placeholder` (the JSON bytes of an
    /// unchanged TOASTed value), `unchanged` (the object standing for one in a tuple) and,
    /// for columns of kind 100, `converters` (their Python converter, None elsewhere) and
    /// `dumps` (`orjson.dumps`).
    #[new]
    #[pyo3(signature = (kinds, names, key_indexes, placeholder, unchanged, converters=None, dumps=None))]
    fn new(
        kinds: Vec<u32>,
        names: Vec<String>,
        key_indexes: Vec<usize>,
        placeholder: Vec<u8>,
        unchanged: Py<PyAny>,
        converters: Option<Vec<Option<Py<PyAny>>>>,
        dumps: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        if kinds.len() != names.len() || key_indexes.iter().any(|&i| i >= names.len()) {
            return Err(PyValueError::new_err(
                "kinds, names and key indexes disagree",
            ));
        }
        let kinds = kinds
            .into_iter()
            .map(Kind::from_code)
            .collect::<PyResult<Vec<_>>>()?;
        let converters = converters.unwrap_or_else(|| kinds.iter().map(|_| None).collect());
        let python_ok = converters.len() == kinds.len()
            && kinds
                .iter()
                .zip(&converters)
                .all(|(kind, converter)| matches!(kind, Kind::Python) == converter.is_some())
            && (dumps.is_some() || !kinds.iter().any(|k| matches!(k, Kind::Python)));
        if !python_ok {
            return Err(PyValueError::new_err(
                "kind 100 columns need a converter (and dumps), the others None",
            ));
        }
        let fields = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut f = if i == 0 { Vec::new() } else { vec![b','] };
                f.extend_from_slice(&field(name));
                f
            })
            .collect();
        let keys = key_indexes.iter().map(|&i| (field(&names[i]), i)).collect();
        Ok(RowEncoder {
            kinds,
            fields,
            keys,
            placeholder,
            unchanged,
            converters,
            dumps,
        })
    }

    /// `(orjson.dumps(row), orjson.dumps({key: row[key]...}))` of one tuple.
    ///
    /// Raises `Unsupported` for anything it cannot convert exactly (a tuple of the wrong
    /// length, a binary value, a text its kind does not take): run the Python path.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyTuple>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let (row, key) = self.row_and_key(py, values)?;
        Ok((PyBytes::new(py, &row), PyBytes::new(py, &key)))
    }

    /// `(event JSON, row JSON, key JSON)` of an inserted row: the event exactly as
    /// `cdc.envelope.TableEncoder.insert` assembles it (`{"before":null,"after":row,
    /// "source":...,"transaction":null,"op":"c","ts_ms":..,"ts_us":..,"ts_ns":..}`), with
    /// `source` the transaction's template `(head, middle, tail)` and the event's `lsn`
    /// in its two places. Raises `Unsupported` as `encode` does.
    fn insert<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyTuple>,
        source: (Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>),
        lsn: u64,
        now_us: i64,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let (row, key) = self.row_and_key(py, values)?;
        let (head, middle, tail) = (source.0.as_bytes(), source.1.as_bytes(), source.2.as_bytes());
        let lsn = lsn.to_string();
        let lsn = lsn.as_bytes();
        let mut event: Vec<u8> = Vec::with_capacity(
            row.len() + head.len() + middle.len() + tail.len() + 2 * lsn.len() + 160,
        );
        event.extend_from_slice(b"{\"before\":null,\"after\":");
        event.extend_from_slice(&row);
        event.extend_from_slice(b",\"source\":");
        event.extend_from_slice(head);
        event.extend_from_slice(lsn);
        event.extend_from_slice(middle);
        event.extend_from_slice(lsn);
        event.extend_from_slice(tail);
        // Python's now_us // 1000 (floor) and now_us * 1000, exact for any i64.
        let now = i128::from(now_us);
        write!(
            event,
            ",\"transaction\":null,\"op\":\"c\",\"ts_ms\":{},\"ts_us\":{},\"ts_ns\":{}}}",
            now.div_euclid(1000),
            now,
            now * 1000
        )
        .expect("writing to a Vec cannot fail");
        Ok((
            PyBytes::new(py, &event),
            PyBytes::new(py, &row),
            PyBytes::new(py, &key),
        ))
    }
}

impl RowEncoder {
    /// The row's JSON and its key's JSON (see `encode`).
    fn row_and_key(&self, py: Python<'_>, values: &Bound<'_, PyTuple>) -> PyResult<(Vec<u8>, Vec<u8>)> {
        let count = self.kinds.len();
        if values.len() != count {
            return Err(Unsupported::new_err("tuple length"));
        }
        let unchanged = self.unchanged.bind(py);
        let mut out: Vec<u8> = Vec::with_capacity(64 * count + 16);
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(count);
        out.push(b'{');
        for (i, value) in values.iter().enumerate() {
            out.extend_from_slice(&self.fields[i]);
            let start = out.len();
            if let (Kind::Python, Some(convert), true) = (
                self.kinds[i],
                &self.converters[i],
                value.is_exact_instance_of::<PyString>(),
            ) {
                // The converter's error (or orjson's) is not ours to report: the Python
                // path runs the row again and raises it with the column's context.
                let dumps = self.dumps.as_ref().expect("checked in new").bind(py);
                let json = match convert
                    .bind(py)
                    .call1((&value,))
                    .and_then(|v| dumps.call1((v,)))
                {
                    Ok(json) => json,
                    // KeyboardInterrupt, SystemExit...: not a conversion failure, never lost.
                    Err(err) if !err.is_instance_of::<PyException>(py) => return Err(err),
                    Err(_) => return Err(Unsupported::new_err("converter failed")),
                };
                let Ok(json) = json.cast_into::<PyBytes>() else {
                    return Err(Unsupported::new_err("dumps gave no bytes"));
                };
                out.extend_from_slice(json.as_bytes());
            } else if let Ok(text) = value.cast_exact::<PyString>() {
                // A str that is not valid UTF-8 (lone surrogates) fails here: orjson
                // refuses it too, and the Python path raises its error.
                let Ok(text) = text.to_str() else {
                    return Err(Unsupported::new_err("not UTF-8"));
                };
                if !self.kinds[i].write(&mut out, text.as_bytes()) {
                    return Err(Unsupported::new_err("value"));
                }
            } else if value.is_none() {
                out.extend_from_slice(b"null");
            } else if value.is(unchanged) {
                out.extend_from_slice(&self.placeholder);
            } else {
                return Err(Unsupported::new_err("binary or unknown value"));
            }
            spans.push((start, out.len()));
        }
        out.push(b'}');
        let mut key: Vec<u8> = Vec::with_capacity(64);
        key.push(b'{');
        for (n, (name, index)) in self.keys.iter().enumerate() {
            if n > 0 {
                key.push(b',');
            }
            key.extend_from_slice(name);
            let (start, end) = spans[*index];
            key.extend_from_slice(&out[start..end]);
        }
        key.push(b'}');
        Ok((out, key))
    }
}

#[pymodule]
fn cdc_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_tuple, m)?)?;
    m.add_class::<RowEncoder>()?;
    m.add("Unsupported", m.py().get_type::<Unsupported>())?;
    produce::register(m)?;
    Ok(())
}
