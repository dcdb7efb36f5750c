//! A builder for update operators, applied by the host without a read by the guest.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::wit::refold::projection::collections::{FieldUpdate, FieldValue, UpdateOperator};

/// A set of update operators on one document: `$set`, `$unset`, `$inc`, `$push`, `$addToSet`,
/// `$pull`. Field names are dotted paths (`totals.EUR`).
///
/// The host receives the operators one by one (`update-fields`), not as JSON text. They apply
/// as [`Update::to_json`] writes them: each operator's fields together, the operators in the
/// order first used; a field given twice to one operator keeps its last value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Grouped by operator, as the JSON object has them.
    fields: Vec<(Operator, String, Given)>,
}

/// A value given to an operator.
#[derive(Debug, Clone, PartialEq)]
enum Given {
    Json(Value),
    /// A date, ms since the Unix epoch.
    Date(i64),
}

/// 9999-12-31T23:59:59.999Z: the last date written as text (as the host writes dates).
const LAST_TEXT_DATE_MS: i64 = 253_402_300_799_999;

impl Given {
    /// The value as JSON: a date as the host stores it, relaxed Extended JSON.
    fn to_json(&self) -> Value {
        match self {
            Self::Json(value) => value.clone(),
            Self::Date(ms @ 0..=LAST_TEXT_DATE_MS) => {
                serde_json::json!({ "$date": crate::iso8601_millis(*ms) })
            }
            Self::Date(ms) => serde_json::json!({ "$date": { "$numberLong": ms.to_string() } }),
        }
    }
}

/// An update operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Set,
    Unset,
    Inc,
    Push,
    AddToSet,
    Pull,
}

impl Operator {
    fn name(self) -> &'static str {
        match self {
            Self::Set => "$set",
            Self::Unset => "$unset",
            Self::Inc => "$inc",
            Self::Push => "$push",
            Self::AddToSet => "$addToSet",
            Self::Pull => "$pull",
        }
    }

    fn to_wit(self) -> UpdateOperator {
        match self {
            Self::Set => UpdateOperator::Set,
            Self::Unset => UpdateOperator::Unset,
            Self::Inc => UpdateOperator::Inc,
            Self::Push => UpdateOperator::Push,
            Self::AddToSet => UpdateOperator::AddToSet,
            Self::Pull => UpdateOperator::Pull,
        }
    }
}

