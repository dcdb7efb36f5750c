//! Hot deploy: the projections folder is the deployment; on a store several hosts serve
//! (MongoDB), the components published to the store are (see [`publish`]).
//!
//! Every `*.wasm` file under the folder (recursively; names starting with `.` are ignored, so
//! editors' and copy tools' temporary files are not loaded) is a projection or an upcaster (a
//! component of the `upcaster` world, see `projector::upcast`). A file is read,
//! hashed, compiled and validated (imports, exports, manifest) before anything changes; a file
//! that fails any step is refused, with the reason recorded in the store for `refold status`,
//! and whatever ran before keeps running. A file whose bytes did not change is not loaded again.
//! Removing a file stops its projection; its data stays.
//!
//! A projection name belongs to the first file that deployed it; another file declaring the
//! same name is refused until the first one is removed. Upcasters are applied before
//! projections, so a host starting on a folder builds each projection behind its upcasters
//! from the first event; an upcaster that would take an event type another one takes is
//! refused. Adding, changing or removing an upcaster rebuilds the projections it reaches into
//! new generations, beside the active ones.
//!
//! On a store that keeps components ([`crate::store::Components`]), each host's folder
//! publishes its files to the store ([`FolderPublisher`]) and every host deploys what the store
//! publishes ([`Deployer::follow_store`]), under the same rules: a component is named by its
//! file's path under the folder that published it, or by the name `refold deploy` gave it.

mod follow;
mod publish;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use follow::fetch;
pub use publish::{FolderPublisher, deploy_source};
pub use watch::{Changes, FolderWatcher};

use crate::engine::{Engine, Loaded, code_hash};
use crate::projector::{Chain, CodeSource, Handler, Supervisor, Upcaster};
use crate::store::Store;

/// Why a folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The folder does not exist or is not a folder.
    #[error("projections folder {0} does not exist or is not a folder")]
    NoFolder(PathBuf),
    /// Listing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What applying one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Same bytes as already applied (or already refused): nothing to do.
    Unchanged,
    /// Deployed: the projection runs this code (or builds a generation with it).
    Deployed {
        /// Projection name.
        projection: String,
    },
    /// Deployed: the upcaster stands in front of the projections it reaches.
    DeployedUpcaster {
        /// Upcaster name.
        upcaster: String,
    },
    /// Refused; what ran before keeps running.
    Refused {
        /// Why.
        error: String,
    },
    /// The file is gone; its projection stopped.
    Removed {
        /// Projection name, if the file had deployed one.
        projection: Option<String>,
    },
    /// The file is gone; its upcaster left the chain.
    RemovedUpcaster {
        /// Upcaster name.
        upcaster: String,
    },
}

/// A component's content, as its source has it now.
#[derive(Debug)]
pub enum Content {
    /// Its bytes.
    Bytes(Vec<u8>),
    /// It is gone (the file was removed, the component withdrawn).
    Gone,
    /// It cannot be read: why.
    Unreadable(String),
}

/// Loads generations' code from the engine's code cache.
pub struct CachedCode(pub Arc<Engine>);

impl CodeSource for CachedCode {
    fn load(&self, code_hash: &str) -> Result<Arc<dyn Handler>, String> {
        self.0
            .load_cached(code_hash)
            .map(|p| Arc::new(p) as Arc<dyn Handler>)
            .map_err(|e| e.to_string())
    }

    fn load_upcaster(&self, code_hash: &str) -> Result<Arc<dyn Upcaster>, String> {
        self.0
            .load_cached_upcaster(code_hash)
            .map(|u| Arc::new(u) as Arc<dyn Upcaster>)
            .map_err(|e| e.to_string())
    }
}

/// What is known about one component.
struct FileState {
    /// Hash of the bytes last applied (deployed or refused).
    hash: String,
    /// The projection it deployed, if any.
    projection: Option<String>,
    /// The upcaster it deployed, if any.
    upcaster: Option<Arc<dyn Upcaster>>,
    /// Whether those bytes loaded (and went to the supervisor, which may still refuse them):
    /// only then does a later reconcile decide whether the file is refused.
    loaded: bool,
}

