//! The update operators the host applies for guests: `$set`, `$unset`, `$inc`, `$push`,
//! `$addToSet`, `$pull`, with MongoDB's meaning, so that the same update gives the same
//! document on every store. An update comes as JSON text (`update`) or field by field, typed
//! (`update-fields`); both give the same checked [`Update`].

use serde_json::{Map, Number, Value};

use crate::domain::document::{Document, encoded_len, kind, stamp_id};
use crate::domain::extjson;

/// An update that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The update is not a JSON object of operators mapping field paths to values.
    #[error("malformed update: {0}")]
    Malformed(String),
    /// An operator does not map field paths to values (`{"$set": 5}`).
    #[error("malformed update: {0}")]
    Operand(String),
    /// An operator outside the supported set.
    #[error(
        "unsupported update operator `{0}` (supported: $set, $unset, $inc, $push, $addToSet, $pull)"
    )]
    UnknownOperator(String),
    /// A value no store could keep (a malformed Extended JSON wrapper, nested too deeply...).
    #[error("{0}")]
    Value(String),
    /// The operator does not apply to the value found at the path.
    #[error("`{operator}` on `{path}`: {reason}")]
    Mismatch {
        /// The operator.
        operator: String,
        /// The field path.
        path: String,
        /// Why it does not apply.
        reason: String,
    },
}

/// The object holding a path's last segment (if it exists), and that segment.
type Parent<'a, 'p> = (Option<&'a mut Document>, &'p str);

/// An update operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `$set`: set the field.
    Set,
    /// `$unset`: remove the field.
    Unset,
    /// `$inc`: add a number to the field (a missing field counts as 0).
    Inc,
    /// `$push`: append to an array field.
    Push,
    /// `$addToSet`: append to an array field unless an equal element is there.
    AddToSet,
    /// `$pull`: remove every equal element from an array field.
    Pull,
}

impl Operator {
    /// The operator by its MongoDB name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "$set" => Self::Set,
            "$unset" => Self::Unset,
            "$inc" => Self::Inc,
            "$push" => Self::Push,
            "$addToSet" => Self::AddToSet,
            "$pull" => Self::Pull,
            _ => return None,
        })
    }

    /// Its MongoDB name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Set => "$set",
            Self::Unset => "$unset",
            Self::Inc => "$inc",
            Self::Push => "$push",
            Self::AddToSet => "$addToSet",
            Self::Pull => "$pull",
        }
    }
}

/// One operator on one field path.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldUpdate {
    /// The operator.
    pub operator: Operator,
    /// The dotted field path.
    pub path: String,
    /// Its value (ignored by `$unset`).
    pub value: Value,
}

/// A checked update: operators on field paths, applied in order. Made from the JSON text of the
/// `update` call ([`parse_update`]) or from the typed operators of `update-fields`
/// ([`Update::new`]); both give the same update for the same operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    fields: Vec<FieldUpdate>,
    /// No path equals or lies inside another of the update's (see [`applies_in_place`]).
    disjoint: bool,
}

/// The most field paths compared pairwise for [`Update::disjoint`]: an update of more fields
/// takes the copy.
const MOST_DISJOINT_PATHS: usize = 64;

impl Update {
    /// Check operators given one by one: at least one, every path one a document may change,
    /// every value one both stores keep (as [`extjson::check_at`] says, at the deepest level it
    /// can land at), every `$inc` a number.
    pub fn new(fields: Vec<FieldUpdate>) -> Result<Self, UpdateError> {
        if fields.is_empty() {
            return Err(UpdateError::Malformed("the update has no operator".into()));
        }
        Self::checked(fields)
    }

