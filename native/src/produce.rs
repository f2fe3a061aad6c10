//! `RecordProducer`: hands a unit's records to librdkafka in one call, through the very
//! `rd_kafka_t` a `confluent_kafka.Producer` owns.
//!
//! Why: in `exactly_once` nothing waits for a record's delivery report (a failed record
//! fails the transaction's commit), yet `Producer.produce()` gives every record a
//! per-message state whose report `poll()` must serve by taking the GIL back, once per
//! record, and parses its arguments and headers per call. Producing here, with no
//! per-message opaque, gives librdkafka exactly the same message (topic, key, value,
//! headers, partitioner, `RD_KAFKA_MSG_F_COPY`, timestamp "now") and makes its report a
//! no-op in confluent-kafka's `dr_msg_cb` (it returns at once for a message without
//! state), so neither the produce nor the report costs Python work.
//!
//! The function pointers and the handle come from `cdc/kafka/native_produce.py`, which
//! resolves them in the librdkafka that confluent-kafka itself loaded and checks the
//! handle before building this. Anything this is not certain to produce exactly as
//! `Producer.produce()` would (a record with an explicit partition, a key or value that is
//! not bytes, headers that are not a list or tuple of `(str, bytes)`), and every error
//! librdkafka returns, stops the call at that record: the Python caller produces it
//! through confluent-kafka, which raises the exact exception its error handling expects.

use std::ffi::{c_char, c_int, c_void};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

// rdkafka.h's rd_kafka_vtype_t and flags.
const VTYPE_END: c_int = 0;
const VTYPE_TOPIC: c_int = 1;
const VTYPE_VALUE: c_int = 4;
const VTYPE_KEY: c_int = 5;
const VTYPE_MSGFLAGS: c_int = 7;
const VTYPE_HEADERS: c_int = 10;
const MSG_F_COPY: c_int = 0x2;

/// What `produce` returns for a record it leaves to the Python path (not an rdkafka code:
/// those are small, negative for local errors).
const PYTHON_PATH: c_int = c_int::MAX;

type ProduceV = unsafe extern "C" fn(rk: *mut c_void, ...) -> c_int;
type HeadersNew = unsafe extern "C" fn(initial_count: usize) -> *mut c_void;
type HeaderAdd = unsafe extern "C" fn(
    hdrs: *mut c_void,
    name: *const c_char,
    name_size: isize,
    value: *const c_void,
    value_size: isize,
) -> c_int;
type HeadersDestroy = unsafe extern "C" fn(hdrs: *mut c_void);

#[pyclass(frozen, module = "cdc_native")]
struct RecordProducer {
    rk: usize,
    producev: ProduceV,
    headers_new: HeadersNew,
    header_add: HeaderAdd,
    headers_destroy: HeadersDestroy,
    /// Keeps the confluent-kafka producer (the owner of `rk`) alive as long as this.
    _owner: Py<PyAny>,
}

/// A `str` as the NUL-terminated UTF-8 CPython keeps with it (documented to end in a NUL
/// byte not counted in its size), or None if it holds a NUL itself (confluent-kafka's
/// argument parsing refuses that too) or is not valid UTF-8.
fn c_text<'a>(text: &'a Bound<'_, PyString>) -> Option<&'a str> {
    let text = text.to_str().ok()?;
    if text.as_bytes().contains(&0) {
        None
    } else {
        Some(text)
    }
}

/// `(pointer, length)` of a key or value: None is NULL (a null key, a tombstone), as in
/// confluent-kafka; anything but bytes is left to the Python path.
fn payload(value: &Bound<'_, PyAny>) -> Option<(*const c_void, usize)> {
    if value.is_none() {
        return Some((std::ptr::null(), 0));
    }
    let bytes = value.cast_exact::<PyBytes>().ok()?.as_bytes();
    Some((bytes.as_ptr().cast(), bytes.len()))
}

impl RecordProducer {
    /// librdkafka headers for `headers` (None, or a list or tuple of `(str, bytes)`):
    /// `Ok(null)` for none, `Err(())` for a shape left to the Python path.
    fn headers(&self, headers: &Bound<'_, PyAny>) -> Result<*mut c_void, ()> {
        if headers.is_none() {
            Ok(std::ptr::null_mut())
        } else if let Ok(list) = headers.cast_exact::<PyList>() {
            self.header_list(list.len(), list.iter())
        } else if let Ok(tuple) = headers.cast_exact::<PyTuple>() {
            self.header_list(tuple.len(), tuple.iter())
        } else {
            Err(())
        }
    }

