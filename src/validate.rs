//! Input checks shared by events and queries.

use serde_json::Value;

use crate::error::InvalidInput;

/// Rejects strings with a NUL character (PostgreSQL cannot store it in text or JSONB).
pub(crate) fn no_nul(s: &str, location: impl FnOnce() -> String) -> Result<(), InvalidInput> {
    if s.contains('\0') {
        return Err(InvalidInput::NulCharacter {
            location: location(),
        });
    }
    Ok(())
}

/// Rejects JSON with a NUL character in any key or string.
pub(crate) fn json_no_nul(v: &Value, location: &dyn Fn() -> String) -> Result<(), InvalidInput> {
    match v {
        Value::String(s) => no_nul(s, location),
        Value::Array(items) => items.iter().try_for_each(|i| json_no_nul(i, location)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            no_nul(k, || format!("{} (a key)", location()))?;
            json_no_nul(v, location)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Requires a JSON object.
pub(crate) fn object(v: &Value, index: usize, field: &'static str) -> Result<(), InvalidInput> {
    if v.is_object() {
        Ok(())
    } else {
        Err(InvalidInput::NotAnObject {
            index,
            field,
            found: kind(v),
        })
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
    i64::try_from(p).map_err(|_| InvalidInput::PositionOutOfRange(p))
}