impl Update {
    /// An empty update.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, operator: Operator, path: &str, value: impl Into<Given>) -> Self {
        let value = value.into();
        let same = self.fields.iter().rposition(|(o, _, _)| *o == operator);
        let found = same.and_then(|last| {
            self.fields[..=last]
                .iter()
                .rposition(|(o, p, _)| *o == operator && p == path)
        });
        match (found, same) {
            (Some(at), _) => self.fields[at].2 = value,
            (None, Some(last)) => self
                .fields
                .insert(last + 1, (operator, path.to_owned(), value)),
            (None, None) => self.fields.push((operator, path.to_owned(), value)),
        }
        self
    }

    /// Set a field. A value that does not serialize is stored as `null`.
    pub fn set(self, path: &str, value: impl Serialize) -> Self {
        self.with(Operator::Set, path, to_value(value))
    }

    /// Set a field to a date, in milliseconds since the Unix epoch (UTC), such as
    /// [`Event::timestamp_ms`](crate::Event::timestamp_ms): stored as `{"$date": "..."}`, the
    /// same as `set(path, event.timestamp())`, and handed to the host as a number, not as text.
    /// A date before 1970 or after 9999 is stored as `{"$date": {"$numberLong": "..."}}`.
    pub fn set_date(self, path: &str, ms: i64) -> Self {
        self.with(Operator::Set, path, Given::Date(ms))
    }

    /// Remove a field.
    pub fn unset(self, path: &str) -> Self {
        self.with(Operator::Unset, path, Value::Bool(true))
    }

    /// Add to a numeric field (a missing field counts as 0).
    pub fn inc(self, path: &str, by: impl Into<serde_json::Number>) -> Self {
        self.with(Operator::Inc, path, Value::Number(by.into()))
    }

    /// Add a floating-point amount to a numeric field. A non-finite amount is ignored.
    pub fn inc_f64(self, path: &str, by: f64) -> Self {
        match serde_json::Number::from_f64(by) {
            Some(n) => self.with(Operator::Inc, path, Value::Number(n)),
            None => self,
        }
    }

    /// Append a value to an array field (a missing field becomes an array).
    pub fn push(self, path: &str, value: impl Serialize) -> Self {
        self.with(Operator::Push, path, to_value(value))
    }

    /// Append a value to an array field unless an equal element is present.
    pub fn add_to_set(self, path: &str, value: impl Serialize) -> Self {
        self.with(Operator::AddToSet, path, to_value(value))
    }

    /// Remove every element equal to the value from an array field.
    pub fn pull(self, path: &str, value: impl Serialize) -> Self {
        self.with(Operator::Pull, path, to_value(value))
    }

    /// The update as a JSON object of operators (what the host's `update` takes).
    pub fn to_json(&self) -> String {
        let mut operators = Map::new();
        for (operator, path, value) in &self.fields {
            let fields = operators
                .entry(operator.name())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(fields) = fields {
                fields.insert(path.clone(), value.to_json());
            }
        }
        serde_json::to_string(&operators).unwrap_or_default()
    }

    /// The operators as `update-fields` takes them, in the order they apply.
    pub(crate) fn into_wit(self) -> Vec<FieldUpdate> {
        self.fields
            .into_iter()
            .map(|(operator, path, value)| FieldUpdate {
                operator: operator.to_wit(),
                path,
                value: match value {
                    Given::Json(value) => to_wit_value(value),
                    Given::Date(ms) => FieldValue::Date(ms),
                },
            })
            .collect()
    }
}

impl From<Value> for Given {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A JSON value as `update-fields` takes it: scalars typed, the rest as JSON text. Integers
/// beyond 64 bits signed go as text too, so the host reads the number the JSON had.
fn to_wit_value(value: Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Null,
        Value::Bool(b) => FieldValue::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.is_f64(), n.as_f64()) {
            (Some(i), _, _) => FieldValue::Integer(i),
            (None, true, Some(x)) => FieldValue::Float(x),
            _ => FieldValue::Json(n.to_string()),
        },
        Value::String(text) => FieldValue::Text(text),
        other => FieldValue::Json(other.to_string()),
    }
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

    #[test]
    fn sends_the_fields_in_the_order_the_json_applies_them() {
        let update = Update::new()
            .set("a", 1)
            .inc("n", 1)
            .set("b", "x")
            .set("a", 2)
            .unset("gone")
            .set_date("at", 1_734_602_400_123)
            .set_date("old", -1);
        assert_eq!(
            update.to_json(),
            r#"{"$set":{"a":2,"b":"x","at":{"$date":"2024-12-19T10:00:00.123Z"},"old":{"$date":{"$numberLong":"-1"}}},"$inc":{"n":1},"$unset":{"gone":true}}"#
        );
        let order: Vec<_> = update
            .into_wit()
            .into_iter()
            .map(|f| {
                (
                    format!("{:?}", f.operator),
                    f.path,
                    format!("{:?}", f.value),
                )
            })
            .collect();
        let expected = [
            ("Set", "a", "Integer(2)"),
            ("Set", "b", "Text(\"x\")"),
            ("Set", "at", "Date(1734602400123)"),
            ("Set", "old", "Date(-1)"),
            ("Inc", "n", "Integer(1)"),
            ("Unset", "gone", "Boolean(true)"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(o, p, v)| {
                let (o, v) = (format!("UpdateOperator::{o}"), format!("FieldValue::{v}"));
                (o, p.to_string(), v)
            })
            .collect();
        assert_eq!(order, expected);
    }
}