    /// The `count` `(name, value)` pairs of `items` as a librdkafka headers list.
    fn header_list<'py>(
        &self,
        count: usize,
        items: impl Iterator<Item = Bound<'py, PyAny>>,
    ) -> Result<*mut c_void, ()> {
        // SAFETY: a function of the loaded librdkafka, resolved and checked by the caller.
        let hdrs = unsafe { (self.headers_new)(count) };
        for item in items {
            let pair = item.cast::<PyTuple>().ok().filter(|p| p.len() == 2);
            let added = pair.and_then(|pair| {
                let name = pair.get_item(0).ok()?;
                let name = c_text(name.cast_exact::<PyString>().ok()?)?;
                let value = pair.get_item(1).ok()?;
                let (ptr, len) = payload(&value)?;
                // SAFETY: as above; librdkafka copies name and value.
                let err = unsafe {
                    (self.header_add)(
                        hdrs,
                        name.as_ptr().cast(),
                        name.len() as isize,
                        ptr,
                        len as isize, // None: (NULL, 0), as confluent-kafka passes it
                    )
                };
                (err == 0).then_some(())
            });
            if added.is_none() {
                // SAFETY: ours, never handed to librdkafka.
                unsafe { (self.headers_destroy)(hdrs) };
                return Err(());
            }
        }
        Ok(hdrs)
    }

    /// Produces one record; `PYTHON_PATH` if its shape is not one this handles.
    fn produce_one(&self, record: &Bound<'_, PyAny>) -> c_int {
        let Ok(record) = record.cast::<PyTuple>() else {
            return PYTHON_PATH;
        };
        // cdc.envelope.Record: (topic, key, value, headers, partition).
        if record.len() != 5 {
            return PYTHON_PATH;
        }
        let field = |i: usize| record.get_item(i).ok();
        let partition = field(4).and_then(|p| p.extract::<i64>().ok());
        if partition != Some(-1) {
            return PYTHON_PATH; // an explicit partition: produced as given, by Python
        }
        let Some(topic) = field(0) else {
            return PYTHON_PATH;
        };
        let Some(topic) = topic.cast_exact::<PyString>().ok().and_then(|t| c_text(t)) else {
            return PYTHON_PATH;
        };
        let (Some(key), Some(value), Some(headers)) = (field(1), field(2), field(3)) else {
            return PYTHON_PATH;
        };
        let (Some((key_ptr, key_len)), Some((value_ptr, value_len))) =
            (payload(&key), payload(&value))
        else {
            return PYTHON_PATH;
        };
        let Ok(hdrs) = self.headers(&headers) else {
            return PYTHON_PATH;
        };
        // SAFETY: `rk` is the live handle of `_owner` (checked by the caller: a producer,
        // of this process's librdkafka); librdkafka copies key, value and topic name
        // (RD_KAFKA_MSG_F_COPY) before returning and takes `hdrs` only on success.
        let err = unsafe {
            (self.producev)(
                self.rk as *mut c_void,
                VTYPE_TOPIC,
                topic.as_ptr() as *const c_char,
                VTYPE_MSGFLAGS,
                MSG_F_COPY,
                VTYPE_VALUE,
                value_ptr,
                value_len,
                VTYPE_KEY,
                key_ptr,
                key_len,
                VTYPE_HEADERS,
                hdrs,
                VTYPE_END,
            )
        };
        if err != 0 && !hdrs.is_null() {
            // SAFETY: a failed producev leaves application headers to the application.
            unsafe { (self.headers_destroy)(hdrs) };
        }
        err
    }
}

#[pymethods]
impl RecordProducer {
    /// Args: the confluent-kafka producer (kept alive by this), the address of its
    /// `rd_kafka_t`, and of librdkafka's `rd_kafka_producev`, `rd_kafka_headers_new`,
    /// `rd_kafka_header_add` and `rd_kafka_headers_destroy`.
    ///
    /// # Safety
    /// Not checkable here: the caller (`cdc/kafka/native_produce.py`) resolves the
    /// addresses in the librdkafka the producer runs on and checks the handle.
    #[new]
    fn new(
        owner: Py<PyAny>,
        rk: usize,
        producev: usize,
        headers_new: usize,
        header_add: usize,
        headers_destroy: usize,
    ) -> PyResult<Self> {
        if [rk, producev, headers_new, header_add, headers_destroy].contains(&0) {
            return Err(PyValueError::new_err("a null handle or function"));
        }
        // SAFETY: non-null addresses of functions with these C signatures (see above).
        unsafe {
            Ok(RecordProducer {
                rk,
                producev: std::mem::transmute::<usize, ProduceV>(producev),
                headers_new: std::mem::transmute::<usize, HeadersNew>(headers_new),
                header_add: std::mem::transmute::<usize, HeaderAdd>(header_add),
                headers_destroy: std::mem::transmute::<usize, HeadersDestroy>(headers_destroy),
                _owner: owner,
            })
        }
    }

    /// Produces `records[start:]` in order: `(index, 0)` once all are, else `(index of
    /// the first record not produced, librdkafka's error code, or PYTHON_PATH)`.
    fn produce(&self, records: &Bound<'_, PyList>, start: usize) -> (usize, c_int) {
        let count = records.len();
        let mut index = start;
        while index < count {
            let Ok(record) = records.get_item(index) else {
                return (index, PYTHON_PATH);
            };
            let err = self.produce_one(&record);
            if err != 0 {
                return (index, err);
            }
            index += 1;
        }
        (index, 0)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RecordProducer>()?;
    m.add("PYTHON_PATH", PYTHON_PATH)?;
    Ok(())
}
