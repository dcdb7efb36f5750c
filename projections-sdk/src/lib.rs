//! Write Refold projections in Rust.
//!
//! A projection is a type that implements [`Projection`]: it describes itself with a
//! [`Manifest`] and folds each [`Event`] into its own read collections through [`Context`].
//! [`export_projection!`] turns it into a WebAssembly component export. The generated bindings
//! of the WIT contract stay hidden in [`wit`].
//!
//! ```ignore
//! use refold_projections_sdk::{export_projection, Context, Event, Manifest, Projection, Result, Update};
//!
//! struct Counter;
//!
//! impl Projection for Counter {
//!     fn manifest() -> Manifest {
//!         Manifest::new("counter", 1).event_types(&["Clicked"]).collection("counts")
//!     }
//!
//!     fn handle(ctx: &mut Context, event: &Event) -> Result<()> {
//!         ctx.collection("counts").update(event.aggregate_id(), Update::new().inc("clicks", 1))?;
//!         Ok(())
//!     }
//! }
//!
//! export_projection!(Counter);
//! ```
#![deny(missing_docs)]

mod collection;
mod error;
mod event;
pub mod log;
mod manifest;
mod time;
mod update;

pub use collection::Collection;
pub use error::{Error, ErrorKind, Result};
pub use event::Event;
pub use manifest::Manifest;
pub use time::iso8601_millis;
pub use update::Update;

/// Bindings generated from `wit/` by wit-bindgen. Not part of the SDK's stable surface.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "refold:projection/projection",
        default_bindings_module: "refold_projections_sdk::wit",
        pub_export_macro: true,
        export_macro_name: "__export_projection_world",
    });
}

/// A projection: a left fold of events into read collections.
///
/// Implementations carry no state between calls: everything a projection remembers lives in its
/// collections, which is what makes a replay give exactly what live processing gave.
pub trait Projection {
    /// Describe the projection: name, version, subscriptions and collections.
    fn manifest() -> Manifest;

    /// Fold one event into the read collections.
    fn handle(ctx: &mut Context, event: &Event) -> Result<()>;
}

/// Access to the projection's own collections while a batch is handled.
pub struct Context {
    _private: (),
}

impl Context {
    /// A handle on one of the collections declared in the manifest.
    pub fn collection<'a>(&mut self, name: &'a str) -> Collection<'a> {
        Collection::new(name)
    }
}

/// Send panic messages to the host's log before the guest aborts, so the host can say what
/// panicked and where, not only that the guest trapped.
fn report_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| log::error(&info.to_string())));
    });
}

/// Runs the projection's `handle` over one batch; used by [`export_projection!`].
#[doc(hidden)]
pub fn __handle_batch<P: Projection>(
    events: Vec<wit::refold::projection::types::Event>,
) -> core::result::Result<(), wit::refold::projection::types::HandleError> {
    report_panics();
    let mut ctx = Context { _private: () };
    for raw in events {
        let event = Event::from_wit(raw);
        P::handle(&mut ctx, &event).map_err(|error| error.into_wit(event.position()))?;
    }
    Ok(())
}

/// Describes the projection; used by [`export_projection!`].
#[doc(hidden)]
pub fn __describe<P: Projection>() -> wit::refold::projection::types::Manifest {
    report_panics();
    P::manifest().into_wit()
}

/// Export a [`Projection`] implementation as the component's `describe` and `handle`.
///
/// Use it once per crate, at the top level: `export_projection!(MyProjection);`.
#[macro_export]
macro_rules! export_projection {
    ($projection:ty) => {
        #[doc(hidden)]
        pub struct __RefoldExport;

        impl $crate::wit::Guest for __RefoldExport {
            fn describe() -> $crate::wit::refold::projection::types::Manifest {
                $crate::__describe::<$projection>()
            }

            fn handle(
                events: ::std::vec::Vec<$crate::wit::refold::projection::types::Event>,
            ) -> ::core::result::Result<(), $crate::wit::refold::projection::types::HandleError>
            {
                $crate::__handle_batch::<$projection>(events)
            }
        }

        $crate::wit::__export_projection_world!(__RefoldExport);
    };
}
