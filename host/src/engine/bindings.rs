//! Host bindings generated from the one WIT package in `wit/`: the projection world, and the
//! upcaster world, which shares its `types` and `log` interfaces.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "refold:projection/projection",
});

/// The upcaster world.
pub mod upcaster {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "refold:projection/upcaster",
        with: {
            "refold:projection/types": super::refold::projection::types,
            "refold:projection/log": super::refold::projection::log,
        },
    });
}
