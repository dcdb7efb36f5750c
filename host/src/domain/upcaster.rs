//! What an upcaster declares about itself: the event types it takes and those it may return.

use serde::Serialize;

use super::manifest::{MAX_SUBSCRIPTIONS, ManifestError, check_name};

/// An upcaster's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpcasterManifest {
    /// Unique name within a host (a projection's naming rules).
    pub name: String,
    /// The event types it takes; at least one.
    pub event_types: Vec<String>,
    /// Every event type it may return.
    pub produces: Vec<String>,
}

impl UpcasterManifest {
    /// Check the name and the lists.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name("upcaster", &self.name, true)?;
        if self.event_types.is_empty() {
            return Err(ManifestError::OutOfBounds(format!(
                "{}: an upcaster takes at least one event type",
                self.name
            )));
        }
        for (what, types) in [
            ("event type", &self.event_types),
            ("produced event type", &self.produces),
        ] {
            if types.len() > MAX_SUBSCRIPTIONS {
                return Err(ManifestError::OutOfBounds(format!(
                    "{}: at most {MAX_SUBSCRIPTIONS} {what}s",
                    self.name
                )));
            }
            if let Some(empty) = types.iter().find(|t| t.trim().is_empty()) {
                return Err(ManifestError::OutOfBounds(format!(
                    "{}: {what} `{empty}` is empty",
                    self.name
                )));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = types.iter().find(|t| !seen.insert(t.as_str())) {
                return Err(ManifestError::Duplicate {
                    what,
                    name: twice.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, takes: &[&str], produces: &[&str]) -> UpcasterManifest {
        UpcasterManifest {
            name: name.into(),
            event_types: takes.iter().map(|t| (*t).to_owned()).collect(),
            produces: produces.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn a_manifest_names_what_it_breaks() {
        assert!(manifest("v2", &["A"], &["B"]).validate().is_ok());
        assert!(manifest("drops", &["A"], &[]).validate().is_ok());
        let error = manifest("Bad", &["A"], &[])
            .validate()
            .expect_err("refused");
        assert!(error.to_string().contains("invalid upcaster name `Bad`"));
        let error = manifest("v2", &[], &["B"]).validate().expect_err("refused");
        assert!(error.to_string().contains("at least one event type"));
        let error = manifest("v2", &["A", "A"], &[])
            .validate()
            .expect_err("refused");
        assert_eq!(error.to_string(), "event type `A` is declared twice");
        let error = manifest("v2", &["A"], &[" "])
            .validate()
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("produced event type ` ` is empty")
        );
    }
}
