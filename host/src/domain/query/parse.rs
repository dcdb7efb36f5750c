//! Parsing a query's JSON into a validated [`Query`](super::Query): every path checked, every
//! operator named when refused, every value read as the BSON the MongoDB store would hold.

use bson::Bson;
use serde_json::Value;

use super::{
    CODE_OPERATORS, Direction, Filter, MAX_DEPTH, MAX_IN, MAX_PATH, Op, QueryError, SUPPORTED,
    VALUE_WRAPPERS, refuse,
};
use crate::domain::extjson;

fn check_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.len() > MAX_PATH {
        return refuse(format!("field path must have 1 to {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return refuse("field path contains a NUL character");
    }
    for part in path.split('.') {
        if part.is_empty() {
            return refuse(format!("field path `{path}` has an empty part"));
        }
        if part.starts_with('$') {
            return refuse(format!(
                "field path `{path}` has a part starting with `$`: operators go inside a field's condition"
            ));
        }
    }
    Ok(())
}

fn refuse_operator<T>(operator: &str) -> Result<T, QueryError> {
    if CODE_OPERATORS.contains(&operator) {
        refuse(format!(
            "operator `{operator}` is not allowed: filters cannot run code; use {SUPPORTED}"
        ))
    } else {
        refuse(format!(
            "unknown or unsupported operator `{operator}`; use {SUPPORTED}"
        ))
    }
}

pub(super) fn parse_filter(value: &Value, depth: usize) -> Result<Filter, QueryError> {
    if depth > MAX_DEPTH {
        return refuse(format!(
            "filter nests $and/$or/$nor deeper than {MAX_DEPTH}"
        ));
    }
    let Value::Object(map) = value else {
        return refuse(format!("a filter must be a JSON object, not {value}"));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key.starts_with('$') {
            let Value::Array(items) = value else {
                return match key.as_str() {
                    "$and" | "$or" | "$nor" => refuse(format!("`{key}` needs an array of filters")),
                    other => refuse_operator(other),
                };
            };
            let children = match key.as_str() {
                "$and" | "$or" | "$nor" => {
                    if items.is_empty() {
                        return refuse(format!("`{key}` needs at least one filter"));
                    }
                    items
                        .iter()
                        .map(|item| parse_filter(item, depth + 1))
                        .collect::<Result<Vec<_>, _>>()?
                }
                other => return refuse_operator(other),
            };
            parts.push(match key.as_str() {
                "$and" => Filter::And(children),
                "$or" => Filter::Or(children),
                _ => Filter::Nor(children),
            });
        } else {
            check_path(key)?;
            parts.push(Filter::Field {
                path: key.clone(),
                ops: parse_condition(key, value)?,
            });
        }
    }
    Ok(Filter::And(parts))
}

fn is_operator_object(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            map.keys().any(|k| k.starts_with('$'))
                && !(map.len() == 1 && map.keys().all(|k| VALUE_WRAPPERS.contains(&k.as_str())))
        }
        _ => false,
    }
}

fn to_bson(path: &str, value: &Value) -> Result<Bson, QueryError> {
    extjson::to_bson(value).map_err(|e| QueryError(format!("`{path}`: {e}")))
}

fn parse_condition(path: &str, value: &Value) -> Result<Vec<Op>, QueryError> {
    if !is_operator_object(value) {
        return Ok(vec![Op::Eq(to_bson(path, value)?)]);
    }
    let Value::Object(map) = value else {
        return Ok(Vec::new());
    };
    if map.keys().any(|k| !k.starts_with('$')) {
        return refuse(format!(
            "`{path}` mixes operators and field names; write {{\"{path}\": {{\"$eq\": {{...}}}}}} to match a whole document"
        ));
    }
    map.iter()
        .map(|(operator, operand)| {
            let value = || to_bson(path, operand);
            let list = || match operand {
                Value::Array(items) if items.len() <= MAX_IN => {
                    items.iter().map(|item| to_bson(path, item)).collect()
                }
                Value::Array(_) => refuse(format!(
                    "`{path}`: `{operator}` takes at most {MAX_IN} values"
                )),
                other => refuse(format!(
                    "`{path}`: `{operator}` needs an array, not {other}"
                )),
            };
            Ok(match operator.as_str() {
                "$eq" => Op::Eq(value()?),
                "$ne" => Op::Ne(value()?),
                "$gt" => Op::Gt(value()?),
                "$gte" => Op::Gte(value()?),
                "$lt" => Op::Lt(value()?),
                "$lte" => Op::Lte(value()?),
                "$in" => Op::In(list()?),
                "$nin" => Op::Nin(list()?),
                "$exists" => match operand {
                    Value::Bool(b) => Op::Exists(*b),
                    other => {
                        return refuse(format!(
                            "`{path}`: `$exists` needs true or false, not {other}"
                        ));
                    }
                },
                other => return refuse_operator(other),
            })
        })
        .collect()
}

pub(super) fn parse_sort(value: &Value) -> Result<Vec<(String, Direction)>, QueryError> {
    let keys: Vec<(String, Direction)> = match value {
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|key| match key.strip_prefix('-') {
                Some(path) => (path.to_owned(), Direction::Descending),
                None => (
                    key.strip_prefix('+').unwrap_or(key).to_owned(),
                    Direction::Ascending,
                ),
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(path, direction)| match direction.as_i64() {
                Some(1) => Ok((path.clone(), Direction::Ascending)),
                Some(-1) => Ok((path.clone(), Direction::Descending)),
                _ => refuse(format!(
                    "sort direction of `{path}` must be 1 or -1, not {direction}"
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return refuse(format!(
                "sort must be an object like {{\"amount\": -1}} or text like `-amount,_id`, not {other}"
            ));
        }
    };
    if keys.len() > 8 {
        return refuse("sort takes at most 8 keys");
    }
    for (i, (path, _)) in keys.iter().enumerate() {
        check_path(path)?;
        if keys[..i].iter().any(|(p, _)| p == path) {
            return refuse(format!("sort names `{path}` twice"));
        }
    }
    Ok(keys)
}
