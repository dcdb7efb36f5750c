//! What a projection declares about itself, and the rules that keep it inside its namespace.
//!
//! Names are restricted so that a physical table or collection name built from them
//! (`<projection>__g<generation>__<collection>`) can never collide with another projection's,
//! escape into system names, or need quoting tricks.

use serde::Serialize;

/// Longest projection or collection name.
pub const MAX_NAME_LEN: usize = 48;
/// Most collections one projection may declare.
pub const MAX_COLLECTIONS: usize = 32;
/// Most indexes per collection.
pub const MAX_INDEXES: usize = 16;
/// Most keys per index.
pub const MAX_INDEX_KEYS: usize = 8;
/// Most subscribed event or aggregate types.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Largest batch a projection may ask for.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// A projection's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Unique name within a host.
    pub name: String,
    /// Declared version of the logic.
    pub version: u32,
    /// Event types received; empty means all.
    pub event_types: Vec<String>,
    /// Aggregate types received; empty means all.
    pub aggregate_types: Vec<String>,
    /// Collections written.
    pub collections: Vec<CollectionSpec>,
    /// Most events per call, when the projection chose.
    pub batch_size: Option<u32>,
    /// How a failing event is handled, when the projection chose.
    pub failure_policy: Option<FailurePolicy>,
}

/// What happens after the last attempt at a failing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Park the projection at the event.
    Stop,
    /// Record a dead letter and go on.
    Skip,
}

/// How a failing event is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailurePolicy {
    /// Attempts at the event, at least 1.
    pub attempts: u32,
    /// What then.
    pub on_failure: OnFailure,
}

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

impl Default for FailurePolicy {
    /// Three attempts, then park.
    fn default() -> Self {
        Self {
            attempts: 3,
            on_failure: OnFailure::Stop,
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;

    /// `stop`, `skip`, or either with `:ATTEMPTS` (`skip:5`).
    fn from_str(text: &str) -> Result<Self, String> {
        let (action, attempts) = match text.split_once(':') {
            Some((action, attempts)) => (
                action,
                attempts
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
                    .ok_or_else(|| {
                        format!("attempts `{attempts}` is not a number from 1 to {MAX_ATTEMPTS}")
                    })?,
            ),
            None => (text, Self::default().attempts),
        };
        let on_failure = match action {
            "stop" => OnFailure::Stop,
            "skip" => OnFailure::Skip,
            other => return Err(format!("failure policy `{other}` is not `stop` or `skip`")),
        };
        Ok(Self {
            attempts,
            on_failure,
        })
    }
}

/// A declared collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionSpec {
    /// Logical name.
    pub name: String,
    /// Secondary indexes.
    pub indexes: Vec<IndexSpec>,
}

/// A declared index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexSpec {
    /// Name, unique in its collection.
    pub name: String,
    /// Keys in order.
    pub keys: Vec<IndexKey>,
    /// Unique constraint.
    pub unique: bool,
}

impl IndexSpec {
    /// A unique index on these fields, ascending.
    pub fn unique(name: &str, fields: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            keys: fields
                .iter()
                .map(|field| IndexKey {
                    field: (*field).to_owned(),
                    descending: false,
                })
                .collect(),
            unique: true,
        }
    }
}

/// One key of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexKey {
    /// Dotted field path.
    pub field: String,
    /// Descending order.
    pub descending: bool,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A projection, collection or index name breaks the naming rules.
    #[error("invalid {what} name `{name}`: {rule}")]
    InvalidName {
        /// What was named (projection, collection, index).
        what: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An index field path is not a plain dotted path.
    #[error("collection `{collection}`: index `{index}` has an invalid field path `{field}`")]
    InvalidField {
        /// Collection of the index.
        collection: String,
        /// Index name.
        index: String,
        /// The field as given.
        field: String,
    },
    /// Something is declared twice.
    #[error("{what} `{name}` is declared twice")]
    Duplicate {
        /// What is duplicated.
        what: &'static str,
        /// The duplicated name.
        name: String,
    },
    /// A count or size is out of bounds.
    #[error("{0}")]
    OutOfBounds(String),
}

