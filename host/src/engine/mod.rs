//! The wasm engine: the only module that names wasmtime.
//!
//! One [`Engine`] per process (one wasmtime engine, one epoch ticker thread). A component is
//! compiled, its imports checked, pre-instantiated and described once, giving a
//! [`PreparedProjection`]. Each call then runs in a fresh store and instance with a memory cap
//! and an epoch deadline, so a guest that loops, allocates without bound or traps fails only its
//! batch. A guest that imports WASI gets it locked down (`sandbox`); one that imports clocks or
//! randomness is called once per event, so what it reads depends on the event alone, and keeps
//! its instance from one call to the next of the calls committed together (`Kept`).

mod bindings;
mod cache;
mod host;
mod limiter;
mod load;
mod sandbox;
mod upcaster;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::Config;
use wasmtime::component::Linker;

pub use cache::{CodeCache, code_hash};
pub use load::{LoadError, Loaded};
pub use upcaster::PreparedUpcaster;

use crate::domain::{Manifest, RecordedEvent};
use crate::projector::{BatchContext, HandleFailure, Handler};
use bindings::ProjectionPre;

/// How often the epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A duration in epoch ticks, at least one.
fn ticks(duration: Duration) -> u64 {
    (duration.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Limits applied to every instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Budget of one `handle` (or `describe`) call: wall-clock time, less the time the host
    /// spends waiting on the store for the guest's reads.
    pub deadline: Duration,
    /// Most table elements per table.
    pub table_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 * 1024 * 1024,
            deadline: Duration::from_secs(10),
            table_elements: 100_000,
        }
    }
}

/// The process's wasm engine.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<host::HostState>>,
    limits: Limits,
    cache: Option<CodeCache>,
    stop_ticker: Arc<AtomicBool>,
}

impl Engine {
    /// Build the engine and start its epoch ticker. With a code cache, compiled code is kept
    /// and reused across loads and restarts.
    pub fn new(limits: Limits, cache: Option<CodeCache>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.clone(), Arc::clone(&stop_ticker));
        std::thread::Builder::new()
            .name("refold-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
            cache,
            stop_ticker,
        })
    }

    /// The limits applied to instances.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compile, check and describe a component. Nothing runs if any step fails.
    pub fn load(self: &Arc<Self>, bytes: &[u8]) -> Result<PreparedProjection, LoadError> {
        load::load(self, bytes)
    }

    /// Compile, check and describe a component, projection or upcaster.
    pub fn load_any(self: &Arc<Self>, bytes: &[u8]) -> Result<Loaded, LoadError> {
        load::load_any(self, bytes)
    }

    /// Load the upcaster with this code hash from the code cache (one recorded for a
    /// generation).
    pub fn load_cached_upcaster(
        self: &Arc<Self>,
        hash: &str,
    ) -> Result<PreparedUpcaster, LoadError> {
        match load::load_any_cached(self, hash)? {
            Loaded::Upcaster(upcaster) => Ok(upcaster),
            Loaded::Projection(projection) => Err(LoadError::Exports(format!(
                "component {hash} is the projection `{}`, not an upcaster",
                projection.manifest().name
            ))),
        }
    }

    /// The component the code cache holds under this hash, checked against it.
    pub fn cached_source(&self, hash: &str) -> Option<Vec<u8>> {
        self.cache.as_ref().and_then(|c| c.source(hash))
    }

    /// Keep a component's bytes in the code cache under their hash (bytes fetched from the
    /// store, for generations whose code this host never loaded from a file).
    pub fn cache_source(&self, bytes: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.store_source(&code_hash(bytes), bytes);
        }
    }

    /// Load the component with this code hash from the code cache (for a generation whose
    /// file is no longer deployed, e.g. the active one while a new version builds).
    pub fn load_cached(self: &Arc<Self>, hash: &str) -> Result<PreparedProjection, LoadError> {
        load::load_cached(self, hash)
    }

    fn new_store(
        &self,
        context: BatchContext,
        manifest_name: Arc<str>,
    ) -> wasmtime::Store<host::HostState> {
        self.store_with(
            host::HostState::new(context, manifest_name),
            self.limits.deadline,
        )
    }

    /// Get a store kept from the batch's last call ready for the next: its deadline and log
    /// count start again, as a new store's would.
    fn next_call(&self, store: &mut wasmtime::Store<host::HostState>) {
        store.data_mut().next_call(self.limits.deadline);
        store.set_epoch_deadline(ticks(self.limits.deadline));
    }

    /// A store around `state` (a fresh limiter), whose guest calls trap after `deadline`.
    fn store_with(
        &self,
        mut state: host::HostState,
        deadline: Duration,
    ) -> wasmtime::Store<host::HostState> {
        state.limiter =
            limiter::GuestLimiter::new(self.limits.memory_bytes, self.limits.table_elements);
        state.clock = host::GuestClock::start(deadline, &state.context);
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // The epoch deadline is a first check; when it passes, the guest's own time decides:
        // the time the host spent waiting on the store for the guest's reads is added back.
        store.set_epoch_deadline(ticks(deadline));
        store.epoch_deadline_callback(|context| {
            let state = context.data();
            let left = state.clock.left(&state.context);
            Ok(if left.is_zero() {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(ticks(left))
            })
        });
        store
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// A loaded, type-checked, described component, ready to instantiate per batch.
pub struct PreparedProjection {
    engine: Arc<Engine>,
    pre: ProjectionPre<host::HostState>,
    manifest: Manifest,
    name: Arc<str>,
    code_hash: String,
    /// It imports clocks or randomness: called once per event, so what it reads depends on the
    /// event alone, not on the batch boundaries.
    per_event: bool,
}

impl std::fmt::Debug for PreparedProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedProjection")
            .field("manifest", &self.manifest)
            .field("code_hash", &self.code_hash)
            .finish()
    }
}

