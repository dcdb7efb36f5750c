//! Host bindings generated from the one WIT package in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "refold:projection/projection",
});
