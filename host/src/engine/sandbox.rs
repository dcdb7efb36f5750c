//! Locked-down WASI for guests whose language runtime imports it (Python, JavaScript, Rust
//! built for `wasm32-wasip2`).
//!
//! The guest gets WASI 0.2 with no authority and no nondeterminism:
//! - no preopened directories, no environment variables, no arguments, an empty stdin;
//! - sockets refused (no TCP, no UDP, no name lookup, no address allowed);
//! - the wall clock and the monotonic clock read the timestamp of the event being handled, and
//!   time does not pass while it is handled (a sleep returns at once);
//! - randomness (`wasi:random/random` and `insecure`) is a stream seeded per projection and per
//!   event, and `insecure-seed` is fixed per projection;
//! - stdout and stderr are captured and written to the host's log, tagged with the projection.
//!
//! So a guest that reads the clock or draws random numbers gives the same documents on a replay
//! as it gave live, whatever the batch boundaries were. The host calls such a guest once per
//! event (see [`Sandbox::enter_event`]).
//!
//! WASI works on the [`Sandbox`] alone (it is a `WasiView`), as wasmtime-wasi's own host
//! implementations work on a `WasiCtxView`: this module knows nothing of the rest of a store's
//! state, which hands its sandbox over.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError, subscribe};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The WASI interfaces the host provides (WASI 0.2, any patch version). A component importing
/// any other interface is refused at load.
pub(super) const PROVIDED_PACKAGES: [&str; 6] = [
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// The imports that make a guest's result depend on the event it is on: such a guest is called
/// once per event.
const PER_EVENT_PACKAGES: [&str; 2] = ["wasi:clocks/", "wasi:random/"];

/// Most bytes of stdout (and of stderr) kept between two drains; the rest is counted and dropped.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Whether an import is a WASI 0.2 interface the host provides.
pub(super) fn provides(import: &str) -> bool {
    PROVIDED_PACKAGES.iter().any(|p| import.starts_with(p))
        && import
            .rsplit_once('@')
            .is_some_and(|(_, v)| v.starts_with("0.2."))
}

/// Whether an import reads time or randomness.
pub(super) fn per_event(import: &str) -> bool {
    PER_EVENT_PACKAGES.iter().any(|p| import.starts_with(p))
}

/// Add WASI 0.2 to the linker, with sleeps that return at once.
pub(super) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // Virtual time: a pollable for a duration or an instant is ready at once, so a guest that
    // sleeps neither blocks a thread of the host nor sees time pass.
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, T>, (_,): (u64,)| {
            Ok((ready(store.data_mut().ctx().table)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, T>, (_,): (u64,)| {
            Ok((ready(store.data_mut().ctx().table)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is always ready.
struct Ready;

#[async_trait::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let resource = table.push(Ready)?;
    subscribe(table, resource)
}

/// What the clocks and random generators read: set by the host before each event.
#[derive(Debug, Default)]
struct EventState {
    /// Timestamp of the event being handled, in milliseconds since the Unix epoch.
    timestamp_ms: AtomicI64,
    /// State of the two random streams (secure, insecure): SplitMix64.
    random: [AtomicU64; 2],
    /// Whether the guest drew from either stream since the last `take_drawn`.
    drawn: AtomicBool,
}

/// A guest's WASI state for one batch.
pub(super) struct Sandbox {
    ctx: WasiCtx,
    table: ResourceTable,
    state: Arc<EventState>,
    seed: u64,
    stdout: Captured,
    stderr: Captured,
}

impl Sandbox {
    /// A sandbox for the projection named `projection`: its seed comes from the name.
    pub(super) fn new(projection: &str) -> Self {
        let seed = fnv1a(projection.as_bytes());
        let state = Arc::new(EventState::default());
        let (stdout, stderr) = (Captured::default(), Captured::default());
        let ctx = WasiCtxBuilder::new()
            .wall_clock(EventClock(Arc::clone(&state)))
            .monotonic_clock(EventClock(Arc::clone(&state)))
            .secure_random(EventRandom(Arc::clone(&state), 0))
            .insecure_random(EventRandom(Arc::clone(&state), 1))
            .insecure_random_seed(u128::from(seed) << 64 | u128::from(splitmix(seed)))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let sandbox = Self {
            ctx,
            table: ResourceTable::new(),
            state,
            seed,
            stdout,
            stderr,
        };
        sandbox.enter_instance();
        sandbox
    }

    /// Seed the random streams and the clocks for a fresh instance's warm-up call: the same for
    /// every instance of the projection, whatever event comes next.
    pub(super) fn enter_instance(&self) {
        self.state.timestamp_ms.store(0, Ordering::Relaxed);
        for (stream, state) in self.state.random.iter().enumerate() {
            state.store(self.seed.wrapping_add(stream as u64), Ordering::Relaxed);
        }
    }

    /// Point the clocks at this event's timestamp and reseed the random streams for it.
    pub(super) fn enter_event(&self, position: u64, timestamp_ms: i64) {
        self.state
            .timestamp_ms
            .store(timestamp_ms, Ordering::Relaxed);
        let event_seed = splitmix(self.seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for (stream, state) in self.state.random.iter().enumerate() {
            state.store(event_seed.wrapping_add(stream as u64), Ordering::Relaxed);
        }
    }

    /// Whether the guest drew randomness since the last call (and forget it).
    pub(super) fn take_drawn(&self) -> bool {
        self.state.drawn.swap(false, Ordering::Relaxed)
    }

    /// Take what the guest wrote to stdout and stderr since the last call.
    pub(super) fn drain_output(&self) -> (String, String) {
        (self.stdout.take(), self.stderr.take())
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Both clocks: the event's timestamp.
struct EventClock(Arc<EventState>);

impl EventClock {
    fn millis(&self) -> u64 {
        u64::try_from(self.0.timestamp_ms.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

impl HostWallClock for EventClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.millis())
    }
}

impl HostMonotonicClock for EventClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.millis().saturating_mul(1_000_000)
    }
}

/// A SplitMix64 stream (`1` selects the insecure one), reseeded per event. Deterministic by
/// design: a guest that needs secrets has no business in a projection.
struct EventRandom(Arc<EventState>, usize);

impl rand_core::TryRng for EventRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0.drawn.store(true, Ordering::Relaxed);
        let state = self.0.random[self.1].fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Ok(splitmix(state))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// The SplitMix64 output function.
fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: a stable hash of the projection's name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Output captured from stdout or stderr, bounded.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take(&self) -> String {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&buffer).into_owned();
        buffer.clear();
        text
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_OUTPUT_BYTES)
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasi_0_2_interfaces_are_provided() {
        assert!(provides("wasi:clocks/wall-clock@0.2.3"));
        assert!(provides("wasi:sockets/tcp@0.2.0"));
        assert!(!provides("wasi:http/outgoing-handler@0.2.0"));
        assert!(!provides("wasi:clocks/wall-clock@0.3.0"));
        assert!(!provides("wasi:clocks/wall-clock"));
    }

    #[test]
    fn random_streams_depend_on_projection_and_event_only() {
        let draw = |name: &str, position: u64| {
            let sandbox = Sandbox::new(name);
            sandbox.enter_event(position, 0);
            let mut rng = EventRandom(Arc::clone(&sandbox.state), 0);
            let first = rand_core::TryRng::try_next_u64(&mut rng);
            sandbox.enter_event(position + 1, 0);
            sandbox.enter_event(position, 0);
            (first, rand_core::TryRng::try_next_u64(&mut rng))
        };
        let (a, again) = draw("payments", 7);
        assert_eq!(a, again, "reseeding for the same event repeats the stream");
        assert_eq!(draw("payments", 7), draw("payments", 7));
        assert_ne!(draw("payments", 7).0, draw("payments", 8).0);
        assert_ne!(draw("payments", 7).0, draw("invoices", 7).0);
    }
}
