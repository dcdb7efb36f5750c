//! The supervisor: owns the projector tasks and keeps them matching, per projection, the
//! deployed code and the generations in the store (see [`super::plan`] for the rules).
//!
//! It is level-triggered: [`Supervisor::reconcile`] reads a projection's generations, plans, and
//! then starts, stops or restarts projectors until what runs matches the plan. Deploys,
//! removals, cut-overs (a building generation activating itself) and operator commands run from
//! another process (`refold rebuild`, `refold rollback`, pause and resume: a paused projection runs nothing) all end in the same call, so there is
//! one code path for every change. A restart with new code stops the old projector at a batch
//! boundary and waits for it before the new one reads its checkpoint, so no event is skipped or
//! handled twice across a swap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{Code, Deployed, Refused, plan};
use super::upcast::{Chain, Upcasted, Upcaster, behind_recorded};
use super::{DropReason, Handler, Projector, ProjectorPorts, ProjectorState, ProjectorStatus};
use crate::domain::{FailurePolicy, Generation, GenerationState, Position};
use crate::store::{Components, Generations, Leases, OperatorState, Store, StoreError};

/// Why deployed code does not run.
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
    /// An operator rolled back from this very code.
    #[error(
        "{projection}: this code was rolled back (generation {generation}); deploy different code to roll forward"
    )]
    RolledBack {
        /// Projection.
        projection: String,
        /// The generation rolled back from.
        generation: u32,
    },
}

/// Loads the code recorded for a generation, by hash, when it is not the deployed file's (an
/// active generation that keeps serving while a new version builds, or after a rollback).
/// Keeps the supervisor free of wasmtime.
pub trait CodeSource: Send + Sync {
    /// The handler for this code hash; an error says why it cannot be had. May block.
    fn load(&self, code_hash: &str) -> Result<Arc<dyn Handler>, String>;

    /// The upcaster with this code hash; an error says why it cannot be had. May block.
    fn load_upcaster(&self, code_hash: &str) -> Result<Arc<dyn Upcaster>, String>;

    /// The code recorded for a generation behind the upcasters recorded for it. May block.
    fn load_generation(&self, generation: &Generation) -> Result<Arc<dyn Handler>, String> {
        let handler = self.load(&generation.code_hash)?;
        let upcasters = generation
            .upcasters
            .iter()
            .map(|hash| self.load_upcaster(hash))
            .collect::<Result<Vec<_>, _>>()?;
        behind_recorded(handler, upcasters, &generation.upcasters)
    }
}

struct Running {
    handler: Arc<dyn Handler>,
    code_hash: String,
    upcasters: Vec<String>,
    stop: watch::Sender<bool>,
    status: watch::Receiver<ProjectorStatus>,
    task: JoinHandle<DropReason>,
}

/// What the store said about one projection when it was last reconciled; a change means
/// something (a cut-over, a rebuild, a rollback, a pause) needs reconciling again.
type Fingerprint = (bool, Vec<(u32, u32, String, Vec<String>, GenerationState)>);

fn fingerprint(paused: bool, generations: &[Generation]) -> Fingerprint {
    (
        paused,
        generations
            .iter()
            .map(|g| {
                let code = (g.code_hash.clone(), g.upcasters.clone());
                (g.number, g.version, code.0, code.1, g.state)
            })
            .collect(),
    )
}

/// What a host runs, as the HTTP API shows it.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// The initial scan of the projections folder is done.
    pub ready: bool,
    /// Deployed code per projection: declared version and code hash.
    pub deployed: BTreeMap<String, (u32, String)>,
    /// Status receivers of the running projectors.
    pub projectors: Vec<watch::Receiver<ProjectorStatus>>,
}

