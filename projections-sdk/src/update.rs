//! A builder for update operators, applied by the host without a read by the guest.

use serde::Serialize;
use serde_json::{Map, Value};

/// A set of update operators on one document: `$set`, `$unset`, `$inc`, `$push`, `$addToSet`,
/// `$pull`. Field names are dotted paths (`totals.EUR`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    operators: Map<String, Value>,
}

impl Update {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, operator: &str, path: &str, value: Value) -> Self {
        let fields = self
            .operators
            .entry(operator)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = fields {
            fields.insert(path.to_owned(), value);
        }
        self
    }

    /// Set a field. A value that does not serialize is stored as `null`.
    pub fn set(self, path: &str, value: impl Serialize) -> Self {
        self.with("$set", path, to_value(value))
    }

    /// Remove a field.
    pub fn unset(self, path: &str) -> Self {
        self.with("$unset", path, Value::Bool(true))
    }

    /// Add to a numeric field (a missing field counts as 0).
    pub fn inc(self, path: &str, by: impl Into<serde_json::Number>) -> Self {
        self.with("$inc", path, Value::Number(by.into()))
    }

    /// Add a floating-point amount to a numeric field. A non-finite amount is ignored.
    pub fn inc_f64(self, path: &str, by: f64) -> Self {
        match serde_json::Number::from_f64(by) {
            Some(n) => self.with("$inc", path, Value::Number(n)),
            None => self,
        }
    }

    /// Append a value to an array field (a missing field becomes an array).
    pub fn push(self, path: &str, value: impl Serialize) -> Self {
        self.with("$push", path, to_value(value))
    }

    /// Append a value to an array field unless an equal element is present.
    pub fn add_to_set(self, path: &str, value: impl Serialize) -> Self {
        self.with("$addToSet", path, to_value(value))
    }

    /// Remove every element equal to the value from an array field.
    pub fn pull(self, path: &str, value: impl Serialize) -> Self {
        self.with("$pull", path, to_value(value))
    }

    /// The update as the JSON object the host expects.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.operators).unwrap_or_default()
    }
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::Update;

    #[test]
    fn groups_fields_by_operator() {
        let update = Update::new()
            .set("status", "paid")
            .inc("count", 1)
            .set("amount", 12.5);
        assert_eq!(
            update.to_json(),
            r#"{"$set":{"status":"paid","amount":12.5},"$inc":{"count":1}}"#
        );
    }
}
