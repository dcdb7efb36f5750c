//! A builder for the projection's manifest.

use crate::wit::refold::projection::types as wit;

/// What a projection is, what it listens to and what it writes.
#[derive(Debug, Clone)]
pub struct Manifest {
    inner: wit::Manifest,
}

impl Manifest {
    /// A projection with a name and a declared version, subscribed to every event, with no
    /// collections yet.
    pub fn new(name: &str, version: u32) -> Self {
        Self {
            inner: wit::Manifest {
                name: name.to_owned(),
                version,
                event_types: Vec::new(),
                aggregate_types: Vec::new(),
                collections: Vec::new(),
                batch_size: None,
                failure_policy: None,
            },
        }
    }

    /// Receive only these event types.
    pub fn event_types(mut self, types: &[&str]) -> Self {
        self.inner.event_types = types.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Receive only events of these aggregate types.
    pub fn aggregate_types(mut self, types: &[&str]) -> Self {
        self.inner.aggregate_types = types.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Declare a collection.
    pub fn collection(mut self, name: &str) -> Self {
        self.inner.collections.push(wit::CollectionSpec {
            name: name.to_owned(),
            indexes: Vec::new(),
        });
        self
    }

    /// Declare an index on a collection declared before. Each key is a field path, prefixed
    /// with `-` for descending order: `&["organizationId", "-processedAt"]`.
    pub fn index(self, collection: &str, name: &str, keys: &[&str]) -> Self {
        self.add_index(collection, name, keys, false)
    }

    /// Declare a unique index on a collection declared before.
    pub fn unique_index(self, collection: &str, name: &str, keys: &[&str]) -> Self {
        self.add_index(collection, name, keys, true)
    }

    /// Hand at most this many events to each `handle` call.
    pub fn batch_size(mut self, size: u32) -> Self {
        self.inner.batch_size = Some(size);
        self
    }

    /// After `attempts` failed tries at an event (with backoff between them), record it as a
    /// dead letter and go on with the next event, instead of parking the projection (the
    /// default, after 3 attempts). An operator can override this per projection.
    pub fn skip_failing_events(mut self, attempts: u32) -> Self {
        self.inner.failure_policy = Some(wit::FailurePolicy {
            attempts,
            on_failure: wit::OnFailure::Skip,
        });
        self
    }

    /// After `attempts` failed tries at an event, park the projection at it (the default
    /// action, with 3 attempts).
    pub fn stop_on_failing_events(mut self, attempts: u32) -> Self {
        self.inner.failure_policy = Some(wit::FailurePolicy {
            attempts,
            on_failure: wit::OnFailure::Stop,
        });
        self
    }

    fn add_index(mut self, collection: &str, name: &str, keys: &[&str], unique: bool) -> Self {
        let keys = keys
            .iter()
            .map(|k| match k.strip_prefix('-') {
                Some(field) => wit::IndexKey {
                    field: field.to_owned(),
                    descending: true,
                },
                None => wit::IndexKey {
                    field: (*k).to_owned(),
                    descending: false,
                },
            })
            .collect();
        let spec = wit::IndexSpec {
            name: name.to_owned(),
            keys,
            unique,
        };
        // An index on a collection not declared yet declares it.
        match self
            .inner
            .collections
            .iter_mut()
            .find(|c| c.name == collection)
        {
            Some(c) => c.indexes.push(spec),
            None => self.inner.collections.push(wit::CollectionSpec {
                name: collection.to_owned(),
                indexes: vec![spec],
            }),
        }
        self
    }

    pub(crate) fn into_wit(self) -> wit::Manifest {
        self.inner
    }
}
