//! Input checks shared by events and queries.

use serde_json::Value;

use crate::error::{ArgumentProblem, EventProblem, InvalidInput, QueryProblem, ValueProblem};
use crate::limits::{MAX_JSON_DEPTH, MAX_JSON_NUMBER, MAX_NAME_BYTES, MIN_YEAR};

/// Rejects strings with a NUL character (PostgreSQL cannot store it in text or JSONB).
pub(crate) fn no_nul(s: &str) -> Result<(), ValueProblem> {
    if s.contains('\0') {
        return Err(ValueProblem::NulCharacter);
    }
    Ok(())
}

/// Rejects JSON that PostgreSQL cannot store or give back: a NUL character in a key or string,
/// nesting deeper than [`MAX_JSON_DEPTH`], a number of magnitude above [`MAX_JSON_NUMBER`].
/// Iterative, so that hostile nesting cannot exhaust the stack.
pub(crate) fn json(v: &Value) -> Result<(), ValueProblem> {
    let mut pending = vec![(v, 1usize)];
    while let Some((v, depth)) = pending.pop() {
        if depth > MAX_JSON_DEPTH && matches!(v, Value::Array(_) | Value::Object(_)) {
            return Err(ValueProblem::TooDeep {
                max: MAX_JSON_DEPTH,
            });
        }
        match v {
            Value::String(s) => no_nul(s)?,
            Value::Number(n) => {
                if n.as_f64().is_some_and(|f| f.abs() > MAX_JSON_NUMBER) {
                    return Err(ValueProblem::NumberOutOfRange {
                        number: n.to_string(),
                    });
                }
            }
            Value::Array(items) => pending.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => {
                for (k, v) in map {
                    no_nul(k).map_err(|_| ValueProblem::NulInKey)?;
                    pending.push((v, depth + 1));
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
    Ok(())
}

/// Rejects an event type or tag longer than [`MAX_NAME_BYTES`] or holding a NUL.
pub(crate) fn name(s: &str) -> Result<(), ValueProblem> {
    if s.len() > MAX_NAME_BYTES {
        return Err(ValueProblem::TooLong {
            bytes: s.len(),
            max: MAX_NAME_BYTES,
        });
    }
    no_nul(s)
}

/// The size of `v` serialized, without keeping the bytes.
pub(crate) fn json_bytes(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// Rejects a time PostgreSQL's `timestamptz` cannot hold.
pub(crate) fn time(t: time::OffsetDateTime) -> Result<(), InvalidInput> {
    if t.year() < MIN_YEAR {
        return Err(InvalidInput::query(QueryProblem::TimeOutOfRange(t)));
    }
    Ok(())
}

/// Requires a JSON object.
pub(crate) fn object(v: &Value, index: usize, field: &'static str) -> Result<(), InvalidInput> {
    if v.is_object() {
        Ok(())
    } else {
        Err(InvalidInput::event(
            index,
            EventProblem::NotAnObject {
                field,
                found: kind(v),
            },
        ))
    }
}

/// The JSON kind of a value, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Positions travel as `bigint`.
pub(crate) fn position(p: u64) -> Result<i64, InvalidInput> {
    i64::try_from(p).map_err(|_| ArgumentProblem::PositionOutOfRange(p).into())
}