impl Manifest {
    /// A manifest that receives every event and declares these collections without indexes,
    /// with the host's defaults for the rest.
    pub fn new(
        name: &str,
        version: u32,
        collections: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            version,
            event_types: vec![],
            aggregate_types: vec![],
            collections: collections
                .into_iter()
                .map(|name| CollectionSpec {
                    name: name.into(),
                    indexes: vec![],
                })
                .collect(),
            batch_size: None,
            failure_policy: None,
        }
    }

    /// The names of the collections it declares, in order.
    pub fn collection_names(&self) -> Vec<String> {
        self.collections.iter().map(|c| c.name.clone()).collect()
    }

    /// Check every name and bound. A manifest that passes can be mapped to physical names safely.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name("projection", &self.name, true)?;
        if self.version == 0 {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: version must be at least 1",
                self.name
            )));
        }
        if self.collections.is_empty() || self.collections.len() > MAX_COLLECTIONS {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: declares {} collections; between 1 and {MAX_COLLECTIONS} are allowed",
                self.name,
                self.collections.len()
            )));
        }
        if self.event_types.len() > MAX_SUBSCRIPTIONS
            || self.aggregate_types.len() > MAX_SUBSCRIPTIONS
        {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: at most {MAX_SUBSCRIPTIONS} event types and aggregate types each",
                self.name
            )));
        }
        if let Some(policy) = &self.failure_policy
            && !(1..=MAX_ATTEMPTS).contains(&policy.attempts)
        {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: failure policy attempts {} is outside 1..={MAX_ATTEMPTS}",
                self.name, policy.attempts
            )));
        }
        if let Some(size) = self.batch_size
            && (size == 0 || size > MAX_BATCH_SIZE)
        {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: batch size {size} is outside 1..={MAX_BATCH_SIZE}",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for collection in &self.collections {
            check_name("collection", &collection.name, false)?;
            if !seen.insert(collection.name.as_str()) {
                return Err(ManifestError::Duplicate {
                    what: "collection",
                    name: collection.name.clone(),
                });
            }
            collection.validate()?;
        }
        Ok(())
    }

    /// The declared collection with this logical name.
    pub fn collection(&self, name: &str) -> Option<&CollectionSpec> {
        self.collections.iter().find(|c| c.name == name)
    }

    /// The event filter the host applies before calling the projection.
    pub fn filter(&self) -> crate::domain::EventFilter {
        crate::domain::EventFilter {
            event_types: self.event_types.clone(),
            aggregate_types: self.aggregate_types.clone(),
        }
    }
}

impl CollectionSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        if self.indexes.len() > MAX_INDEXES {
            return Err(ManifestError::OutOfBounds(format!(
                "collection `{}`: at most {MAX_INDEXES} indexes",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for index in &self.indexes {
            check_name("index", &index.name, false)?;
            if !seen.insert(index.name.as_str()) {
                return Err(ManifestError::Duplicate {
                    what: "index",
                    name: index.name.clone(),
                });
            }
            if index.keys.is_empty() || index.keys.len() > MAX_INDEX_KEYS {
                return Err(ManifestError::OutOfBounds(format!(
                    "collection `{}`: index `{}` needs 1 to {MAX_INDEX_KEYS} keys",
                    self.name, index.name
                )));
            }
            for key in &index.keys {
                if !is_field_path(&key.field) {
                    return Err(ManifestError::InvalidField {
                        collection: self.name.clone(),
                        index: index.name.clone(),
                        field: key.field.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Projection names allow `-`; collection and index names do not. All: lower-case ASCII
/// letter first, then letters, digits, `_` (and `-`), no `__`, at most [`MAX_NAME_LEN`].
/// Check a projection name (lower-case ASCII letters, digits, `_` and `-`, starting with a
/// letter, at most 48 characters, no `__`).
pub fn check_projection_name(name: &str) -> Result<(), ManifestError> {
    check_name("projection", name, true)
}

pub(super) fn check_name(
    what: &'static str,
    name: &str,
    allow_dash: bool,
) -> Result<(), ManifestError> {
    let fail = |rule| {
        Err(ManifestError::InvalidName {
            what,
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return fail("must have 1 to 48 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("must start with a lower-case ASCII letter");
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
    };
    if !name.chars().all(allowed) {
        return fail(if allow_dash {
            "may contain only a-z, 0-9, `_` and `-`"
        } else {
            "may contain only a-z, 0-9 and `_`"
        });
    }
    if name.contains("__") {
        return fail("must not contain `__` (it separates the parts of physical names)");
    }
    Ok(())
}

/// A dotted path of identifiers: `a`, `a.b_c`, `totals.EUR`. No `$`, no empty segment.
pub fn is_field_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && bytes[0] != b'.'
        && bytes[bytes.len() - 1] != b'.'
        && !path.contains("..")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, collection: &str) -> Manifest {
        Manifest::new(name, 1, [collection])
    }

    #[test]
    fn accepts_plain_names() {
        assert_eq!(manifest("payments-v2", "org_stats").validate(), Ok(()));
    }

    #[test]
    fn refuses_names_that_escape_the_namespace() {
        for bad in ["", "Payments", "a__b", "system.x", "../x", "a$b", "9a"] {
            assert!(
                manifest(bad, "docs").validate().is_err(),
                "projection {bad:?}"
            );
            assert!(manifest("p", bad).validate().is_err(), "collection {bad:?}");
        }
        assert!(manifest("p", "with-dash").validate().is_err());
    }

    #[test]
    fn field_paths() {
        assert!(is_field_path("totals.EUR"));
        assert!(!is_field_path("a..b"));
        assert!(!is_field_path("$where"));
    }

    #[test]
    fn parses_failure_policies() {
        let parse = |text: &str| text.parse::<FailurePolicy>();
        assert_eq!(parse("stop"), Ok(FailurePolicy::default()));
        assert_eq!(
            parse("skip:5"),
            Ok(FailurePolicy {
                attempts: 5,
                on_failure: OnFailure::Skip
            })
        );
        assert!(parse("skip:0").is_err_and(|e| e.contains("from 1 to 20")));
        assert!(parse("retry").is_err_and(|e| e.contains("`retry` is not `stop` or `skip`")));
        let mut m = manifest("p", "c");
        m.failure_policy = Some(FailurePolicy {
            attempts: 0,
            on_failure: OnFailure::Stop,
        });
        assert!(m.validate().is_err());
    }
}