    /// Check operators, none at all included (`{"$set": {}}` creates a document on upsert).
    fn checked(fields: Vec<FieldUpdate>) -> Result<Self, UpdateError> {
        for FieldUpdate {
            operator,
            path,
            value,
        } in &fields
        {
            let operator = operator.name();
            if !crate::domain::manifest::is_field_path(path)
                || path == "_id"
                || path.starts_with("_id.")
            {
                return Err(mismatch(operator, path, "not a modifiable field path"));
            }
            // The objects a nested path opens count as the levels of documents they are.
            let segments = path.split('.').count();
            if segments > extjson::MAX_NESTING {
                return Err(UpdateError::Value(format!(
                    "`{}` nests deeper than {} levels of documents",
                    shown(path),
                    extjson::MAX_NESTING
                )));
            }
            extjson::check_at(value, 2 + segments)
                .map_err(|e| UpdateError::Value(e.to_string()))?;
        }
        if let Some(field) = fields
            .iter()
            .find(|f| f.operator == Operator::Inc && !f.value.is_number())
        {
            return Err(mismatch(
                field.operator.name(),
                &field.path,
                "the increment is not a number",
            ));
        }
        let inside = |a: &str, b: &str| {
            a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'.'
        };
        let disjoint = fields.len() <= MOST_DISJOINT_PATHS
            && fields.iter().enumerate().all(|(i, a)| {
                fields[i + 1..].iter().all(|b| {
                    a.path != b.path && !inside(&a.path, &b.path) && !inside(&b.path, &a.path)
                })
            });
        Ok(Self { fields, disjoint })
    }

    /// The operators, in the order they apply.
    pub fn fields(&self) -> &[FieldUpdate] {
        &self.fields
    }

    /// An upper bound of what the update adds to a document's length as JSON, and about the
    /// length of its JSON text: per field its path with quotes, a colon and a comma, the braces
    /// and quotes a nested path opens, its value, and for `$inc` the digits a sum may gain.
    pub fn text_bound(&self) -> usize {
        self.fields
            .iter()
            .map(|f| {
                let sum = if f.operator == Operator::Inc { 24 } else { 0 };
                f.path.len() + 4 * f.path.split('.').count() + encoded_len(&f.value) + sum
            })
            .sum()
    }
}

/// How much one update may grow a document beyond the length of its text (or its
/// [`Update::text_bound`]): the braces of a nested path, the digits of a float's sum.
pub const UPDATE_GROWTH_SLACK: usize = 32;

impl UpdateError {
    /// Whether the update's operators are at fault (an unknown one, a field path a document
    /// cannot have, an increment that is no number, an operand that is no object), rather than
    /// its form or its values: `update` without upsert of a document that does not exist has
    /// always done nothing whatever its operators, since they apply to no document.
    pub fn is_in_operators(&self) -> bool {
        matches!(
            self,
            Self::Operand(_) | Self::UnknownOperator(_) | Self::Mismatch { .. }
        )
    }
}

/// Parse an update document: a JSON object whose keys are operators, each mapping field paths
/// to values. The operators apply in the order written, each one's fields in their order.
pub fn parse_update(json: &str) -> Result<Update, UpdateError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) if !map.is_empty() => update_from_map(map),
        Ok(Value::Object(_)) => Err(UpdateError::Malformed("the update has no operator".into())),
        Ok(other) => Err(UpdateError::Malformed(format!(
            "expected an object, found {}",
            kind(&other)
        ))),
        Err(e) => Err(UpdateError::Malformed(e.to_string())),
    }
}

/// An update document already parsed as a JSON object (see [`parse_update`]).
pub fn update_from_map(map: Map<String, Value>) -> Result<Update, UpdateError> {
    let mut fields = Vec::new();
    for (name, value) in map {
        let Some(operator) = Operator::from_name(&name) else {
            return Err(UpdateError::UnknownOperator(name));
        };
        let Value::Object(values) = value else {
            return Err(UpdateError::Operand(format!(
                "`{name}` must map field paths to values"
            )));
        };
        for (path, value) in values {
            extjson::check_key(&path).map_err(|e| UpdateError::Value(e.to_string()))?;
            fields.push(FieldUpdate {
                operator,
                path,
                value,
            });
        }
    }
    Update::checked(fields)
}

