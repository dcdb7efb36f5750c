//! A host's projections folder, published to a store that keeps components (MongoDB), so that
//! every host serving the store runs what any host's folder holds.
//!
//! A folder is named, as the source of its publications, by its host's name and its absolute
//! path (`folder HOST:PATH`), and the store remembers what each source published under each
//! name. When the host starts (and when the folder must be rescanned), each file whose bytes
//! differ from what this folder last published under its name is checked (compiled, imports,
//! exports, manifest) and, if it passes, published; a file that fails is refused on the spot,
//! recorded for `refold status`, and not published, so what ran before keeps running
//! everywhere. A file this folder published before, unchanged since, is not published again, so
//! a restart does not undo a newer publication of the name (by `refold deploy`, or another
//! host's folder). Components this folder published whose files are gone are withdrawn, as long
//! as the store still publishes the bytes this folder published. While the host runs, each
//! change to a file is applied the same way, removals first. The last publication of a name
//! wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DeployError, Outcome, components_in, load_off_thread};
use crate::engine::{Engine, code_hash};
use crate::store::{Store, StoreError};

/// The source `refold deploy` records: `deploy HOST`.
pub fn deploy_source() -> String {
    format!("deploy {}", crate::machine::name())
}

/// Publishes a folder's components to the store.
pub struct FolderPublisher {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    dir: PathBuf,
    /// `folder HOST:PATH`: what this folder's publications record as their source.
    source: String,
    /// By component name: the hash this folder last published.
    published: BTreeMap<String, String>,
    /// By component name: the hash last published or refused from this folder.
    seen: BTreeMap<String, String>,
    /// Names whose file this publisher refused last.
    refused: BTreeSet<String>,
    /// Files whose publication or withdrawal failed on the store, to try again.
    retry: Vec<PathBuf>,
    /// The whole folder must be published again (reading the store failed).
    rescan: bool,
    /// Files refused because another name publishes their projection, tried again every
    /// [`CONFLICT_RETRY`] (that name may be withdrawn meanwhile), and when the last try was.
    conflicts: (BTreeSet<PathBuf>, Option<std::time::Instant>),
    /// The refusal last recorded for each name, so a refusal tried again is recorded once.
    last_refusal: BTreeMap<String, String>,
}

