//! A projection that subscribes to the payment events and does nothing with them: what the
//! host and the wasm boundary cost on their own.
//!
//! The benchmark copies this component under other names for its many-projections run by
//! rewriting the digits of `NAME` in the binary, so the name keeps this exact length.

use refold_projections_sdk::{Context, Event, Manifest, Projection, Result, export_projection};

const NAME: &str = "noop-0000000";

struct Noop;

impl Projection for Noop {
    fn manifest() -> Manifest {
        Manifest::new(NAME, 1)
            .event_types(&["PaymentProcessed", "PaymentFailed"])
            .collection("nothing")
    }

    fn handle(_: &mut Context, _: &Event) -> Result<()> {
        Ok(())
    }
}

export_projection!(Noop);
