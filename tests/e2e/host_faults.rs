//! Faults charged to the right party: a store read that fails inside a guest's host call is the
//! host's failure (retried without limit, never skipped, never parking the projection), not the
//! guest's, through the real engine and a real compiled component. The store's reader is wrapped
//! to fail its first reads, the way an outage would.

use std::sync::Arc;

use refold::domain::{EventFilter, ExpectedVersion};
use refold::engine::{Engine, Limits};
use refold::projector::{BatchContext, HandleFailure, Handler};
use refold::store::{DocumentReader, StoreError, StoreResult};
use refold_tests::{Sandbox, fixtures, thing};
use serde_json::{Map, Value};

/// A generation's reader that fails its first `failures` reads.
struct Outage {
    inner: Box<dyn DocumentReader>,
    failures: u32,
}

impl DocumentReader for Outage {
    fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Map<String, Value>>> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(StoreError::backend(
                format!("read {collection}/{id}"),
                "connection reset by peer",
            ));
        }
        self.inner.get(collection, id)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failure_inside_a_host_call_is_the_hosts_failure_and_the_retry_succeeds() {
    let sandbox = Sandbox::new();
    let store = sandbox.store("faults.db").await;
    store
        .append("thing-1", ExpectedVersion::NoStream, vec![thing("Normal")])
        .await
        .expect("append");
    let engine = Arc::new(Engine::new(Limits::default(), None).expect("engine"));
    let bytes = std::fs::read(fixtures().join("healthy.wasm")).expect("healthy component");
    let handler: Arc<dyn Handler> = Arc::new(engine.load(&bytes).expect("load"));
    let generation = store
        .create_generation(
            handler.manifest(),
            handler.code_hash(),
            handler.upcasters(),
            None,
        )
        .await
        .expect("generation");
    let events = store
        .read_all(0, 10, &EventFilter::default())
        .await
        .expect("read")
        .events;

    let outage = Outage {
        inner: store.reader(&generation).expect("reader"),
        failures: 1,
    };
    let context = BatchContext::new(handler.manifest(), Box::new(outage));
    let (first, retried) = (Arc::clone(&handler), events.clone());
    let (mut context, result) =
        tokio::task::spawn_blocking(move || first.handle(&retried, context))
            .await
            .expect("handler task");
    assert!(
        matches!(&result, Err(HandleFailure::Host(message)) if message.contains("connection reset")),
        "a failed store read is the host's failure, not the guest's: {result:?}"
    );
    assert!(result.as_ref().is_err_and(HandleFailure::is_transient));

    // The projector retries the batch as it is (the context is cleared first): the outage is
    // over, and the same events now fold.
    context.discard();
    let (context, result) = tokio::task::spawn_blocking(move || handler.handle(&events, context))
        .await
        .expect("handler task");
    assert_eq!(result, Ok(()));
    assert_eq!(context.store_failure(), None);
}