/// Apply an update to a document (absent when `current` is `None`). A missing document is
/// created from `{_id}` when `upsert` is set, and stays absent otherwise.
pub fn apply_update(
    id: &str,
    current: Option<Map<String, Value>>,
    update: &Update,
    upsert: bool,
) -> Result<Option<Map<String, Value>>, UpdateError> {
    let mut doc = match current {
        Some(doc) => doc,
        None if upsert => Map::new(),
        None => return Ok(None),
    };
    for field in &update.fields {
        apply_one(&mut doc, field.operator, &field.path, &field.value)?;
    }
    stamp_id(&mut doc, id);
    Ok(Some(doc))
}

/// Whether an update certainly applies to `doc` as it is, so that [`apply_in_place`] cannot
/// fail half-way: no field path equal to or inside another of the update's (so no operator
/// sees another's change), each one fitting the document. When not, [`apply_update`] on a copy
/// says what fails, if anything does.
pub fn applies_in_place(doc: &Map<String, Value>, update: &Update) -> bool {
    update.disjoint
        && update
            .fields
            .iter()
            .all(|f| fits(doc, f.operator, &f.path, &f.value))
}

/// Apply an update that [`applies_in_place`] to `doc` where it is; the values it sets are moved
/// into the document, not copied. An error here means the check and the update disagree: the
/// document may be half-changed, and the caller must not keep it.
pub fn apply_in_place(
    id: &str,
    doc: &mut Map<String, Value>,
    update: Update,
) -> Result<(), UpdateError> {
    for FieldUpdate {
        operator,
        path,
        value,
    } in update.fields
    {
        // A top-level field set, or incremented from nothing, takes the update's own name
        // and value: nothing is copied.
        let top = !path.contains('.');
        match operator {
            Operator::Set if top => {
                doc.insert(path, value);
            }
            Operator::Set => *slot(doc, operator, &path)? = value,
            Operator::Inc
                if top && value.is_number() && doc.get(&path).is_none_or(Value::is_null) =>
            {
                doc.insert(path, value);
            }
            _ => apply_one(doc, operator, &path, &value)?,
        }
    }
    stamp_id(doc, id);
    Ok(())
}

/// Whether one operator applies to `doc` as it is ([`apply_one`] would not fail).
fn fits(doc: &Map<String, Value>, operator: Operator, path: &str, value: &Value) -> bool {
    let (prefix, leaf) = match path.rsplit_once('.') {
        Some((prefix, leaf)) => (Some(prefix), leaf),
        None => (None, path),
    };
    let mut current = doc;
    let mut missing = false;
    for segment in prefix.into_iter().flat_map(|p| p.split('.')) {
        match current.get(segment) {
            Some(Value::Object(inner)) => current = inner,
            None | Some(Value::Null) => {
                missing = true;
                break;
            }
            Some(_) => return false,
        }
    }
    // The objects on the way decide for `$set` and `$unset`: what the field holds does not.
    let target = match operator {
        Operator::Set | Operator::Unset => return true,
        _ if missing => None,
        _ => current.get(leaf),
    };
    match operator {
        Operator::Inc => match (value, target) {
            (Value::Number(_), None | Some(Value::Null)) => true,
            (Value::Number(by), Some(Value::Number(n))) => add(n, by).is_some(),
            _ => false,
        },
        _ => matches!(target, None | Some(Value::Null) | Some(Value::Array(_))),
    }
}

