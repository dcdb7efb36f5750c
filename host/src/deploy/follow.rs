//! Following what a store that keeps components publishes (see the module above).

use super::{Content, Deployer, Outcome};
use crate::engine::Engine;
use crate::store::{Store, StoreError};

/// A component's bytes by hash: from the engine's code cache, else from the store (kept in the
/// cache then); `None` when neither has them.
pub async fn fetch(
    engine: &Engine,
    store: &dyn Store,
    hash: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(bytes) = engine.cached_source(hash) {
        return Ok(Some(bytes));
    }
    let bytes = store.component(hash).await?;
    if let Some(bytes) = &bytes {
        engine.cache_source(bytes);
    }
    Ok(bytes)
}

impl Deployer {
    /// Deploy what the store publishes: components published or changed since the last call,
    /// and the withdrawal of those no longer published. Bytes come from the code cache when it
    /// has them, else from the store (and are then kept in the cache). The code of every
    /// generation that may run is fetched into the cache too, so this host can run any of them.
    pub async fn follow_store(&mut self) -> Result<Vec<(String, Outcome)>, StoreError> {
        // The revision first: the components read after it hold every change up to it.
        let revision = self.store.deployment_revision().await?;
        if self.revision == Some(revision) {
            return Ok(Vec::new());
        }
        let published = self.store.published().await?;
        let mut items = Vec::new();
        // A component whose bytes the store failed to give is tried again at the next call.
        let mut again = false;
        for component in &published {
            if self
                .files
                .get(&component.name)
                .is_some_and(|s| s.hash == component.hash)
            {
                continue;
            }
            let content = match self.fetch(&component.hash).await {
                Ok(Some(bytes)) => Content::Bytes(bytes),
                Ok(None) => Content::Unreadable(format!(
                    "the store keeps no bytes for component {}",
                    component.hash
                )),
                Err(error) => {
                    // Tried again at the next call when the store failed; bytes it holds
                    // corrupt stay refused until the name is published again.
                    again |= !matches!(error, StoreError::NotFound(_));
                    Content::Unreadable(error.to_string())
                }
            };
            items.push((component.name.clone(), content));
        }
        for name in self.files.keys() {
            if !published.iter().any(|c| &c.name == name) {
                items.push((name.clone(), Content::Gone));
            }
        }
        again |= !self.fetch_generations_code().await?;
        // While the batch applies, settled as before it (its projections create their
        // generations as they deploy, which `--exit-when-caught-up` waits for).
        self.supervisor
            .set_deployment_revision(revision, self.failed_here.is_empty());
        let outcomes = self.apply_named(items).await;
        // A host that could not read or load a publication (where others may have) does not
        // take part in deciding generations; refusals every host reaches alike (a name or an
        // event type another component holds) do not keep it out.
        let settled = self.failed_here.is_empty();
        self.supervisor.set_deployment_revision(revision, settled);
        self.revision = (!again).then_some(revision);
        Ok(outcomes)
    }

    async fn fetch(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        fetch(&self.engine, self.store.as_ref(), hash).await
    }

    /// Fetch into the code cache the code (and upcasters) of every generation that may run
    /// again, when the store keeps it: an active or building one, or one a rollback returns to.
    /// Whether every fetch went through (else the next call tries again).
    async fn fetch_generations_code(&mut self) -> Result<bool, StoreError> {
        let mut fetched_all = true;
        let generations = self.store.all_generations().await?;
        let may_run =
            |g: &&crate::domain::Generation| g.state != crate::domain::GenerationState::Abandoned;
        for generation in generations.iter().filter(may_run) {
            let hashes = std::iter::once(&generation.code_hash).chain(&generation.upcasters);
            for hash in hashes {
                if self.fetched.contains(hash) {
                    continue;
                }
                // A generation of code the store does not keep (deployed from a folder before
                // components were kept) loads from this host's cache, if at all.
                match self.fetch(hash).await {
                    Ok(_) => {
                        self.fetched.insert(hash.clone());
                    }
                    Err(error) => {
                        fetched_all = false;
                        tracing::warn!(%hash, %error, "cannot fetch a generation's code from the store")
                    }
                }
            }
        }
        Ok(fetched_all)
    }
}
