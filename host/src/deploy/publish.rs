//! A host's projections folder, published to a store that keeps components (MongoDB), so that
//! every host serving the store runs what any host's folder holds.
//!
//! When the host starts (and when the folder must be rescanned), each file whose bytes the
//! store does not publish under its name is checked (compiled, imports, exports, manifest) and,
//! if it passes, published; a file that fails is refused on the spot, recorded for `refold
//! status`, and not published, so what ran before keeps running everywhere. Components this
//! folder published whose files are gone are withdrawn. While the host runs, each change to a
//! file publishes it the same way, and removing a file withdraws its component, as long as this
//! folder published its current bytes (another host's folder, or `refold deploy`, may have
//! published the name since). The last publication of a name wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DeployError, Outcome, components_in, load_off_thread};
use crate::engine::{Engine, code_hash};
use crate::store::{Store, StoreError};

/// This machine's name, for the sources of publications.
fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// The source `refold deploy` records: `deploy MACHINE`.
pub fn deploy_source() -> String {
    format!("deploy {}", machine())
}

/// Publishes a folder's components to the store.
pub struct FolderPublisher {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    dir: PathBuf,
    /// `folder MACHINE:PATH`: what this folder's publications record as their source.
    source: String,
    /// By component name: the hash last published or refused from this folder.
    seen: BTreeMap<String, String>,
    /// Files whose publication failed on the store, to try again.
    retry: Vec<PathBuf>,
    /// Names whose file this publisher refused last.
    refused: std::collections::BTreeSet<String>,
}

impl FolderPublisher {
    /// A publisher of `dir` to `store`.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, dir: &Path) -> Self {
        let absolute = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        Self {
            engine,
            store,
            source: format!("folder {}:{}", machine(), absolute.display()),
            dir: dir.to_path_buf(),
            seen: BTreeMap::new(),
            retry: Vec::new(),
            refused: Default::default(),
        }
    }

    fn name(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Publish every file of the folder the store does not publish as it is, and withdraw the
    /// components this folder published whose files are gone.
    pub async fn publish_folder(&mut self) -> Result<Vec<(String, Outcome)>, DeployError> {
        let files = components_in(&self.dir)?;
        let published = match self.store.published().await {
            Ok(published) => published,
            Err(error) => {
                tracing::warn!(%error, "cannot read the published components; trying again");
                self.retry.extend(files);
                return Ok(Vec::new());
            }
        };
        let mut outcomes = Vec::new();
        for path in &files {
            let name = self.name(path);
            if let Some(current) = published.iter().find(|p| p.name == name) {
                self.seen.insert(name, current.hash.clone());
            }
        }
        outcomes.extend(self.publish(files.clone()).await);
        let names: Vec<String> = files.iter().map(|p| self.name(p)).collect();
        let gone: Vec<String> = published
            .into_iter()
            .filter(|p| p.source == self.source && !names.contains(&p.name))
            .map(|p| p.name)
            .collect();
        for name in gone {
            let outcome = self.withdraw(&name).await;
            outcomes.push((name, outcome));
        }
        Ok(outcomes)
    }

    /// Publish changed files, and withdraw the components of removed ones.
    pub async fn publish(&mut self, mut paths: Vec<PathBuf>) -> Vec<(String, Outcome)> {
        paths.sort();
        paths.dedup();
        let mut outcomes = Vec::new();
        for path in paths {
            let name = self.name(&path);
            let outcome = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.withdraw(&name).await,
                Err(e) => Outcome::Refused {
                    error: format!("cannot read the file: {e}"),
                },
                Ok(bytes) => match self.publish_bytes(&name, bytes).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        tracing::warn!(component = %name, %error, "cannot publish the component; trying again");
                        self.retry.push(path);
                        continue;
                    }
                },
            };
            if let Outcome::Refused { error } = &outcome {
                tracing::error!(component = %name, %error, "component refused");
                crate::metrics::global().refused();
                if let Err(error) = self.store.record_refusal(&name, Some(error)).await {
                    tracing::warn!(component = %name, %error, "cannot record the refusal in the store");
                }
            }
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// Publish again the files whose publication the store failed.
    pub async fn publish_failed(&mut self) -> Vec<(String, Outcome)> {
        if self.retry.is_empty() {
            return Vec::new();
        }
        let paths = std::mem::take(&mut self.retry);
        self.publish(paths).await
    }

    async fn publish_bytes(&mut self, name: &str, bytes: Vec<u8>) -> Result<Outcome, StoreError> {
        let hash = code_hash(&bytes);
        if self.seen.get(name) == Some(&hash) {
            return Ok(Outcome::Unchanged);
        }
        // Checked here, so a component that cannot run on any host is never published.
        let checked = load_off_thread(&self.engine, bytes.clone()).await;
        if let Err(error) = checked {
            self.seen.insert(name.to_owned(), hash);
            self.refused.insert(name.to_owned());
            return Ok(Outcome::Refused { error });
        }
        let (published, changed) = self.store.publish(name, &bytes, &self.source).await?;
        self.seen.insert(name.to_owned(), hash);
        if changed {
            tracing::info!(component = %name, hash = %published.hash, "component published to the store");
        } else if self.refused.contains(name) {
            // Back to the bytes the store publishes: no host applies anything, so the refusal
            // this publisher recorded is cleared here.
            self.store.record_refusal(name, None).await?;
        }
        self.refused.remove(name);
        Ok(Outcome::Unchanged)
    }

    async fn withdraw(&mut self, name: &str) -> Outcome {
        self.seen.remove(name);
        match self.store.unpublish(name, Some(&self.source)).await {
            Ok(true) => {
                tracing::info!(component = %name, "component withdrawn from the store: every host stops it, its data stays");
                Outcome::Unchanged
            }
            Ok(false) => Outcome::Unchanged,
            Err(error) => {
                tracing::warn!(component = %name, %error, "cannot withdraw the component");
                self.retry.push(self.dir.join(name));
                Outcome::Unchanged
            }
        }
    }
}