fn apply_one(
    doc: &mut Map<String, Value>,
    operator: Operator,
    path: &str,
    value: &Value,
) -> Result<(), UpdateError> {
    match operator {
        Operator::Set => {
            *slot(doc, operator, path)? = value.clone();
        }
        Operator::Unset => {
            let (parent, leaf) = parent_of(doc, operator, path, false)?;
            if let Some(parent) = parent {
                parent.shift_remove(leaf);
            }
        }
        Operator::Inc => {
            let Value::Number(by) = value else {
                return Err(mismatch(
                    operator.name(),
                    path,
                    "the increment is not a number",
                ));
            };
            let target = slot(doc, operator, path)?;
            *target = match target {
                Value::Null => Value::Number(by.clone()),
                Value::Number(n) => Value::Number(
                    add(n, by).ok_or_else(|| mismatch(operator.name(), path, "overflow"))?,
                ),
                other => {
                    return Err(mismatch(
                        operator.name(),
                        path,
                        &format!("the field holds {}", kind(other)),
                    ));
                }
            };
        }
        Operator::Push | Operator::AddToSet | Operator::Pull => {
            let target = slot(doc, operator, path)?;
            if target.is_null() && operator != Operator::Pull {
                *target = Value::Array(Vec::new());
            }
            match target {
                Value::Array(items) => match operator {
                    Operator::Push => items.push(value.clone()),
                    Operator::AddToSet => {
                        if !items.contains(value) {
                            items.push(value.clone());
                        }
                    }
                    _ => items.retain(|item| item != value),
                },
                Value::Null => {}
                other => {
                    return Err(mismatch(
                        operator.name(),
                        path,
                        &format!("the field holds {}", kind(other)),
                    ));
                }
            }
            // `$pull` on a missing field leaves it missing.
            if operator == Operator::Pull && target.is_null() {
                let (parent, leaf) = parent_of(doc, operator, path, false)?;
                if let Some(parent) = parent {
                    parent.shift_remove(leaf);
                }
            }
        }
    }
    Ok(())
}

/// The value at `path`, created as `null` (with intermediate objects) when missing.
fn slot<'a>(
    doc: &'a mut Map<String, Value>,
    operator: Operator,
    path: &str,
) -> Result<&'a mut Value, UpdateError> {
    let (parent, leaf) = parent_of(doc, operator, path, true)?;
    let parent = parent.ok_or_else(|| mismatch(operator.name(), path, "no parent object"))?;
    // Looked up before it is inserted: a field that exists costs no allocation of its name.
    if !parent.contains_key(leaf) {
        parent.insert(leaf.to_owned(), Value::Null);
    }
    parent
        .get_mut(leaf)
        .ok_or_else(|| mismatch(operator.name(), path, "no field"))
}

/// The object holding the last segment of `path`, and that segment. Missing intermediate
/// objects are created when `create` is set, and yield `None` otherwise.
fn parent_of<'a, 'p>(
    doc: &'a mut Map<String, Value>,
    operator: Operator,
    path: &'p str,
    create: bool,
) -> Result<Parent<'a, 'p>, UpdateError> {
    let (prefix, leaf) = match path.rsplit_once('.') {
        Some((prefix, leaf)) => (Some(prefix), leaf),
        None => (None, path),
    };
    let mut current = doc;
    if let Some(prefix) = prefix {
        for segment in prefix.split('.') {
            match current.get(segment) {
                Some(Value::Object(_)) => {}
                None | Some(Value::Null) if !create => return Ok((None, leaf)),
                None | Some(Value::Null) => {}
                Some(other) => {
                    return Err(mismatch(
                        operator.name(),
                        path,
                        &format!("`{segment}` holds {}, not an object", kind(other)),
                    ));
                }
            }
            if !current.contains_key(segment) {
                current.insert(segment.to_owned(), Value::Null);
            }
            let Some(slot) = current.get_mut(segment) else {
                return Err(mismatch(operator.name(), path, "not an object"));
            };
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            current = match slot {
                Value::Object(inner) => inner,
                _ => return Err(mismatch(operator.name(), path, "not an object")),
            };
        }
    }
    Ok((Some(current), leaf))
}

/// Integer + integer stays an integer (failing on overflow); anything else is a float.
fn add(a: &Number, b: &Number) -> Option<Number> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.checked_add(y).map(Number::from);
    }
    Number::from_f64(a.as_f64()? + b.as_f64()?)
}

/// A guest's field path as an error quotes it: at most 64 characters.
fn shown(path: &str) -> String {
    path.chars().take(64).collect()
}