/// The set of running projectors.
pub struct Supervisor {
    generations: Arc<dyn Generations>,
    operator: Arc<dyn OperatorState>,
    /// What each projector is given of the store.
    ports: ProjectorPorts,
    code: Arc<dyn CodeSource>,
    /// Code deployed per projection name.
    deployed: BTreeMap<String, Arc<dyn Handler>>,
    /// Handlers in use, by code hash, so a stored hash that matches loaded code is not loaded
    /// again.
    handlers: HashMap<String, Arc<dyn Handler>>,
    /// The deployed upcasters.
    chain: Chain,
    /// Upcasters recorded for generations and loaded from the code source, by code hash.
    stored_upcasters: HashMap<String, Arc<dyn Upcaster>>,
    running: BTreeMap<(String, u32), Running>,
    seen: BTreeMap<String, Fingerprint>,
    /// Failure policies set by the operator, by projection name (`*` for every projection);
    /// they win over the manifests'.
    failure_policies: BTreeMap<String, FailurePolicy>,
    /// Who runs which generation, when several hosts share the store.
    leases: Arc<dyn Leases>,
    /// Generations this host would run but holds no lease of (another host runs them, or this
    /// host runs its share already), with their code and whether they are building; taken
    /// when free, by [`Self::tend`].
    waiting: BTreeMap<(String, u32), (Arc<dyn Handler>, bool)>,
    /// Most generations this host runs while others share the store (unbounded alone).
    share: usize,
    /// When [`Self::tend`] last renewed the leases.
    tended: Option<Instant>,
    /// The generations this host would run that other live hosts would run too (as of the
    /// last [`Self::tend`]): the ones its share counts.
    elsewhere: BTreeSet<(String, u32)>,
    /// The components the store publishes, when it does.
    components: Arc<dyn Components>,
    /// The deployment revision the deployed code was read at, and whether every component
    /// published then was applied, when the store publishes the deployment
    /// ([`Self::set_deployment_revision`]).
    revision: Option<(u64, bool)>,
}

impl Supervisor {
    /// An empty supervisor over a store.
    pub fn new(store: Arc<dyn Store>, code: Arc<dyn CodeSource>) -> Self {
        Self {
            generations: store.clone(),
            operator: store.clone(),
            ports: ProjectorPorts::of(&store),
            code,
            deployed: BTreeMap::new(),
            handlers: HashMap::new(),
            chain: Chain::default(),
            stored_upcasters: HashMap::new(),
            running: BTreeMap::new(),
            seen: BTreeMap::new(),
            failure_policies: BTreeMap::new(),
            components: store.clone(),
            leases: store,
            waiting: BTreeMap::new(),
            share: usize::MAX,
            tended: None,
            elsewhere: BTreeSet::new(),
            revision: None,
        }
    }

    /// The deployment revision of the store (see [`Components::deployment_revision`]) that
    /// the code deployed from now on was read at, and whether this host applied every
    /// component published then (`settled`: it refused none). Several hosts then decide
    /// alike: a host creates or abandons a generation only when it is settled and the
    /// deployment has not changed since, so one that has not seen a publication yet, or could
    /// not apply one, cannot abandon the generation another host built for it.
    pub fn set_deployment_revision(&mut self, revision: u64, settled: bool) {
        self.revision = Some((revision, settled));
    }

    /// Whether this host may create or abandon generations now (see
    /// [`Self::set_deployment_revision`]).
    async fn deployment_current(&self) -> Result<bool, SupervisorError> {
        Ok(match self.revision {
            None => true,
            Some((_, false)) => false,
            Some((revision, true)) => self.components.deployment_revision().await? == revision,
        })
    }

    /// Failure policies that win over the manifests', by projection name (`*` for every
    /// projection). Applies to projectors started from now on.
    pub fn set_failure_policies(&mut self, policies: BTreeMap<String, FailurePolicy>) {
        self.failure_policies = policies;
    }

    fn failure_policy(&self, manifest: &crate::domain::Manifest) -> FailurePolicy {
        self.failure_policies
            .get(&manifest.name)
            .or_else(|| self.failure_policies.get("*"))
            .copied()
            .or(manifest.failure_policy)
            .unwrap_or_default()
    }

    /// Deploy code for a projection (new, or replacing what was deployed under its name) and
    /// reconcile. An error says why the code does not run; what ran before keeps running.
    pub async fn deploy(&mut self, handler: Arc<dyn Handler>) -> Result<(), SupervisorError> {
        let name = handler.manifest().name.clone();
        self.handlers
            .insert(handler.code_hash().to_owned(), Arc::clone(&handler));
        self.deployed.insert(name.clone(), handler);
        self.reconcile(&name).await
    }