/// How often a file refused because another name publishes its projection is tried again.
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl FolderPublisher {
    /// A publisher of `dir` (absolute, as the folder watcher reports its paths) to `store`,
    /// for the host named `host`.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, dir: &Path, host: &str) -> Self {
        Self {
            engine,
            store,
            source: format!("folder {host}:{}", dir.display()),
            dir: dir.to_path_buf(),
            published: BTreeMap::new(),
            seen: BTreeMap::new(),
            refused: BTreeSet::new(),
            retry: Vec::new(),
            rescan: false,
            conflicts: Default::default(),
            last_refusal: BTreeMap::new(),
        }
    }

    fn name(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Publish every file of the folder that changed since this folder last published it, and
    /// withdraw the components it published whose files are gone.
    pub async fn publish_folder(&mut self) -> Result<Vec<(String, Outcome)>, DeployError> {
        let files = components_in(&self.dir)?;
        self.rescan = false;
        self.published = match self.store.published_by(&self.source).await {
            Ok(published) => published,
            Err(error) => {
                tracing::warn!(%error, "cannot read what this folder published; trying again");
                self.rescan = true;
                return Ok(Vec::new());
            }
        };
        for (name, hash) in &self.published {
            self.seen
                .entry(name.clone())
                .or_insert_with(|| hash.clone());
        }
        let names: BTreeSet<String> = files.iter().map(|p| self.name(p)).collect();
        let mut paths = files;
        paths.extend(
            self.published
                .keys()
                .filter(|name| !names.contains(*name))
                .map(|name| self.dir.join(name)),
        );
        Ok(self.publish(paths).await)
    }

    /// Apply changed files: withdraw the components of removed ones first (so a projection
    /// moved to another file is free when that one is published), then publish the others.
    pub async fn publish(&mut self, mut paths: Vec<PathBuf>) -> Vec<(String, Outcome)> {
        paths.sort_by_key(|p| (p.is_file(), p.clone()));
        paths.dedup();
        let mut outcomes = Vec::new();
        for path in paths {
            let name = self.name(&path);
            let done = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.withdraw(&name).await,
                Err(e) => Ok(Outcome::Refused {
                    error: format!("cannot read the file: {e}"),
                }),
                Ok(bytes) => self.publish_bytes(&name, bytes).await,
            };
            let outcome = match done {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(component = %name, %error, "cannot publish or withdraw the component; trying again");
                    self.retry.push(path);
                    continue;
                }
            };
            if let Outcome::Refused { error } = &outcome {
                if self.last_refusal.get(&name) == Some(error) {
                    continue;
                }
                self.last_refusal.insert(name.clone(), error.clone());
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

    /// Apply again the changes the store failed, or the whole folder if it must, and, now and
    /// then, the files refused because another name published their projection.
    pub async fn publish_failed(&mut self) -> Vec<(String, Outcome)> {
        let (conflicts, tried) = &mut self.conflicts;
        if !conflicts.is_empty() && tried.is_none_or(|at| at.elapsed() >= CONFLICT_RETRY) {
            *tried = Some(std::time::Instant::now());
            self.retry.extend(std::mem::take(conflicts));
        }
        if self.rescan {
            return match self.publish_folder().await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    tracing::error!(%error, "cannot rescan the projections folder");
                    Vec::new()
                }
            };
        }
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
        let declares = match load_off_thread(&self.engine, bytes.clone()).await {
            Ok(loaded) => loaded.declares(),
            Err(error) => return Ok(self.refuse(name, hash, error)),
        };
        let (published, changed) = match self
            .store
            .publish(name, &bytes, &self.source, &declares)
            .await
        {
            Ok(publication) => publication,
            // Another name publishes the same projection: refused as it is, and tried again
            // now and then (that name may be withdrawn).
            Err(StoreError::InvalidInput(error)) => {
                self.refused.insert(name.to_owned());
                self.conflicts.0.insert(self.dir.join(name));
                return Ok(Outcome::Refused { error });
            }
            Err(error) => return Err(error),
        };
        if changed {
            tracing::info!(component = %name, hash = %published.hash, "component published to the store");
        } else if self.refused.contains(name) {
            // Back to the bytes the store publishes: no host applies anything, so the refusal
            // this publisher recorded is cleared here.
            self.store.record_refusal(name, None).await?;
        }
        self.refused.remove(name);
        self.last_refusal.remove(name);
        self.published.insert(name.to_owned(), hash.clone());
        self.seen.insert(name.to_owned(), hash);
        Ok(Outcome::Unchanged)
    }

    fn refuse(&mut self, name: &str, hash: String, error: String) -> Outcome {
        self.seen.insert(name.to_owned(), hash);
        self.refused.insert(name.to_owned());
        Outcome::Refused { error }
    }

    /// Withdraw what this folder published under `name`, if the store still publishes it.
    async fn withdraw(&mut self, name: &str) -> Result<Outcome, StoreError> {
        self.last_refusal.remove(name);
        self.conflicts.0.remove(&self.dir.join(name));
        if self.refused.contains(name) {
            self.store.record_refusal(name, None).await?;
            self.refused.remove(name);
        }
        self.seen.remove(name);
        let Some(hash) = self.published.get(name).cloned() else {
            return Ok(Outcome::Unchanged);
        };
        if self
            .store
            .unpublish(name, Some(&hash), Some(&self.source))
            .await?
        {
            tracing::info!(component = %name, "component withdrawn from the store: every host stops it, its data stays");
        }
        self.published.remove(name);
        Ok(Outcome::Unchanged)
    }
}
