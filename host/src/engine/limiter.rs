//! The limiter every guest store runs under: it caps the linear memories of a store together
//! (a component has several core modules, each may have memories: the cap is on their sum, not
//! on each) and each table, bounds how many instances, tables and memories a store may create,
//! and records that it refused a memory growth.
//!
//! The record is what tells a memory cap from other traps (see `host::classify_trap`): wasmtime
//! reports a refused growth as an ordinary error, and its text (or a guest's own message, or a
//! frame name in a backtrace) is no evidence of what happened. Spin's `core/src/limits.rs` is
//! the model: wasmtime's `StoreLimits`, plus the facts the host wants to know afterwards.

use wasmtime::ResourceLimiter;

/// Most instances one store may create (a component instantiates several core modules).
const MAX_INSTANCES: usize = 16;
/// Most tables one store may create.
const MAX_TABLES: usize = 16;
/// Most linear memories one store may create.
const MAX_MEMORIES: usize = 4;

/// A store's resource limiter; a new one for every store.
#[derive(Debug, Default)]
pub(super) struct GuestLimiter {
    /// The cap on the store's linear memories together, in bytes.
    memory_bytes: usize,
    /// The bytes its linear memories hold now, together.
    memory_total: usize,
    /// The cap on each table, in elements.
    table_elements: usize,
    /// The bytes the store's memories would have held together when a growth was refused (the
    /// first refusal).
    memory_refused: Option<usize>,
}

impl GuestLimiter {
    /// A limiter with these caps.
    pub(super) fn new(memory_bytes: usize, table_elements: usize) -> Self {
        Self {
            memory_bytes,
            memory_total: 0,
            table_elements,
            memory_refused: None,
        }
    }

    /// The size, in bytes, a memory of this store was refused growth to, if one was.
    pub(super) fn memory_refused(&self) -> Option<usize> {
        self.memory_refused
    }

    /// Whether the store's memories hold at most half the cap: room for an instance kept for
    /// more events to grow as far as a fresh one could.
    pub(super) fn within_half(&self) -> bool {
        self.memory_total <= self.memory_bytes / 2
    }
}

/// A growth past the cap, or past the memory's or table's own declared maximum, is refused with
/// an error, so the guest traps where it asked rather than carrying on after a failed
/// `memory.grow` (as `StoreLimits` does with `trap_on_grow_failure`; the messages are its own,
/// so what users read is unchanged). A growth the limiter allowed but the engine could not
/// perform traps too.
impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory comes with `current` 0: its initial size counts like a growth.
        let total = self
            .memory_total
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_refused.get_or_insert(total);
            wasmtime::bail!("forcing trap when growing memory to {desired} bytes");
        }
        // Past the memory's own declared maximum: the guest's bug, not the host's cap.
        if maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("forcing trap when growing memory to {desired} bytes");
        }
        self.memory_total = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("forcing a memory growth failure to be a trap"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements || maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("forcing trap when growing table to {desired} elements");
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("forcing a table growth failure to be a trap"))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::GuestLimiter;

    const PAGE: usize = 64 * 1024;

    #[test]
    fn refuses_growth_past_a_cap_and_records_it() {
        let mut limiter = GuestLimiter::new(2 * PAGE, 10);
        assert!(limiter.memory_growing(0, 2 * PAGE, None).is_ok_and(|ok| ok));
        assert_eq!(limiter.memory_refused(), None);
        assert!(limiter.table_growing(0, 10, None).is_ok_and(|ok| ok));
        assert!(limiter.table_growing(10, 11, None).is_err());
        assert_eq!(limiter.memory_refused(), None, "a table is not a memory");
        assert!(limiter.memory_growing(2 * PAGE, 3 * PAGE, None).is_err());
        assert!(limiter.memory_growing(2 * PAGE, 4 * PAGE, None).is_err());
        assert_eq!(
            limiter.memory_refused(),
            Some(3 * PAGE),
            "the first refusal"
        );
    }

    #[test]
    fn refuses_growth_past_the_declared_maximum() {
        let mut limiter = GuestLimiter::new(8 * PAGE, 10);
        assert!(limiter.memory_growing(PAGE, 2 * PAGE, Some(PAGE)).is_err());
        assert_eq!(
            limiter.memory_refused(),
            None,
            "the guest's own maximum is not the host's cap"
        );
        assert!(limiter.table_growing(1, 2, Some(1)).is_err());
    }

    /// A module with one page of memory (three with `big`) and an export `grow` that asks for
    /// four more pages, in the binary format (this build of wasmtime reads no text).
    fn module(engine: &wasmtime::Engine, big: bool) -> wasmtime::Result<wasmtime::Module> {
        let pages = if big { 3 } else { 1 };
        #[rustfmt::skip]
        let bytes = [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
            0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
            0x03, 0x02, 0x01, 0x00, // one function of that type
            0x05, 0x03, 0x01, 0x00, pages, // memory: `pages` pages, no maximum
            0x07, 0x08, 0x01, 0x04, b'g', b'r', b'o', b'w', 0x00, 0x00, // export "grow"
            0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, 0x04, 0x40, 0x00, 0x0b, // memory.grow 4
        ];
        wasmtime::Module::new(engine, bytes)
    }

    fn store(engine: &wasmtime::Engine) -> wasmtime::Store<GuestLimiter> {
        let mut store = wasmtime::Store::new(engine, GuestLimiter::new(2 * PAGE, 10));
        store.limiter(|limiter| limiter);
        store
    }

    /// The limiter in a real store: a guest's `memory.grow` past the cap traps, and the store's
    /// limiter says why.
    #[test]
    fn a_store_records_a_refused_growth() {
        let engine = wasmtime::Engine::default();
        let mut store = store(&engine);
        let grown = module(&engine, false)
            .and_then(|module| wasmtime::Instance::new(&mut store, &module, &[]))
            .and_then(|instance| instance.get_typed_func::<(), i32>(&mut store, "grow"))
            .and_then(|grow| grow.call(&mut store, ()));
        assert!(grown.is_err(), "{grown:?}");
        assert_eq!(store.data().memory_refused(), Some(5 * PAGE));
    }

    /// The cap holds for the memories of a store together: instances whose memories each fit
    /// cannot add up past it.
    #[test]
    fn the_cap_is_on_the_sum_of_a_stores_memories() {
        let engine = wasmtime::Engine::default();
        let mut store = store(&engine);
        let module = module(&engine, false).expect("module");
        for _ in 0..2 {
            wasmtime::Instance::new(&mut store, &module, &[]).expect("one page each fits");
        }
        let third = wasmtime::Instance::new(&mut store, &module, &[]);
        assert!(third.is_err(), "a third page went past the two-page cap");
        assert_eq!(store.data().memory_refused(), Some(3 * PAGE));
    }

    /// ... and a memory that starts above the cap fails instantiation.
    #[test]
    fn a_store_records_a_refused_initial_memory() {
        let engine = wasmtime::Engine::default();
        let mut store = store(&engine);
        let instance = module(&engine, true)
            .and_then(|module| wasmtime::Instance::new(&mut store, &module, &[]));
        assert!(instance.is_err());
        assert_eq!(store.data().memory_refused(), Some(3 * PAGE));
    }
}
