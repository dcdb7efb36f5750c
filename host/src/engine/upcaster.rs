//! Upcasters in the engine: loading one (describe, validate) and running it over events: the
//! events of one call (those of a batch its chain hands it in one round) in a fresh store and
//! instance, under the same memory cap and deadline as a projection's batch. One that imports
//! clocks or randomness gets a fresh store and instance per event, its clocks at the event's
//! timestamp and its randomness seeded for the event, so what it returns depends on the event
//! alone.

use std::sync::Arc;

use super::bindings::upcaster::refold::projection::upcast as wit;
use super::bindings::upcaster::{Upcaster as UpcasterWorld, UpcasterPre};
use super::load::{Compiled, LoadError, NoDocuments, describe_failed};
use super::{Engine, host};
use crate::domain::{Manifest, RecordedEvent, UpcasterManifest};
use crate::projector::{BatchContext, HandleFailure, UpcastEvent, Upcaster};

/// A loaded, described upcaster, ready to instantiate per batch.
pub struct PreparedUpcaster {
    engine: Arc<Engine>,
    pre: UpcasterPre<host::HostState>,
    pub(super) manifest: UpcasterManifest,
    name: Arc<str>,
    code_hash: String,
    /// It imports clocks or randomness: a fresh instance per event.
    per_event: bool,
}

impl std::fmt::Debug for PreparedUpcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedUpcaster")
            .field("manifest", &self.manifest)
            .field("code_hash", &self.code_hash)
            .finish()
    }
}

/// A store for an upcaster's call: it has no collections.
fn new_store(engine: &Engine, name: &Arc<str>) -> wasmtime::Store<host::HostState> {
    let placeholder = Manifest::new(name, 1, Vec::<String>::new());
    let context = BatchContext::new(&placeholder, Box::new(NoDocuments));
    engine.new_store(context, Arc::clone(name))
}

pub(super) fn load(
    engine: &Arc<Engine>,
    compiled: Compiled<'_>,
) -> Result<PreparedUpcaster, LoadError> {
    let instance_pre = engine
        .linker
        .instantiate_pre(&compiled.component)
        .map_err(|e| LoadError::Exports(format!("{e:#}")))?;
    let pre = UpcasterPre::new(instance_pre).map_err(|e| LoadError::Exports(format!("{e:#}")))?;
    let mut store = new_store(engine, &Arc::from("(describe)"));
    let described = pre
        .instantiate(&mut store)
        .and_then(|instance| instance.call_describe(&mut store))
        .inspect(|_| store.data_mut().flush_output())
        .map_err(|e| describe_failed(engine, store.data(), &e))?;
    let manifest = UpcasterManifest {
        name: described.name,
        event_types: described.event_types,
        produces: described.produces,
    };
    manifest.validate().map_err(LoadError::UpcasterManifest)?;
    compiled.keep(engine);
    tracing::debug!(upcaster = %manifest.name, hash = %compiled.code_hash, compiled = compiled.fresh, elapsed = ?compiled.started.elapsed(), "upcaster loaded");
    Ok(PreparedUpcaster {
        engine: Arc::clone(engine),
        pre,
        name: Arc::from(format!("upcaster {}", manifest.name)),
        manifest,
        code_hash: compiled.code_hash.clone(),
        per_event: compiled.per_event,
    })
}

impl PreparedUpcaster {
    fn failure(&self, position: u64, message: String) -> HandleFailure {
        HandleFailure::Upcast {
            upcaster: self.manifest.name.clone(),
            position,
            message,
        }
    }
}

impl Upcaster for PreparedUpcaster {
    fn manifest(&self) -> &UpcasterManifest {
        &self.manifest
    }

    fn code_hash(&self) -> &str {
        &self.code_hash
    }

    fn upcast(&self, events: &[&RecordedEvent]) -> Result<Vec<Vec<UpcastEvent>>, HandleFailure> {
        let mut store = new_store(&self.engine, &self.name);
        let mut instance: Option<UpcasterWorld> = None;
        let mut out = Vec::with_capacity(events.len());
        for (n, event) in events.iter().enumerate() {
            if self.per_event && n > 0 {
                // A store keeps every instance made in it: a fresh one per event, each with its
                // own limits and deadline.
                store = new_store(&self.engine, &self.name);
            }
            store.data_mut().enter_event(event);
            let called = match instance.take() {
                Some(current) => Ok(current),
                None => self.pre.instantiate(&mut store),
            }
            .and_then(|current| {
                let returned = current.call_upcast(&mut store, &host::to_wit_event(event));
                if !self.per_event {
                    instance = Some(current);
                }
                returned
            });
            store.data_mut().flush_output();
            match called {
                Ok(Ok(returned)) => out.push(
                    returned
                        .into_iter()
                        .map(|e: wit::UpcastEvent| UpcastEvent {
                            event_type: e.event_type,
                            data: e.data,
                            metadata: e.metadata,
                        })
                        .collect(),
                ),
                Ok(Err(message)) => {
                    let message: String = message.chars().take(host::MAX_LOG_BYTES).collect();
                    return Err(self.failure(event.position, format!("it returned: {message}")));
                }
                Err(error) => {
                    let state = store.data();
                    let trap = host::classify_trap(
                        &error,
                        &self.engine.limits,
                        &state.limiter,
                        state.panic.as_deref(),
                    );
                    let message = match (&trap, state.stderr_tail.as_deref()) {
                        (HandleFailure::Trap(_), Some(stderr)) => {
                            format!("{trap}; its stderr ends: {stderr}")
                        }
                        _ => trap.to_string(),
                    };
                    return Err(self.failure(event.position, message));
                }
            }
        }
        Ok(out)
    }
}
