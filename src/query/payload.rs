//! Payload predicates: JSONB containment of a value at a path.

use serde_json::{Map, Value};

use crate::error::{InvalidInput, QueryProblem};
use crate::validate;

/// Where in the payload a [`PayloadPredicate`] looks: a sequence of object keys.
///
/// A `&str` or `String` is a single top-level key; an array or `Vec` of keys is a nested path.
///
/// ```
/// use dcbstore::PayloadPath;
/// assert_eq!(PayloadPath::from("BookID").keys(), ["BookID"]);
/// assert_eq!(PayloadPath::from(["address", "city"]).keys(), ["address", "city"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PayloadPath(Vec<String>);

impl PayloadPath {
    /// The payload itself.
    ///
    /// ```
    /// assert!(dcbstore::PayloadPath::root().keys().is_empty());
    /// ```
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// The keys, outermost first.
    ///
    /// ```
    /// assert_eq!(dcbstore::PayloadPath::from("a").keys().len(), 1);
    /// ```
    pub fn keys(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for PayloadPath {
    fn from(key: &str) -> Self {
        Self(vec![key.to_string()])
    }
}

impl From<String> for PayloadPath {
    fn from(key: String) -> Self {
        Self(vec![key])
    }
}

impl<const N: usize> From<[&str; N]> for PayloadPath {
    fn from(keys: [&str; N]) -> Self {
        Self(keys.iter().map(|k| k.to_string()).collect())
    }
}

impl From<Vec<String>> for PayloadPath {
    fn from(keys: Vec<String>) -> Self {
        Self(keys)
    }
}

/// JSONB containment of `value` at `path`: the predicate holds when the payload contains the
/// object obtained by nesting `value` under the path's keys (`payload @> '{"a":{"b":value}}'`).
///
/// Containment follows PostgreSQL's rules: objects contain sub-objects, arrays contain their
/// elements regardless of order, numbers compare numerically.
///
/// ```
/// use dcbstore::PayloadPredicate;
/// use serde_json::json;
///
/// let p = PayloadPredicate::new(["course", "id"], json!("c1"));
/// assert_eq!(p.containment(), json!({"course": {"id": "c1"}}));
/// let q: PayloadPredicate = ("BookID", json!("b1")).into();
/// assert_eq!(q.containment(), json!({"BookID": "b1"}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadPredicate {
    path: PayloadPath,
    value: Value,
}

impl PayloadPredicate {
    /// Containment of `value` at `path`.
    ///
    /// ```
    /// let p = dcbstore::PayloadPredicate::new("n", serde_json::json!(1));
    /// assert_eq!(p.path().keys(), ["n"]);
    /// ```
    pub fn new(path: impl Into<PayloadPath>, value: Value) -> Self {
        Self {
            path: path.into(),
            value,
        }
    }

    /// The path.
    ///
    /// ```
    /// let p = dcbstore::PayloadPredicate::new(["a", "b"], serde_json::json!(true));
    /// assert_eq!(p.path().keys().len(), 2);
    /// ```
    pub fn path(&self) -> &PayloadPath {
        &self.path
    }

    /// The value that must be contained at the path.
    ///
    /// ```
    /// let p = dcbstore::PayloadPredicate::new("a", serde_json::json!([1, 2]));
    /// assert_eq!(p.value(), &serde_json::json!([1, 2]));
    /// ```
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The JSON object the payload must contain (`payload @> containment`).
    ///
    /// ```
    /// let p = dcbstore::PayloadPredicate::new(["a", "b"], serde_json::json!(1));
    /// assert_eq!(p.containment(), serde_json::json!({"a": {"b": 1}}));
    /// ```
    pub fn containment(&self) -> Value {
        self.path.0.iter().rev().fold(self.value.clone(), |v, k| {
            let mut m = Map::new();
            m.insert(k.clone(), v);
            Value::Object(m)
        })
    }

    pub(super) fn validate(&self, item: usize) -> Result<(), InvalidInput> {
        let value =
            |field| move |problem| InvalidInput::item(item, QueryProblem::Value { field, problem });
        for k in &self.path.0 {
            validate::no_nul(k).map_err(value("payload path"))?;
        }
        validate::json(&self.value).map_err(value("payload predicate value"))?;
        if self.path.0.is_empty() && !self.value.is_object() {
            let reason = format!(
                "a payload is a JSON object and cannot contain {} at its root",
                validate::kind(&self.value)
            );
            return Err(InvalidInput::item(
                item,
                QueryProblem::Contradictory { reason },
            ));
        }
        Ok(())
    }
}

impl<P: Into<PayloadPath>> From<(P, Value)> for PayloadPredicate {
    fn from((path, value): (P, Value)) -> Self {
        Self::new(path, value)
    }
}
