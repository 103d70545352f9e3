//! PostgreSQL's `jsonb @>` containment, in Rust, for the in-memory backend.
//!
//! Follows `JsonbDeepContains` of PostgreSQL's `jsonb_util.c`:
//! - an object contains an object when every key of the right side is present on the left with
//!   a contained value; a scalar value must be equal, a container must contain the right one of
//!   the same kind;
//! - an array contains an array when every right element is found on the left: a scalar equal
//!   to it, or a container of the same kind that contains it (order and duplicates do not
//!   matter);
//! - at the top level only, an array contains a scalar that is one of its elements (a scalar is
//!   stored as a one-element "raw scalar" array), and a scalar contains an equal scalar;
//! - scalars are equal when of the same JSON type and value, numbers compared as `numeric`
//!   (`1`, `1.0` and `1e0` are equal).

use serde_json::{Number, Value};

/// `container @> contained`, exactly as PostgreSQL's `jsonb` evaluates it.
///
/// ```
/// use dcbstore::jsonb_contains;
/// use serde_json::json;
///
/// assert!(jsonb_contains(&json!({"a": 1, "b": [1, 2, 3]}), &json!({"b": [3, 1]})));
/// assert!(jsonb_contains(&json!({"n": 1.0}), &json!({"n": 1})));
/// assert!(jsonb_contains(&json!(["x", "y"]), &json!("x"))); // top-level array, scalar
/// assert!(!jsonb_contains(&json!({"a": ["x"]}), &json!({"a": "x"}))); // not below the top
/// assert!(!jsonb_contains(&json!({"a": {"b": 1}}), &json!({"b": 1})));
/// ```
pub fn jsonb_contains(container: &Value, contained: &Value) -> bool {
    match (container, contained) {
        // The roots must be of one kind: object with object, else array-or-scalar.
        (Value::Object(_), Value::Object(_)) => deep_contains(container, contained),
        (Value::Object(_), _) | (_, Value::Object(_)) => false,
        (Value::Array(_), Value::Array(_)) => deep_contains(container, contained),
        // A raw scalar on the right is a one-element array.
        (Value::Array(items), scalar) => items.iter().any(|i| scalar_eq(i, scalar)),
        // A raw scalar on the left may contain a raw scalar, never an array.
        (_, Value::Array(_)) => false,
        (l, r) => scalar_eq(l, r),
    }
}

/// Containment of two containers of the same kind (anything else is `false`).
fn deep_contains(l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::Object(l), Value::Object(r)) => r.iter().all(|(k, rv)| match l.get(k) {
            None => false,
            Some(lv) if is_container(lv) => is_container(rv) && deep_contains(lv, rv),
            Some(lv) => scalar_eq(lv, rv),
        }),
        (Value::Array(l), Value::Array(r)) => r.iter().all(|rv| {
            if is_container(rv) {
                l.iter().any(|lv| deep_contains(lv, rv))
            } else {
                l.iter().any(|lv| scalar_eq(lv, rv))
            }
        }),
        _ => false,
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// Equality of two scalars as `jsonb` compares them; `false` for containers.
/// JSONB equality (`=`): objects by key, arrays element by element in order, numbers by value.
pub(crate) fn jsonb_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| jsonb_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| jsonb_eq(v, w))
        }
        _ => scalar_eq(a, b),
    }
}

pub(crate) fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => numeric_key(x) == numeric_key(y),
        _ => false,
    }
}

/// A spelling of a number that is the same exactly when PostgreSQL's `numeric` finds two numbers
/// equal: the decimal the number is sent as (serde_json's), normalized to sign, significant
/// digits and exponent.
pub(crate) fn numeric_key(n: &Number) -> String {
    let text = n.to_string();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i64>().unwrap_or(0),
        ),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    // value = 0.digits × 10^(point), with `point` counted from the left of `digits`.
    let leading_zeros = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return "0".to_string();
    }
    let point = int_part.len() as i64 + exponent - leading_zeros as i64;
    format!(
        "{}0.{}e{}",
        if negative { "-" } else { "" },
        significant,
        point
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: Value) -> String {
        match v {
            Value::Number(n) => numeric_key(&n),
            _ => unreachable!(),
        }
    }

    #[test]
    fn numbers_normalize_like_numeric() {
        assert_eq!(key(json!(1)), key(json!(1.0)));
        assert_eq!(key(json!(100)), key(json!(1e2)));
        assert_eq!(key(json!(0)), key(json!(-0.0)));
        assert_eq!(key(json!(0.5)), "0.5e0");
        assert_eq!(key(json!(-120)), "-0.12e3");
        assert_eq!(key(json!(0.0012)), "0.12e-2");
        assert_ne!(key(json!(1)), key(json!(10)));
        assert_ne!(key(json!(1)), key(json!(-1)));
        let big: Value = serde_json::from_str("12345678901234567890").unwrap();
        assert_eq!(key(big), "0.1234567890123456789e20");
    }

    #[test]
    fn containment_rules() {
        let cases = [
            (json!({}), json!({}), true),
            (json!({"a": 1}), json!({}), true),
            (json!([]), json!([]), true),
            (json!([1, 2]), json!([]), true),
            (json!([1, 2, 1]), json!([1, 1, 1]), true),
            (json!([[1, 2], [3]]), json!([[2]]), true),
            (json!([[1, 2], [3]]), json!([2]), false),
            (json!([{"a": 1, "b": 2}]), json!([{"a": 1}]), true),
            (json!({"a": [1, 2]}), json!({"a": []}), true),
            (json!({"a": [1, 2]}), json!({"a": {}}), false),
            (json!({"a": {}}), json!({"a": []}), false),
            (json!({"a": 1}), json!({"a": [1]}), false),
            (json!({"a": null}), json!({"a": null}), true),
            (json!({"a": "1"}), json!({"a": 1}), false),
            (json!("a"), json!("a"), true),
            (json!("a"), json!(["a"]), false),
            (json!(["a"]), json!("a"), true),
            (json!([["a"]]), json!("a"), false),
            (json!({"a": 1}), json!([]), false),
            (json!([]), json!({}), false),
            (json!(1), json!(1.0), true),
            (json!(true), json!(1), false),
        ];
        for (l, r, expected) in cases {
            assert_eq!(jsonb_contains(&l, &r), expected, "{l} @> {r}");
        }
    }
}
