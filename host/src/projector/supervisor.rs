//! The supervisor: resolves which generation each loaded projection runs, and owns the set of
//! projector tasks.
//!
//! Generation rules for a projection loaded with manifest version `v`:
//! - no generation yet: a new one is built from the origin and becomes active when it catches up;
//! - a generation of version `v` (building or active): it continues from its checkpoint, with
//!   the new code if the code changed (an in-place swap);
//! - an active generation of a lower version: a new generation is built beside it, which keeps
//!   serving until the new one catches up and takes over;
//! - an active generation of a higher version: refused, the stored data is newer than the code.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{DropReason, Handler, Projector, ProjectorStatus};
use crate::domain::{Generation, GenerationState, Position};
use crate::store::{Store, StoreError};

/// Why a projection could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The code declares a version older than the one serving.
    #[error(
        "{projection}: declared version {declared} is lower than the active version {active}; deploy version {active} or higher"
    )]
    LowerVersion {
        /// Projection.
        projection: String,
        /// Version in the code.
        declared: u32,
        /// Version serving.
        active: u32,
    },
    /// Two loaded components share a name.
    #[error("two components declare the projection name `{0}`")]
    Duplicate(String),
}

struct Running {
    name: String,
    status: watch::Receiver<ProjectorStatus>,
    task: JoinHandle<DropReason>,
}

/// The set of running projectors.
pub struct Supervisor {
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    running: Vec<Running>,
}

impl Supervisor {
    /// An empty supervisor over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            store,
            shutdown,
            running: Vec::new(),
        }
    }

    /// Start a projector for a loaded projection, on the generation the rules above pick.
    pub async fn start(
        &mut self,
        handler: Arc<dyn Handler>,
    ) -> Result<Generation, SupervisorError> {
        let manifest = handler.manifest();
        if self.running.iter().any(|r| r.name == manifest.name) {
            return Err(SupervisorError::Duplicate(manifest.name.clone()));
        }
        let generation = self.resolve_generation(handler.as_ref()).await?;
        self.store
            .prepare_collections(&generation, manifest)
            .await?;
        let (projector, status) = Projector::new(
            Arc::clone(&self.store),
            Arc::clone(&handler),
            generation.clone(),
            self.shutdown.subscribe(),
        );
        tracing::info!(
            projection = %manifest.name,
            version = manifest.version,
            generation = generation.number,
            checkpoint = generation.checkpoint,
            state = generation.state.as_str(),
            "starting projector"
        );
        let task = tokio::spawn(projector.run());
        self.running.push(Running {
            name: manifest.name.clone(),
            status,
            task,
        });
        Ok(generation)
    }

    async fn resolve_generation(
        &self,
        handler: &dyn Handler,
    ) -> Result<Generation, SupervisorError> {
        let manifest = handler.manifest();
        let generations = self.store.generations(&manifest.name).await?;
        let latest = |state| generations.iter().rev().find(|g| g.state == state);
        let same_version = latest(GenerationState::Building)
            .filter(|g| g.version == manifest.version)
            .or_else(|| latest(GenerationState::Active).filter(|g| g.version == manifest.version));
        if let Some(generation) = same_version {
            if generation.code_hash != handler.code_hash() {
                self.store.set_code(generation, handler.code_hash()).await?;
                tracing::info!(projection = %manifest.name, generation = generation.number, "new code for the same version: continuing from the checkpoint");
            }
            return Ok(Generation {
                code_hash: handler.code_hash().to_owned(),
                ..generation.clone()
            });
        }
        if let Some(active) = latest(GenerationState::Active)
            && active.version > manifest.version
        {
            return Err(SupervisorError::LowerVersion {
                projection: manifest.name.clone(),
                declared: manifest.version,
                active: active.version,
            });
        }
        Ok(self
            .store
            .create_generation(manifest, handler.code_hash())
            .await?)
    }

    /// The latest status of every projector.
    pub fn statuses(&self) -> Vec<ProjectorStatus> {
        self.running
            .iter()
            .map(|r| r.status.borrow().clone())
            .collect()
    }

    /// Status receivers, for progress displays.
    pub fn status_receivers(&self) -> Vec<watch::Receiver<ProjectorStatus>> {
        self.running.iter().map(|r| r.status.clone()).collect()
    }

    /// Wait until every projector has folded in everything up to `position` and is following
    /// live, or has stopped.
    pub async fn wait_for(&self, position: Position) {
        for running in &self.running {
            let mut status = running.status.clone();
            let _ = status
                .wait_for(|s| {
                    s.state == super::ProjectorState::Stopped
                        || (s.state == super::ProjectorState::Live && s.checkpoint >= position)
                })
                .await;
        }
    }

    /// Stop every projector at its next batch boundary and wait for them.
    pub async fn shutdown(self) -> Vec<(String, DropReason)> {
        let _ = self.shutdown.send(true);
        let mut reasons = Vec::new();
        for running in self.running {
            let reason = running
                .task
                .await
                .unwrap_or_else(|e| DropReason::Store(format!("projector task failed: {e}")));
            reasons.push((running.name, reason));
        }
        reasons
    }
}