impl PreparedProjection {
    /// Instantiate the component in a fresh store and drop it: what each batch pays before the
    /// guest runs (for the benchmarks).
    pub fn instantiate_once(&self) -> Result<(), HandleFailure> {
        let context = BatchContext::new(&self.manifest, Box::new(load::NoDocuments));
        let mut store = self.engine.new_store(context, Arc::clone(&self.name));
        self.pre
            .instantiate(&mut store)
            .map(drop)
            .map_err(|e| host::classify_trap(&e, &self.engine.limits, &store.data().limiter, None))
    }

    /// Whether the guest is called once per event (it imports clocks or randomness).
    pub fn per_event(&self) -> bool {
        self.per_event
    }

    /// Call the guest once per event, its clocks reading the event's timestamp and its random
    /// streams seeded for the event, so what it reads depends on that event alone, however the
    /// events were batched.
    ///
    /// Language runtimes draw randomness of their own and may keep what they drew for later
    /// (Python reseeds its `random` module when an instance first runs; wasi-libc's
    /// `arc4random` buffers). So a fresh instance first gets a warm-up call with no events under
    /// a seed of the projection's own, the same for every instance; and after an event that
    /// drew randomness, the next event gets a fresh, warmed-up instance.
    ///
    /// `instance` is a warmed-up instance in `store` to start with; the instance the next event
    /// could use is handed back.
    fn handle_each(
        &self,
        events: &[RecordedEvent],
        wit_events: &[host::WitEvent],
        mut store: wasmtime::Store<host::HostState>,
        mut instance: Option<bindings::Projection>,
    ) -> (
        wasmtime::Store<host::HostState>,
        wasmtime::Result<Result<(), host::HandleError>>,
        Option<bindings::Projection>,
    ) {
        for (event, wit_event) in events.iter().zip(wit_events) {
            let current = match instance.take() {
                Some(current) => current,
                None => match self.warmed_up(&mut store) {
                    Ok(fresh) => fresh,
                    Err(error) => return (store, Err(error), None),
                },
            };
            store.data_mut().enter_event(event);
            let outcome = current.call_handle(&mut store, std::slice::from_ref(wit_event));
            store.data_mut().flush_output();
            match outcome {
                Ok(Ok(())) => store.data_mut().context.event_handled(event.position),
                Ok(Err(mut error)) => {
                    error.position.get_or_insert(event.position);
                    return (store, Ok(Err(error)), None);
                }
                Err(error) => return (store, Err(error), None),
            }
            if store.data_mut().sandbox.take_drawn() {
                let state = store.data();
                let left = state.clock.left(&state.context);
                store = self.engine.store_with(store.into_data(), left);
            } else {
                instance = Some(current);
            }
        }
        (store, Ok(Ok(())), instance)
    }

    /// A fresh instance, after its warm-up call (no events, the projection's own seed).
    fn warmed_up(
        &self,
        store: &mut wasmtime::Store<host::HostState>,
    ) -> wasmtime::Result<bindings::Projection> {
        let instance = self.pre.instantiate(&mut *store)?;
        store.data_mut().sandbox.enter_instance();
        if let Err(error) = instance.call_handle(&mut *store, &[])? {
            wasmtime::bail!("the warm-up call (no events) failed: {}", error.message);
        }
        store.data_mut().flush_output();
        store.data_mut().sandbox.take_drawn();
        // What the warm-up logged belongs to no event.
        store.data_mut().context.take_logs();
        Ok(instance)
    }
}