fn mismatch(operator: &str, path: &str, reason: &str) -> UpdateError {
    UpdateError::Mismatch {
        operator: operator.to_owned(),
        path: shown(path),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::document::parse_document;

    fn run(current: Value, update: Value, upsert: bool) -> Result<Option<Value>, UpdateError> {
        let current = match current {
            Value::Object(m) => Some(m),
            _ => None,
        };
        let Value::Object(update) = update else {
            panic!("update must be an object")
        };
        apply_update("d1", current, &update_from_map(update)?, upsert).map(|d| d.map(Value::Object))
    }

    #[test]
    fn upsert_creates_and_operators_combine() {
        let doc = run(
            Value::Null,
            json!({"$set": {"status": "paid", "a.b": 1}, "$inc": {"count": 2, "total": 1.5}, "$push": {"log": "x"}}),
            true,
        );
        assert_eq!(
            doc,
            Ok(Some(
                json!({"_id": "d1", "status": "paid", "a": {"b": 1}, "count": 2, "total": 1.5, "log": ["x"]})
            ))
        );
    }

    #[test]
    fn missing_document_without_upsert_stays_missing() {
        assert_eq!(run(Value::Null, json!({"$set": {"a": 1}}), false), Ok(None));
    }

    #[test]
    fn sets_and_pulls() {
        let doc = run(
            json!({"_id": "d1", "tags": ["a", "b", "a"], "n": 1, "gone": true}),
            json!({"$addToSet": {"tags": "b"}, "$pull": {"tags": "a"}, "$inc": {"n": -1}, "$unset": {"gone": 1, "no.such": 1}}),
            false,
        );
        assert_eq!(doc, Ok(Some(json!({"_id": "d1", "tags": ["b"], "n": 0}))));
    }

    #[test]
    fn refuses_mismatches() {
        assert!(matches!(
            run(json!({"s": "x"}), json!({"$inc": {"s": 1}}), false),
            Err(UpdateError::Mismatch { .. })
        ));
        assert!(matches!(
            run(json!({"s": 1}), json!({"$push": {"s": 1}}), false),
            Err(UpdateError::Mismatch { .. })
        ));
        assert!(matches!(
            run(json!({}), json!({"$where": {"s": 1}}), true),
            Err(UpdateError::UnknownOperator(_))
        ));
        assert!(matches!(
            run(json!({}), json!({"$set": {"_id": 1}}), true),
            Err(UpdateError::Mismatch { .. })
        ));
        assert!(matches!(
            run(json!({"n": i64::MAX}), json!({"$inc": {"n": 1}}), true),
            Err(UpdateError::Mismatch { .. })
        ));
    }

    /// A float written as the shortest text that reads back as it (what every guest's JSON
    /// writes) reads back as that very float: `update-fields` hands floats over exactly, so the
    /// same value as text must give the same document. serde_json's default parse missed by a
    /// bit on one in ten such floats between 0 and 1000.
    #[test]
    fn floats_read_back_exactly() {
        for x in [
            985.6906946328695_f64,
            1.0715660391465826e-75,
            0.1 + 0.2,
            12.34,
        ] {
            let text = serde_json::to_string(&x).expect("text");
            let update = parse_update(&format!(r#"{{"$set": {{"x": {text}}}}}"#)).expect("update");
            assert_eq!(
                update.fields()[0].value.as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "{text}"
            );
            let doc = parse_document("d", &format!(r#"{{"x": {text}}}"#)).expect("document");
            assert_eq!(
                doc["x"].as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "{text}"
            );
        }
    }

    /// A nested path opens a document per segment: one that would nest deeper than a store
    /// keeps is refused when written, as a document that deep is.
    #[test]
    fn paths_nest_no_deeper_than_a_store_keeps() {
        let path = |segments: usize| vec!["a"; segments].join(".");
        let deepest = format!(r#"{{"$set": {{"{}": 1}}}}"#, path(extjson::MAX_NESTING));
        assert!(parse_update(&deepest).is_ok());
        let deeper = format!(r#"{{"$set": {{"{}": 1}}}}"#, path(extjson::MAX_NESTING + 1));
        assert!(
            matches!(parse_update(&deeper), Err(UpdateError::Value(m)) if m.contains("nests deeper"))
        );
    }
}