/// Applies the files of a projections folder to a supervisor.
pub struct Deployer {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    dir: PathBuf,
    /// By component name.
    files: BTreeMap<String, FileState>,
    /// Code hashes of generations already looked for in the store ([`Self::follow_store`]).
    fetched: std::collections::BTreeSet<String>,
    /// The deployment revision last applied ([`Self::follow_store`]).
    revision: Option<u64>,
    /// Components whose current content this host could not read or load (where another host
    /// may have): while any is, this host does not take part in deciding generations.
    failed_here: std::collections::BTreeSet<String>,
    /// The projectors.
    pub supervisor: Supervisor,
}

/// The `.wasm` files under a folder, recursively, sorted; hidden names are skipped.
pub fn components_in(dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    if !dir.is_dir() {
        return Err(DeployError::NoFolder(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| DeployError::Io {
            path: folder.clone(),
            source,
        })?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if is_component(&path) && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a path names a component file (by its name only).
pub fn is_component(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

/// Compile and check a component, off the async threads.
async fn load_off_thread(engine: &Arc<Engine>, bytes: Vec<u8>) -> Result<Loaded, String> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || engine.load_any(&bytes))
        .await
        .map_err(|e| format!("loading task failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()))
}

impl Deployer {
    /// A deployer for a folder, with an empty supervisor.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, dir: &Path) -> Self {
        let code = Arc::new(CachedCode(Arc::clone(&engine)));
        Self {
            engine,
            supervisor: Supervisor::new(Arc::clone(&store), code),
            store,
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            fetched: Default::default(),
            revision: None,
            failed_here: Default::default(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Apply every file of the folder, and the removal of files applied before that are gone.
    pub async fn scan(&mut self) -> Result<Vec<(String, Outcome)>, DeployError> {
        let mut paths = components_in(&self.dir)?;
        paths.extend(
            self.files
                .keys()
                .map(|name| self.dir.join(name))
                .filter(|p| !p.is_file())
                .collect::<Vec<_>>(),
        );
        Ok(self.apply_all(paths).await)
    }

    /// Apply changed files of the folder.
    pub async fn apply_all(&mut self, paths: Vec<PathBuf>) -> Vec<(String, Outcome)> {
        let items = paths
            .into_iter()
            .map(|path| {
                let content = match std::fs::read(&path) {
                    Ok(bytes) => Content::Bytes(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Content::Gone,
                    Err(e) => Content::Unreadable(format!("cannot read the file: {e}")),
                };
                (self.component_name(&path), content)
            })
            .collect();
        self.apply_named(items).await
    }

    /// Apply changed components: removals first (so a projection moved to another component is
    /// free to be claimed), then the upcasters, then the projections, each in name order. The
    /// upcasters of the whole batch change the chain at once, so the projections rebuild once
    /// for the batch.
    pub async fn apply_named(
        &mut self,
        mut items: Vec<(String, Content)>,
    ) -> Vec<(String, Outcome)> {
        items.sort_by(|(a, x), (b, y)| {
            (!matches!(x, Content::Gone), a).cmp(&(!matches!(y, Content::Gone), b))
        });
        items.dedup_by(|(a, _), (b, _)| a == b);
        let mut loaded = Vec::new();
        let mut outcomes = Vec::new();
        for (path, content) in items {
            self.failed_here.remove(&path);
            let outcome = match content {
                Content::Gone => self.remove(&path).await,
                Content::Unreadable(error) => {
                    self.failed_here.insert(path.clone());
                    self.refused(&path, None, error)
                }
                Content::Bytes(bytes) => {
                    let hash = code_hash(&bytes);
                    if self.files.get(&path).is_some_and(|s| s.hash == hash) {
                        continue;
                    }
                    match self.load(bytes).await {
                        Ok(component) => {
                            loaded.push((path, hash, component));
                            continue;
                        }
                        Err(error) => {
                            self.failed_here.insert(path.clone());
                            self.refused(&path, Some(hash), error)
                        }
                    }
                }
            };
            outcomes.push((path, outcome));
        }
        let mut upcasters = Vec::new();
        let mut projections = Vec::new();
        for (path, hash, component) in loaded {
            match component {
                Loaded::Upcaster(upcaster) => {
                    upcasters.push((path, hash, Arc::new(upcaster) as Arc<dyn Upcaster>));
                }
                Loaded::Projection(projection) => {
                    // Refused before anything changes, an upcaster its file held included.
                    match self.claimed_elsewhere(&path, &projection.manifest().name) {
                        Some(error) => {
                            let outcome = self.refused(&path, Some(hash), error);
                            outcomes.push((path, outcome));
                        }
                        None => projections.push((path, hash, projection)),
                    }
                }
            }
        }
        self.change_upcasters(upcasters, &projections, &mut outcomes)
            .await;
        for (path, hash, projection) in projections {
            let outcome = self.deploy(&path, hash, projection).await;
            outcomes.push((path, outcome));
        }
        for (path, outcome) in &outcomes {
            self.record(path, outcome).await;
        }
        outcomes
    }

    /// The refusal of a projection named `name` in component `path` when another component
    /// deployed that name.
    fn claimed_elsewhere(&self, path: &str, name: &str) -> Option<String> {
        self.files
            .iter()
            .find(|(p, s)| p.as_str() != path && s.projection.as_deref() == Some(name))
            .map(|(other, _)| format!("projection `{name}` is already deployed from {other}"))
    }

    /// Put the upcasters of this batch (`loaded`, in name order) in front of the projections,
    /// with those already deployed, less those whose files now hold a projection (`replacing`).
    /// An upcaster that would take a type or a name another one holds is refused; the chain
    /// changes at most once.
    async fn change_upcasters(
        &mut self,
        loaded: Vec<(String, String, Arc<dyn Upcaster>)>,
        replacing: &[(String, String, crate::engine::PreparedProjection)],
        outcomes: &mut Vec<(String, Outcome)>,
    ) {
        let mut kept: Vec<Arc<dyn Upcaster>> = self
            .files
            .iter()
            .filter(|(path, _)| {
                !loaded.iter().any(|(p, _, _)| p == *path)
                    && !replacing.iter().any(|(p, _, _)| p == *path)
            })
            .filter_map(|(_, state)| state.upcaster.clone())
            .collect();
        let mut accepted = Vec::new();
        for (path, hash, upcaster) in loaded {
            let mut candidate = kept.clone();
            candidate.push(Arc::clone(&upcaster));
            match Chain::new(candidate) {
                Ok(_) => {
                    kept.push(Arc::clone(&upcaster));
                    accepted.push((path, hash, upcaster));
                }
                Err(error) => {
                    let outcome = self.refused(&path, Some(hash), error.to_string());
                    outcomes.push((path, outcome));
                }
            }
        }
        // A file that held a projection and now holds an upcaster: its projection stops first.
        for (path, _, _) in &accepted {
            if let Some(old) = self.files.get(path).and_then(|s| s.projection.clone())
                && let Err(error) = self.supervisor.undeploy(&old).await
            {
                tracing::warn!(projection = %old, %error, "stopping the projection failed");
            }
        }
        for (path, _, _) in replacing {
            if let Some(state) = self.files.get_mut(path) {
                state.upcaster = None;
            }
        }
        match Chain::new(kept) {
            Ok(chain) if chain.hashes() != self.supervisor.chain().hashes() => {
                let reconciled = self.supervisor.set_upcasters(chain).await;
                if let Err(error) = self.record_reconciled(reconciled).await {
                    tracing::warn!(%error, "cannot record the deploy outcome in the store");
                }
            }
            Ok(_) => {}
            // Each was checked with the others as it was added.
            Err(error) => tracing::error!(%error, "upcasters left unchanged"),
        }
        for (path, hash, upcaster) in accepted {
            let name = upcaster.manifest().name.clone();
            self.files.insert(
                path.clone(),
                FileState {
                    hash,
                    projection: None,
                    upcaster: Some(upcaster),
                    loaded: true,
                },
            );
            outcomes.push((path, Outcome::DeployedUpcaster { upcaster: name }));
        }
    }

    /// A file's component name, as recorded in the store: its path relative to the folder.
    pub fn component_name(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Apply one file's current content (or its absence).
    pub async fn apply(&mut self, path: &Path) -> Outcome {
        self.apply_all(vec![path.to_path_buf()])
            .await
            .pop()
            .map_or(Outcome::Unchanged, |(_, outcome)| outcome)
    }

    /// Compile and check a component, off the async threads.
    async fn load(&self, bytes: Vec<u8>) -> Result<Loaded, String> {
        load_off_thread(&self.engine, bytes).await
    }

    /// Refuse a file's bytes (`hash`, when they could be read): what it deployed before keeps
    /// running.
    fn refused(&mut self, path: &str, hash: Option<String>, error: String) -> Outcome {
        if let Some(hash) = hash {
            let previous = self.files.remove(path);
            self.files.insert(
                path.to_owned(),
                FileState {
                    hash,
                    projection: previous.as_ref().and_then(|s| s.projection.clone()),
                    upcaster: previous.and_then(|s| s.upcaster),
                    loaded: false,
                },
            );
        }
        Outcome::Refused { error }
    }

    /// Log an outcome and record it in the store (a refusal, or its clearing).
    async fn record(&self, component: &str, outcome: &Outcome) {
        let recorded = match outcome {
            Outcome::Unchanged => return,
            Outcome::Refused { error } => {
                tracing::error!(%component, %error, "component refused");
                crate::metrics::global().refused();
                self.store.record_refusal(component, Some(error)).await
            }
            Outcome::Deployed { projection } => {
                tracing::info!(%component, %projection, "component deployed");
                self.store.record_refusal(component, None).await
            }
            Outcome::DeployedUpcaster { upcaster } => {
                tracing::info!(%component, %upcaster, "upcaster deployed");
                self.store.record_refusal(component, None).await
            }
            Outcome::Removed { projection } => {
                tracing::info!(%component, projection = ?projection, "component removed: its projection stops, its data stays");
                self.store.record_refusal(component, None).await
            }
            Outcome::RemovedUpcaster { upcaster } => {
                tracing::info!(%component, %upcaster, "upcaster removed: the projections it reached rebuild without it");
                self.store.record_refusal(component, None).await
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(%component, %error, "cannot record the deploy outcome in the store");
        }
    }

    /// Reconcile projections whose generations changed in the store (cut-overs, and rebuilds
    /// or rollbacks from other processes), recording for each its file's refusal or clearing
    /// it.
    pub async fn sync(&mut self) -> Result<(), crate::store::StoreError> {
        // The leases are tended whatever the reconcile met.
        let reconciled = self.supervisor.sync().await;
        let tended = self.supervisor.tend().await;
        self.record_reconciled(reconciled?).await?;
        tended
    }

    /// Record, for each projection reconciled, its file's refusal, or clear it.
    async fn record_reconciled(
        &self,
        reconciled: Vec<(String, Result<(), crate::projector::SupervisorError>)>,
    ) -> Result<(), crate::store::StoreError> {
        for (projection, outcome) in reconciled {
            // A file whose current bytes did not load keeps its refusal whatever the
            // supervisor says about the code still running.
            let file = self
                .files
                .iter()
                .find(|(_, s)| s.loaded && s.projection.as_deref() == Some(projection.as_str()))
                .map(|(name, _)| name.clone());
            let error = outcome.err().map(|e| e.to_string());
            if let Some(error) = &error {
                tracing::warn!(%projection, %error, "deployed code refused");
            }
            if let Some(file) = file {
                self.store.record_refusal(&file, error.as_deref()).await?;
            }
        }
        Ok(())
    }

    async fn remove(&mut self, path: &str) -> Outcome {
        let Some(state) = self.files.remove(path) else {
            return Outcome::Unchanged;
        };
        if let Some(upcaster) = state.upcaster {
            // It leaves the chain with the batch's other changes (`change_upcasters`).
            return Outcome::RemovedUpcaster {
                upcaster: upcaster.manifest().name.clone(),
            };
        }
        if let Some(name) = &state.projection
            && let Err(error) = self.supervisor.undeploy(name).await
        {
            tracing::warn!(projection = %name, %error, "stopping the projection failed");
        }
        Outcome::Removed {
            projection: state.projection,
        }
    }

    async fn deploy(
        &mut self,
        path: &str,
        hash: String,
        projection: crate::engine::PreparedProjection,
    ) -> Outcome {
        let held = self.files.get(path).and_then(|s| s.projection.clone());
        let name = projection.manifest().name.clone();
        // Another file of the same batch may have claimed the name since it was checked.
        if let Some(error) = self.claimed_elsewhere(path, &name) {
            return self.refused(path, Some(hash), error);
        }
        // The file now declares another projection: the one it held stops.
        if let Some(old) = held.as_ref().filter(|old| **old != name)
            && let Err(error) = self.supervisor.undeploy(old).await
        {
            tracing::warn!(projection = %old, %error, "stopping the projection failed");
        }
        let deployed = self.supervisor.deploy(Arc::new(projection)).await;
        self.files.insert(
            path.to_owned(),
            FileState {
                hash,
                projection: Some(name.clone()),
                upcaster: None,
                loaded: true,
            },
        );
        match deployed {
            Ok(()) => Outcome::Deployed { projection: name },
            Err(error) => Outcome::Refused {
                error: error.to_string(),
            },
        }
    }
}