impl Handler for PreparedProjection {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn code_hash(&self) -> &str {
        &self.code_hash
    }

    fn handle(
        &self,
        events: &[RecordedEvent],
        mut context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        if let Some(first) = events.first() {
            context.set_position(first.position);
        }
        // A guest called once per event goes on with the instance the batch's last call left.
        let kept = match self.per_event {
            true => context
                .take_instance()
                .and_then(|kept| kept.downcast::<Kept>().ok())
                .filter(|kept| kept.code_hash == self.code_hash),
            false => None,
        };
        let (mut store, instance) = match kept {
            Some(kept) => {
                let Kept {
                    mut store,
                    instance,
                    ..
                } = *kept;
                store.data_mut().context = context;
                self.engine.next_call(&mut store);
                (store, Some(instance))
            }
            None => (self.engine.new_store(context, Arc::clone(&self.name)), None),
        };
        let wit_events: Vec<_> = events.iter().map(host::to_wit_event).collect();
        // A trace watching a document sees it after each event.
        let (mut store, outcome, instance) = if self.per_event || store.data().context.watches() {
            self.handle_each(events, &wit_events, store, instance)
        } else {
            let outcome = self
                .pre
                .instantiate(&mut store)
                .and_then(|instance| instance.call_handle(&mut store, &wit_events));
            store.data_mut().flush_output();
            (store, outcome, None)
        };
        let result = self.outcome(store.data(), outcome);
        // Kept while its memories leave it the room a fresh instance has: a guest whose memory
        // grows with the events it handles gets a fresh instance rather than the cap.
        let keep = self.per_event && result.is_ok() && store.data().limiter.within_half();
        let context = match instance.filter(|_| keep) {
            Some(instance) => {
                let placeholder = BatchContext::new(&self.manifest, Box::new(load::NoDocuments));
                let mut context = std::mem::replace(&mut store.data_mut().context, placeholder);
                context.keep_instance(Box::new(Kept {
                    store,
                    instance,
                    code_hash: self.code_hash.clone(),
                }));
                context
            }
            None => store.into_data().context,
        };
        (context, result)
    }
}

/// A warmed-up instance of a guest called once per event, and its store, kept in the batch's
/// context for the batch's next call: a fresh instance and warm-up per call of the batch size
/// cost the Python payment example a tenth of its replay time (BENCHMARKS.md). Taken back only
/// by the code it was made from.
struct Kept {
    store: wasmtime::Store<host::HostState>,
    instance: bindings::Projection,
    code_hash: String,
}

impl PreparedProjection {
    /// What a call's outcome means for the batch, from the store's state after it.
    fn outcome(
        &self,
        state: &host::HostState,
        outcome: wasmtime::Result<Result<(), host::HandleError>>,
    ) -> Result<(), HandleFailure> {
        let panic = state.panic.as_deref();
        let result = match outcome {
            Ok(Ok(())) => match state.context.violation() {
                Some((position, failure)) => Err(HandleFailure::Contract {
                    position: *position,
                    failure: failure.clone(),
                }),
                None => Ok(()),
            },
            Ok(Err(error)) => Err(host::guest_failure(error)),
            Err(error) => Err(
                match host::classify_trap(&error, &self.engine.limits, &state.limiter, panic) {
                    HandleFailure::Trap(trap) => match state.stderr_tail.as_deref() {
                        Some(stderr) => {
                            HandleFailure::Trap(format!("{trap}; its stderr ends: {stderr}"))
                        }
                        None => HandleFailure::Trap(trap),
                    },
                    failure => failure,
                },
            ),
        };
        // A store failure during the batch outranks what the guest made of it, even success (it
        // may have taken the failed read for a missing document): it is the host's, and
        // transient. A contract violation outranks the guest's own report.
        match (
            result,
            state.context.store_failure(),
            state.context.violation(),
        ) {
            (_, Some(store), _) => Err(HandleFailure::Host(store.to_owned())),
            (Err(HandleFailure::Guest { .. }), None, Some((position, failure))) => {
                Err(HandleFailure::Contract {
                    position: *position,
                    failure: failure.clone(),
                })
            }
            (result, _, _) => result,
        }
    }
}
