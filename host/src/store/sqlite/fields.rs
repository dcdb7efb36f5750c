//! How SQL reaches a document's fields: `json_extract` paths, and the key a unique index
//! compares. Shared by the tables' indexes and the queries that use them, which must write the
//! same expressions for SQLite to match one to the other.

/// `json_extract` path for a field path that passed [`crate::domain::manifest::is_field_path`].
pub(super) fn json_path(field: &str) -> String {
    let segments: Vec<String> = field.split('.').map(|s| format!("\"{s}\"")).collect();
    format!("'$.{}'", segments.join("."))
}

/// The kind of the value at `path` (a [`json_path`]), as a unique index compares it beside the
/// value: NULL when it is missing or null, one kind for all numbers (`1` and `1.0` are one
/// value, as in MongoDB), `s` for a string.
pub(super) fn unique_kind(path: &str) -> String {
    format!(
        "CASE json_type(body, {path}) WHEN 'true' THEN 'b' WHEN 'false' THEN 'b' WHEN 'integer' THEN 'n' WHEN 'real' THEN 'n' WHEN 'text' THEN 's' WHEN 'object' THEN 'o' WHEN 'array' THEN 'a' END"
    )
}

/// The first key of a unique index on `path`, as its `CREATE INDEX` statement writes it.
pub(super) fn unique_first_key(path: &str) -> String {
    format!("({}, json_extract(body, {path})", unique_kind(path))
}