    /// Put these upcasters in front of the deployed projections, and reconcile each of them:
    /// a projection whose upcasters change builds a new generation beside the active one.
    /// Returns each projection reconciled, with its outcome.
    pub async fn set_upcasters(
        &mut self,
        chain: Chain,
    ) -> Vec<(String, Result<(), SupervisorError>)> {
        self.chain = chain;
        let names: Vec<String> = self.deployed.keys().cloned().collect();
        let mut outcomes = Vec::new();
        for name in names {
            let outcome = self.reconcile(&name).await;
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// The deployed upcasters.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Withdraw a projection's code: its projectors stop; its data stays.
    pub async fn undeploy(&mut self, name: &str) -> Result<(), SupervisorError> {
        self.deployed.remove(name);
        self.reconcile(name).await
    }

    /// The names of the deployed projections.
    pub fn deployed(&self) -> impl Iterator<Item = &str> {
        self.deployed.keys().map(String::as_str)
    }

    /// Bring one projection's projectors in line with its deployed code and its generations.
    /// After a store failure the next [`Self::sync`] tries again.
    pub async fn reconcile(&mut self, name: &str) -> Result<(), SupervisorError> {
        let outcome = self.reconcile_once(name).await;
        if let Err(SupervisorError::Store(_)) = outcome {
            self.seen.remove(name);
        }
        outcome
    }

    async fn reconcile_once(&mut self, name: &str) -> Result<(), SupervisorError> {
        let paused = self.operator.paused().await?.contains(name);
        let generations = self.generations.generations(name).await?;
        let deployed = self
            .deployed
            .get(name)
            .map(|h| Upcasted::wrap(Arc::clone(h), &self.chain));
        let plan = plan(
            &generations,
            deployed.as_ref().map(|h| Deployed {
                version: h.manifest().version,
                hash: h.code_hash(),
                upcasters: h.upcasters(),
            }),
        );
        let mut plan = plan;
        // Generations are created and abandoned only by a host whose view of the deployment is
        // current; this one runs what exists and plans again at the next sync.
        let replan =
            (plan.create || !plan.abandon.is_empty()) && !self.deployment_current().await?;
        if replan {
            tracing::debug!(projection = %name, "the deployment changed since this host read it, or it could not apply part of it: planning again");
            plan.create = false;
            plan.abandon.clear();
        }
        for number in &plan.abandon {
            if let Some(g) = generations.iter().find(|g| g.number == *number) {
                tracing::info!(projection = %name, generation = number, "abandoning a building generation: different code was deployed");
                let abandoned = self
                    .generations
                    .set_state(g, GenerationState::Abandoned)
                    .await?;
                if !abandoned {
                    // It left building meanwhile (it caught up and took over): this plan was
                    // made from an older view. The next sync plans again from the store.
                    tracing::info!(projection = %name, generation = number, "the generation left building before it could be abandoned; planning again");
                    return Ok(());
                }
            }
        }
        let mut wanted: BTreeMap<u32, Arc<dyn Handler>> = BTreeMap::new();
        for (number, code) in &plan.run {
            let handler = match (code, &deployed) {
                (Code::Deployed, Some(handler)) => Some(Arc::clone(handler)),
                _ => match generations.iter().find(|g| g.number == *number) {
                    Some(g) => self.stored_code(g).await,
                    None => None,
                },
            };
            if let Some(handler) = handler {
                wanted.insert(*number, handler);
            }
        }
        if let (true, Some(handler)) = (plan.create, &deployed) {
            let generation = self
                .generations
                .create_generation(
                    handler.manifest(),
                    handler.code_hash(),
                    handler.upcasters(),
                    Some(generations.iter().map(|g| g.number).max().unwrap_or(0)),
                )
                .await?;
            tracing::info!(projection = %name, generation = generation.number, version = generation.version, "new generation: building from the origin");
            wanted.insert(generation.number, Arc::clone(handler));
        }
        if paused {
            tracing::info!(projection = %name, "paused: its projectors stop; reads keep being served");
            wanted.clear();
        }
        self.converge(name, wanted).await?;
        // What this pass acted on, not what the store holds now: any change since (this pass's
        // own, or a generation that activated meanwhile) makes the next sync reconcile again.
        if replan {
            self.seen.remove(name);
        } else {
            self.seen
                .insert(name.to_owned(), fingerprint(paused, &generations));
        }
        self.forget_unused_handlers();
        match plan.refused {
            None => Ok(()),
            Some(Refused::LowerVersion { declared, active }) => {
                Err(SupervisorError::LowerVersion {
                    projection: name.to_owned(),
                    declared,
                    active,
                })
            }
            Some(Refused::RolledBack { generation }) => Err(SupervisorError::RolledBack {
                projection: name.to_owned(),
                generation,
            }),
        }
    }

    /// Reconcile every projection whose generations changed in the store since it was last
    /// reconciled (a cut-over, or a rebuild or rollback from another process). Returns each
    /// projection reconciled, with its outcome.
    pub async fn sync(&mut self) -> Result<Vec<(String, Result<(), SupervisorError>)>, StoreError> {
        let paused = self.operator.paused().await?;
        let mut by_projection: BTreeMap<String, Vec<Generation>> = BTreeMap::new();
        for generation in self.generations.all_generations().await? {
            by_projection
                .entry(generation.projection.clone())
                .or_default()
                .push(generation);
        }
        let names: BTreeSet<String> = self
            .deployed
            .keys()
            .chain(self.running.keys().map(|(name, _)| name))
            .cloned()
            .collect();
        let mut outcomes = Vec::new();
        for name in names {
            let current = fingerprint(
                paused.contains(&name),
                by_projection.get(&name).map_or(&[][..], Vec::as_slice),
            );
            if self.seen.get(&name) != Some(&current) {
                let outcome = self.reconcile(&name).await;
                outcomes.push((name, outcome));
            }
        }
        Ok(outcomes)
    }

    /// Code recorded for a generation, behind the upcasters recorded for it: in use already,
    /// or loaded from the code source.
    async fn stored_code(&mut self, generation: &Generation) -> Option<Arc<dyn Handler>> {
        match self.load_stored(generation).await {
            Ok(handler) => Some(handler),
            Err(error) => {
                tracing::warn!(projection = %generation.projection, generation = generation.number, %error, "the generation's code is not available: it keeps serving reads but does not follow new events");
                None
            }
        }
    }

    async fn load_stored(&mut self, generation: &Generation) -> Result<Arc<dyn Handler>, String> {
        let handler = match self.handlers.get(&generation.code_hash) {
            Some(handler) => Arc::clone(handler),
            None => {
                let code = Arc::clone(&self.code);
                let hash = generation.code_hash.clone();
                let handler = tokio::task::spawn_blocking(move || code.load(&hash))
                    .await
                    .unwrap_or_else(|e| Err(format!("loading task failed: {e}")))?;
                self.handlers
                    .insert(generation.code_hash.clone(), Arc::clone(&handler));
                handler
            }
        };
        if generation.upcasters.is_empty() {
            return Ok(handler);
        }
        let mut upcasters = Vec::new();
        for hash in &generation.upcasters {
            upcasters.push(self.stored_upcaster(hash).await?);
        }
        behind_recorded(handler, upcasters, &generation.upcasters)
    }

    /// A recorded upcaster: deployed, loaded before, or loaded from the code source now.
    async fn stored_upcaster(&mut self, hash: &str) -> Result<Arc<dyn Upcaster>, String> {
        if let Some(upcaster) = self
            .chain
            .upcasters()
            .iter()
            .find(|u| u.code_hash() == hash)
            .or_else(|| self.stored_upcasters.get(hash))
        {
            return Ok(Arc::clone(upcaster));
        }
        let code = Arc::clone(&self.code);
        let owned = hash.to_owned();
        let upcaster = tokio::task::spawn_blocking(move || code.load_upcaster(&owned))
            .await
            .unwrap_or_else(|e| Err(format!("loading task failed: {e}")))?;
        self.stored_upcasters
            .insert(hash.to_owned(), Arc::clone(&upcaster));
        Ok(upcaster)
    }

    /// Stop what should not run (or runs other code), then start what is missing, each from
    /// the checkpoint in the store.
    async fn converge(
        &mut self,
        name: &str,
        wanted: BTreeMap<u32, Arc<dyn Handler>>,
    ) -> Result<(), SupervisorError> {
        let stale: Vec<(String, u32)> = self
            .running
            .iter()
            .filter(|((n, number), running)| {
                n == name
                    && wanted.get(number).is_none_or(|h| {
                        h.code_hash() != running.code_hash || h.upcasters() != running.upcasters
                    })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(running) = self.running.remove(&key) {
                let _ = running.stop.send(true);
                let reason = running.task.await;
                tracing::info!(projection = %key.0, generation = key.1, reason = ?reason.ok(), "projector stopped");
                // Kept for the code that replaces it here; else another host may take it now.
                if !wanted.contains_key(&key.1)
                    && let Err(error) = self.leases.release_lease(&key.0, key.1).await
                {
                    tracing::warn!(projection = %key.0, generation = key.1, %error, "cannot give the lease up; it expires by itself");
                }
            }
        }
        self.waiting
            .retain(|(n, number), _| n != name || wanted.contains_key(number));
        let generations = self.generations.generations(name).await?;
        for (number, handler) in wanted {
            let key = (name.to_owned(), number);
            if self.running.contains_key(&key) {
                continue;
            }
            let Some(generation) = generations.iter().find(|g| g.number == number) else {
                continue;
            };
            let Some(fresh) = self.claim(generation).await? else {
                let building = generation.state == GenerationState::Building;
                self.waiting.insert(key, (handler, building));
                continue;
            };
            self.waiting.remove(&key);
            self.start(fresh, handler).await?;
        }
        Ok(())
    }

    /// Take a generation's lease, when hosts share the store: always when no other live host
    /// would run it, else within this host's share. The generation as stored once the lease is
    /// taken (the previous owner's last commit may have moved its checkpoint since it was
    /// read); `None` when not taken.
    async fn claim(&self, generation: &Generation) -> Result<Option<Generation>, StoreError> {
        let Some(lease_time) = self.leases.lease_time() else {
            return Ok(Some(generation.clone()));
        };
        let key = (generation.projection.clone(), generation.number);
        if self.elsewhere.contains(&key) && self.running_shared() >= self.share {
            return Ok(None);
        }
        // A takeover waits on the lease's document while a transaction of its previous owner
        // still holds it (an owner killed mid-commit: mongod ends that transaction after 60 s,
        // SecantusDB only when another one comes). It is given up after a lease time and tried
        // again at the next look at the leases, so that one generation never holds up the
        // deploy or the takeover of the others.
        match tokio::time::timeout(lease_time, self.leases.take_lease(generation)).await {
            Ok(taken) => {
                if !taken? {
                    return Ok(None);
                }
            }
            Err(_) => {
                tracing::warn!(
                    projection = %generation.projection,
                    generation = generation.number,
                    "the lease did not answer within a lease time (a transaction of its previous owner may still hold it); trying again later"
                );
                return Ok(None);
            }
        }
        let fresh = self
            .generations
            .generations(&generation.projection)
            .await?
            .into_iter()
            .find(|g| g.number == generation.number);
        if fresh.is_none() {
            self.leases
                .release_lease(&generation.projection, generation.number)
                .await?;
        }
        Ok(fresh)
    }

    /// How many of the generations this host runs other live hosts would run too.
    fn running_shared(&self) -> usize {
        self.running
            .keys()
            .filter(|key| self.elsewhere.contains(*key))
            .count()
    }

    /// On a store several hosts share (else nothing): record what this host would run, stop
    /// the projectors whose lease another host took over, give up leases it holds without a
    /// projector, and take or give up leases so that the live hosts that would run the same
    /// generations run an even share of them (building ones given up first, active ones taken
    /// first); a generation no other host would run is always taken. Works at most three times
    /// per lease time.
    pub async fn tend(&mut self) -> Result<(), StoreError> {
        let Some(lease) = self.leases.lease_time() else {
            return Ok(());
        };
        if self.tended.is_some_and(|at| at.elapsed() < lease / 3) {
            return Ok(());
        }
        self.tended = Some(Instant::now());
        let wants: Vec<(String, u32)> = self
            .running
            .keys()
            .chain(self.waiting.keys())
            .cloned()
            .collect();
        let mut lost: BTreeSet<(String, u32)> = self
            .leases
            .renew_leases(&wants)
            .await?
            .into_iter()
            .collect();
        // A projector whose commit met another host's lease stopped on its own.
        lost.extend(
            self.running
                .iter()
                .filter(|(_, r)| {
                    r.task.is_finished() && {
                        let status = r.status.borrow();
                        status.state == ProjectorState::Stopped && status.error.is_none()
                    }
                })
                .map(|(key, _)| key.clone()),
        );
        for key in lost {
            tracing::warn!(projection = %key.0, generation = key.1, "lease lost: another host runs this generation now");
            self.set_aside(&key, true).await;
        }
        for (projection, number) in self.leases.held_leases() {
            if !self.running.contains_key(&(projection.clone(), number)) {
                self.leases.release_lease(&projection, number).await?;
            }
        }
        let hosts = self.leases.live_hosts().await?;
        self.elsewhere = hosts
            .iter()
            .filter(|h| !h.this)
            .flat_map(|h| h.wants.iter().cloned())
            .filter(|key| wants.contains(key))
            .collect();
        let peers = 1 + hosts
            .iter()
            .filter(|h| !h.this && h.wants.iter().any(|w| wants.contains(w)))
            .count();
        self.share = self.elsewhere.len().div_ceil(peers).max(1);
        // Over the share (a host joined): give up building generations first.
        while self.running_shared() > self.share {
            let building =
                |r: &Running| r.status.borrow().generation_state == GenerationState::Building;
            let shared = |key: &(String, u32)| self.elsewhere.contains(key);
            let Some(key) = self
                .running
                .iter()
                .filter(|(key, _)| shared(key))
                .rfind(|(_, r)| building(r))
                .or_else(|| self.running.iter().rfind(|(key, _)| shared(key)))
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            tracing::info!(projection = %key.0, generation = key.1, share = self.share, peers, "giving the generation up to even out the hosts' shares");
            self.set_aside(&key, true).await;
        }
        // Free generations (a host left): active ones first.
        let mut free: Vec<((String, u32), bool)> = self
            .waiting
            .iter()
            .map(|(key, (_, building))| (key.clone(), *building))
            .collect();
        free.sort_by_key(|(key, building)| (*building, key.clone()));
        for (key, _) in free {
            let Some(generation) = self
                .generations
                .generations(&key.0)
                .await?
                .into_iter()
                .find(|g| g.number == key.1)
                .filter(|g| matches!(g.state, GenerationState::Active | GenerationState::Building))
            else {
                // Retired, abandoned or rolled back meanwhile: the next reconcile decides.
                self.waiting.remove(&key);
                continue;
            };
            let Some(fresh) = self.claim(&generation).await? else {
                continue;
            };
            let Some((handler, building)) = self.waiting.remove(&key) else {
                continue;
            };
            tracing::info!(projection = %key.0, generation = key.1, "lease taken: running the generation from its checkpoint");
            if let Err(error) = self.start(fresh, Arc::clone(&handler)).await {
                tracing::warn!(projection = %key.0, generation = key.1, %error, "cannot start the projector; trying again");
                self.waiting.insert(key.clone(), (handler, building));
                self.leases.release_lease(&key.0, key.1).await?;
            }
        }
        Ok(())
    }

    /// Stop a generation's projector and keep its code waiting for the lease; `release` gives
    /// the lease up, so another host may take it at once.
    async fn set_aside(&mut self, key: &(String, u32), release: bool) {
        let Some(running) = self.running.remove(key) else {
            return;
        };
        let _ = running.stop.send(true);
        let building = running.status.borrow().generation_state == GenerationState::Building;
        let _ = running.task.await;
        if release && let Err(error) = self.leases.release_lease(&key.0, key.1).await {
            tracing::warn!(projection = %key.0, generation = key.1, %error, "cannot give the lease up; it expires by itself");
        }
        self.waiting
            .insert(key.clone(), (running.handler, building));
    }

    async fn start(
        &mut self,
        mut generation: Generation,
        handler: Arc<dyn Handler>,
    ) -> Result<(), SupervisorError> {
        let manifest = handler.manifest();
        if generation.code_hash != handler.code_hash() {
            self.generations
                .set_code(&generation, handler.code_hash())
                .await?;
            tracing::info!(projection = %manifest.name, generation = generation.number, "new code for the same version: swapped in place, continuing from the checkpoint");
            generation.code_hash = handler.code_hash().to_owned();
        }
        generation.collections = manifest.collection_names();
        self.generations
            .prepare_collections(&generation, manifest)
            .await?;
        let (stop, stopped) = watch::channel(false);
        let (projector, status) = Projector::new(
            self.ports.clone(),
            Arc::clone(&handler),
            generation.clone(),
            stopped,
        );
        let projector = projector.with_failure_policy(self.failure_policy(manifest));
        tracing::info!(
            projection = %manifest.name,
            version = manifest.version,
            generation = generation.number,
            checkpoint = generation.checkpoint,
            state = generation.state.as_str(),
            "starting projector"
        );
        let task = tokio::spawn(projector.run());
        self.running.insert(
            (generation.projection.clone(), generation.number),
            Running {
                handler: Arc::clone(&handler),
                code_hash: generation.code_hash,
                upcasters: handler.upcasters().to_vec(),
                stop,
                status,
                task,
            },
        );
        Ok(())
    }

    fn forget_unused_handlers(&mut self) {
        let in_use: BTreeSet<&str> = self
            .running
            .values()
            .map(|r| r.code_hash.as_str())
            .chain(self.deployed.values().map(|h| h.code_hash()))
            .collect();
        self.handlers
            .retain(|hash, _| in_use.contains(hash.as_str()));
        let upcasters_in_use: BTreeSet<&str> = self
            .running
            .values()
            .flat_map(|r| r.upcasters.iter().map(String::as_str))
            .collect();
        self.stored_upcasters
            .retain(|hash, _| upcasters_in_use.contains(hash.as_str()));
    }

    /// The latest status of every projector.
    pub fn statuses(&self) -> Vec<ProjectorStatus> {
        self.running
            .values()
            .map(|r| r.status.borrow().clone())
            .collect()
    }

    /// What runs now (deployed code and projectors), marked ready.
    pub fn view(&self) -> HostView {
        HostView {
            ready: true,
            deployed: self
                .deployed
                .iter()
                .map(|(name, h)| {
                    (
                        name.clone(),
                        (h.manifest().version, h.code_hash().to_owned()),
                    )
                })
                .collect(),
            projectors: self.status_receivers(),
        }
    }

    /// Status receivers, for progress displays.
    pub fn status_receivers(&self) -> Vec<watch::Receiver<ProjectorStatus>> {
        self.running.values().map(|r| r.status.clone()).collect()
    }

    /// Whether every projector has folded in everything up to `position` and is following live
    /// (or has stopped), with no generation still building.
    /// A generation waiting for its lease (another host holds it) is not caught up here.
    pub fn caught_up(&self, position: Position) -> bool {
        self.waiting.is_empty()
            && self.running.values().all(|r| {
                let s = r.status.borrow();
                s.state == ProjectorState::Stopped
                    || (s.state == ProjectorState::Live
                        && s.checkpoint >= position
                        && s.generation_state == GenerationState::Active)
            })
    }

    /// Wait until every projector has folded in everything up to `position` and is following
    /// live, or has stopped.
    pub async fn wait_for(&self, position: Position) {
        self.wait_for_some(position, |_| true).await;
    }

    /// Like [`Self::wait_for`], for the projectors of active generations only (what readers
    /// see), not for generations still building beside them.
    pub async fn wait_for_serving(&self, position: Position) {
        self.wait_for_some(position, |s| s.generation_state == GenerationState::Active)
            .await;
    }

    async fn wait_for_some(&self, position: Position, which: fn(&ProjectorStatus) -> bool) {
        for running in self.running.values() {
            if !which(&running.status.borrow()) {
                continue;
            }
            let mut status = running.status.clone();
            let _ = status
                .wait_for(|s| {
                    s.state == ProjectorState::Stopped
                        || (s.state == ProjectorState::Live && s.checkpoint >= position)
                })
                .await;
        }
    }

    /// Stop every projector at its next batch boundary and wait for them.
    /// Their leases are given up, so other hosts take the generations over at once.
    pub async fn shutdown(self) -> Vec<(String, DropReason)> {
        for running in self.running.values() {
            let _ = running.stop.send(true);
        }
        let mut reasons = Vec::new();
        for ((name, number), running) in self.running {
            let reason = running
                .task
                .await
                .unwrap_or_else(|e| DropReason::Store(format!("projector task failed: {e}")));
            if let Err(error) = self.leases.release_lease(&name, number).await {
                tracing::warn!(projection = %name, generation = number, %error, "cannot give the lease up; it expires by itself");
            }
            reasons.push((name, reason));
        }
        if let Err(error) = self.leases.leave().await {
            tracing::warn!(%error, "cannot withdraw this host's presence; it expires by itself");
        }
        reasons
    }
}
