//! Upcasting: old event shapes read as new ones, before any projection sees them.
//!
//! An [`Upcaster`] takes events of the types it declares and returns the events to read in
//! their place. A [`Chain`] holds a host's upcasters, at most one per event type, and applies
//! them: an event goes to the upcaster of its type, and each event that returns goes on to the
//! upcaster of its own type, except one that already took part in making it (so an upcaster
//! that returns its own type, or two that feed each other, end). What comes out keeps the
//! recorded event's position, aggregate, version and timestamp.
//!
//! A projection is given the part of the chain that can reach it ([`Chain::for_projection`]):
//! the store is read for the event types it subscribes to and every type an upcaster turns
//! into one of those, and the result is filtered by its own subscription again. The code
//! hashes of that part are recorded with its generation: other upcasters mean another
//! generation. Knows no wasmtime: the engine implements [`Upcaster`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::{
    EventFilter, Manifest, RecordedEvent, UpcasterManifest, event::MAX_EVENT_BYTES,
};
use crate::projector::{BatchContext, HandleFailure, Handler};

/// Most events an upcaster may return for one event.
pub const MAX_UPCAST_EVENTS: usize = 64;
/// Most upcasters one host may run.
pub const MAX_UPCASTERS: usize = 64;

/// One event an upcaster returned, before the host checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcastEvent {
    /// Its type.
    pub event_type: String,
    /// Its payload (a JSON object, once checked).
    pub data: String,
    /// Its metadata (a JSON object, once checked).
    pub metadata: String,
}

/// A loaded upcaster. Implemented by the wasm engine.
pub trait Upcaster: Send + Sync {
    /// Its manifest, validated.
    fn manifest(&self) -> &UpcasterManifest;

    /// Hash of its code.
    fn code_hash(&self) -> &str;

    /// What to read in place of each event (all of types it takes), in order. A failure is an
    /// [`HandleFailure::Upcast`] naming the event's position.
    fn upcast(&self, events: &[&RecordedEvent]) -> Result<Vec<Vec<UpcastEvent>>, HandleFailure>;
}

/// Why a set of upcasters cannot run together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Two upcasters take the same event type.
    #[error(
        "upcasters `{first}` and `{second}` both take `{event_type}`; an event type has at most one upcaster"
    )]
    SameType {
        /// The event type.
        event_type: String,
        /// One upcaster.
        first: String,
        /// The other.
        second: String,
    },
    /// Two upcasters have the same name.
    #[error("two upcasters are named `{0}`")]
    SameName(String),
    /// Too many.
    #[error("{0} upcasters; at most {MAX_UPCASTERS} are allowed")]
    TooMany(usize),
}

/// A set of upcasters, at most one per event type.
#[derive(Clone, Default)]
pub struct Chain {
    /// By name.
    upcasters: Vec<Arc<dyn Upcaster>>,
    /// Index into `upcasters` of the upcaster of each type.
    by_type: HashMap<String, usize>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.upcasters.iter().map(|u| &u.manifest().name))
            .finish()
    }
}

impl Chain {
    /// A chain of these upcasters; refused when two take the same type or share a name.
    pub fn new(mut upcasters: Vec<Arc<dyn Upcaster>>) -> Result<Self, ChainError> {
        if upcasters.len() > MAX_UPCASTERS {
            return Err(ChainError::TooMany(upcasters.len()));
        }
        upcasters.sort_by(|a, b| a.manifest().name.cmp(&b.manifest().name));
        if let Some(pair) = upcasters
            .windows(2)
            .find(|w| w[0].manifest().name == w[1].manifest().name)
        {
            return Err(ChainError::SameName(pair[0].manifest().name.clone()));
        }
        let mut by_type: HashMap<String, usize> = HashMap::new();
        for (index, upcaster) in upcasters.iter().enumerate() {
            for event_type in &upcaster.manifest().event_types {
                if let Some(first) = by_type.insert(event_type.clone(), index) {
                    return Err(ChainError::SameType {
                        event_type: event_type.clone(),
                        first: upcasters[first].manifest().name.clone(),
                        second: upcaster.manifest().name.clone(),
                    });
                }
            }
        }
        Ok(Self { upcasters, by_type })
    }

    /// Whether it holds no upcaster.
    pub fn is_empty(&self) -> bool {
        self.upcasters.is_empty()
    }

    /// Its upcasters, by name.
    pub fn upcasters(&self) -> &[Arc<dyn Upcaster>] {
        &self.upcasters
    }

    /// The code hashes of its upcasters, sorted: what a generation records.
    pub fn hashes(&self) -> Vec<String> {
        let mut hashes: Vec<String> = self
            .upcasters
            .iter()
            .map(|u| u.code_hash().to_owned())
            .collect();
        hashes.sort();
        hashes
    }

    /// The part of the chain that can change what a projection with this manifest receives,
    /// and the filter to read the store with: its event types and every type an upcaster of
    /// that part takes.
    pub fn for_projection(&self, manifest: &Manifest) -> (Chain, EventFilter) {
        let mut filter = manifest.filter();
        if filter.event_types.is_empty() {
            // Every event reaches it: every upcaster may change what it receives.
            return (self.clone(), filter);
        }
        // The stored types that can become one it subscribes to.
        let mut read: BTreeSet<&str> = manifest.event_types.iter().map(String::as_str).collect();
        loop {
            let before = read.len();
            for upcaster in &self.upcasters {
                let m = upcaster.manifest();
                if m.produces.iter().any(|t| read.contains(t.as_str())) {
                    read.extend(m.event_types.iter().map(String::as_str));
                }
            }
            if read.len() == before {
                break;
            }
        }
        // The upcasters those types meet. An event of another type can never become one it
        // subscribes to, so the upcasters of other types cannot change what it receives.
        let used: Vec<Arc<dyn Upcaster>> = self
            .upcasters
            .iter()
            .filter(|u| {
                u.manifest()
                    .event_types
                    .iter()
                    .any(|t| read.contains(t.as_str()))
            })
            .cloned()
            .collect();
        filter.event_types = read.into_iter().map(str::to_owned).collect();
        let part = Chain::new(used).unwrap_or_default();
        (part, filter)
    }

    /// The events to read in place of `events`, in order. What one recorded event becomes keeps
    /// its id for the first event, and `<id>:<n>` for the n-th after it.
    pub fn apply(&self, events: &[RecordedEvent]) -> Result<Vec<RecordedEvent>, HandleFailure> {
        // Each event with the set of upcasters that made it (a bit per upcaster) and the index
        // of the recorded event it comes from.
        let mut items: Vec<(RecordedEvent, u64, usize)> = events
            .iter()
            .enumerate()
            .map(|(origin, e)| (e.clone(), 0, origin))
            .collect();
        let mut changed = false;
        loop {
            let mut pending: Vec<Vec<usize>> = vec![Vec::new(); self.upcasters.len()];
            for (i, (event, made_by, _)) in items.iter().enumerate() {
                if let Some(&u) = self.by_type.get(&event.event_type)
                    && made_by & (1 << u) == 0
                {
                    pending[u].push(i);
                }
            }
            if pending.iter().all(Vec::is_empty) {
                break;
            }
            changed = true;
            let mut replaced: Vec<Option<Vec<(RecordedEvent, u64, usize)>>> =
                vec![None; items.len()];
            // The upcaster that made each recorded event's events this round.
            let mut made_this_round: Vec<Option<usize>> = vec![None; events.len()];
            for (u, indices) in pending.iter().enumerate().filter(|(_, i)| !i.is_empty()) {
                let upcaster = &self.upcasters[u];
                let inputs: Vec<&RecordedEvent> = indices.iter().map(|&i| &items[i].0).collect();
                let outputs = upcaster.upcast(&inputs)?;
                for (&i, returned) in indices.iter().zip(outputs) {
                    let (source, made_by, origin) = &items[i];
                    let made = checked(upcaster.manifest(), source, returned)?;
                    made_this_round[*origin] = Some(u);
                    replaced[i] = Some(
                        made.into_iter()
                            .map(|e| (e, made_by | 1 << u, *origin))
                            .collect(),
                    );
                }
            }
            items = items
                .into_iter()
                .zip(replaced)
                .flat_map(|(item, made)| made.unwrap_or_else(|| vec![item]))
                .collect();
            // What one recorded event became stays together, in order.
            if let Some(run) = items
                .chunk_by(|a, b| a.2 == b.2)
                .find(|run| run.len() > MAX_UPCAST_EVENTS)
            {
                let (event, _, origin) = &run[0];
                let upcaster = made_this_round[*origin].unwrap_or_default();
                return Err(HandleFailure::Upcast {
                    upcaster: self.upcasters[upcaster].manifest().name.clone(),
                    position: event.position,
                    message: format!(
                        "the upcasters made {} events of one; at most {MAX_UPCAST_EVENTS} are allowed",
                        run.len()
                    ),
                });
            }
        }
        if changed {
            for run in items.chunk_by_mut(|a, b| a.2 == b.2) {
                let id = &events[run[0].2].id;
                for (n, (event, _, _)) in run.iter_mut().enumerate() {
                    event.id = if n == 0 {
                        id.clone()
                    } else {
                        format!("{id}:{n}")
                    };
                }
            }
        }
        Ok(items.into_iter().map(|(event, _, _)| event).collect())
    }
}

/// What an upcaster returned for `source`, checked and read as recorded at its position (its id
/// is set once the chain is done, see [`Chain::apply`]).
fn checked(
    upcaster: &UpcasterManifest,
    source: &RecordedEvent,
    returned: Vec<UpcastEvent>,
) -> Result<Vec<RecordedEvent>, HandleFailure> {
    let fail = |message: String| HandleFailure::Upcast {
        upcaster: upcaster.name.clone(),
        position: source.position,
        message,
    };
    if returned.len() > MAX_UPCAST_EVENTS {
        return Err(fail(format!(
            "returned {} events for one; at most {MAX_UPCAST_EVENTS} are allowed",
            returned.len()
        )));
    }
    returned
        .into_iter()
        .map(|event| {
            if !upcaster.produces.contains(&event.event_type) {
                return Err(fail(format!(
                    "returned an event of type `{}`, which its manifest does not produce (produces: {})",
                    event.event_type,
                    upcaster.produces.join(", ")
                )));
            }
            if event.data.len() + event.metadata.len() > MAX_EVENT_BYTES {
                return Err(fail(format!(
                    "returned a `{}` of {} bytes; at most {MAX_EVENT_BYTES} are allowed",
                    event.event_type,
                    event.data.len() + event.metadata.len()
                )));
            }
            for (field, text) in [("data", &event.data), ("metadata", &event.metadata)] {
                if serde_json::from_str::<HashMap<String, serde::de::IgnoredAny>>(text).is_err() {
                    return Err(fail(format!(
                        "returned a `{}` whose {field} is not a JSON object",
                        event.event_type
                    )));
                }
            }
            Ok(RecordedEvent {
                event_type: event.event_type,
                data: event.data,
                metadata: event.metadata,
                ..source.clone()
            })
        })
        .collect()
}

/// A projection behind its part of the chain: it reads the widened filter, and handles what the
/// chain makes of each batch, filtered by its own subscription.
pub struct Upcasted {
    inner: Arc<dyn Handler>,
    chain: Chain,
    filter: EventFilter,
    hashes: Vec<String>,
}

impl Upcasted {
    /// `inner` behind the part of `chain` that reaches it; `inner` itself when none does.
    pub fn wrap(inner: Arc<dyn Handler>, chain: &Chain) -> Arc<dyn Handler> {
        let (chain, filter) = chain.for_projection(inner.manifest());
        if chain.is_empty() {
            return inner;
        }
        Arc::new(Self {
            hashes: chain.hashes(),
            inner,
            chain,
            filter,
        })
    }
}

impl Handler for Upcasted {
    fn manifest(&self) -> &Manifest {
        self.inner.manifest()
    }

    fn code_hash(&self) -> &str {
        self.inner.code_hash()
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    fn upcasters(&self) -> &[String] {
        &self.hashes
    }

    fn handle(
        &self,
        events: &[RecordedEvent],
        context: BatchContext,
    ) -> (BatchContext, Result<(), HandleFailure>) {
        let upcast = match self.chain.apply(events) {
            Ok(upcast) => upcast,
            Err(failure) => return (context, Err(failure)),
        };
        let subscribed = self.inner.manifest().filter();
        let events: Vec<RecordedEvent> = upcast
            .into_iter()
            .filter(|e| subscribed.matches(e))
            .collect();
        if events.is_empty() {
            return (context, Ok(()));
        }
        self.inner.handle(&events, context)
    }
}

/// `handler` behind the upcasters recorded for one of its generations (`recorded`, their code
/// hashes), checked to be exactly those that reach it.
pub fn behind_recorded(
    handler: Arc<dyn Handler>,
    upcasters: Vec<Arc<dyn Upcaster>>,
    recorded: &[String],
) -> Result<Arc<dyn Handler>, String> {
    let chain = Chain::new(upcasters).map_err(|e| e.to_string())?;
    let handler = Upcasted::wrap(handler, &chain);
    if handler.upcasters() != recorded {
        return Err(format!(
            "the upcasters recorded for it ({}) are not those that reach it",
            recorded.join(", ")
        ));
    }
    Ok(handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renames `from` to `to` and wraps the data in `{"v1": ...}`, or fails on data `"bad"`.
    struct Rename {
        manifest: UpcasterManifest,
        hash: String,
    }

    fn rename(name: &str, from: &[&str], to: &[&str]) -> Arc<dyn Upcaster> {
        Arc::new(Rename {
            manifest: UpcasterManifest {
                name: name.into(),
                event_types: from.iter().map(|t| (*t).to_owned()).collect(),
                produces: to.iter().map(|t| (*t).to_owned()).collect(),
            },
            hash: format!("hash-{name}"),
        })
    }

    impl Upcaster for Rename {
        fn manifest(&self) -> &UpcasterManifest {
            &self.manifest
        }

        fn code_hash(&self) -> &str {
            &self.hash
        }

        fn upcast(
            &self,
            events: &[&RecordedEvent],
        ) -> Result<Vec<Vec<UpcastEvent>>, HandleFailure> {
            events
                .iter()
                .map(|e| {
                    if e.data.contains("\"bad\"") {
                        return Err(HandleFailure::Upcast {
                            upcaster: self.manifest.name.clone(),
                            position: e.position,
                            message: "bad".into(),
                        });
                    }
                    Ok(self
                        .manifest
                        .produces
                        .iter()
                        .map(|to| UpcastEvent {
                            event_type: to.clone(),
                            data: format!("{{\"v1\":{}}}", e.data),
                            metadata: e.metadata.clone(),
                        })
                        .collect())
                })
                .collect()
        }
    }

    fn event(position: u64, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            position,
            id: format!("id-{position}"),
            aggregate_id: "a".into(),
            aggregate_type: "A".into(),
            event_type: event_type.into(),
            version: position,
            timestamp_ms: 0,
            data: "{}".into(),
            metadata: "{}".into(),
        }
    }

    fn subscribing(types: &[&str]) -> Manifest {
        let mut manifest = Manifest::new("p", 1, ["c"]);
        manifest.event_types = types.iter().map(|t| (*t).to_owned()).collect();
        manifest
    }

    fn names(chain: &Chain) -> Vec<&str> {
        chain
            .upcasters()
            .iter()
            .map(|u| u.manifest().name.as_str())
            .collect()
    }

    #[test]
    fn an_event_type_has_one_upcaster() {
        let error = Chain::new(vec![
            rename("b", &["A"], &["B"]),
            rename("a", &["A"], &["C"]),
        ])
        .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "upcasters `a` and `b` both take `A`; an event type has at most one upcaster"
        );
        let error = Chain::new(vec![rename("a", &["A"], &["B"]), rename("a", &["C"], &[])])
            .expect_err("refused");
        assert_eq!(error, ChainError::SameName("a".into()));
    }

    #[test]
    fn a_projection_reads_what_becomes_its_types_and_gets_the_upcasters_on_the_way() {
        let chain = Chain::new(vec![
            rename("v1-to-v2", &["PaidV1"], &["PaidV2"]),
            rename("v2-to-v3", &["PaidV2"], &["Paid"]),
            rename("other", &["Shipped"], &["ShippedV2"]),
            rename("drop", &["Paid"], &["Paid"]),
        ])
        .expect("accepted");
        let (part, filter) = chain.for_projection(&subscribing(&["Paid"]));
        assert_eq!(filter.event_types, vec!["Paid", "PaidV1", "PaidV2"]);
        assert_eq!(names(&part), vec!["drop", "v1-to-v2", "v2-to-v3"]);
        // An old type it subscribes to still meets the upcaster that renames it away.
        let (part, filter) = chain.for_projection(&subscribing(&["Shipped"]));
        assert_eq!(filter.event_types, vec!["Shipped"]);
        assert_eq!(names(&part), vec!["other"]);
        let (part, filter) = chain.for_projection(&subscribing(&["Created"]));
        assert!(part.is_empty());
        assert_eq!(filter.event_types, vec!["Created"]);
        let (part, filter) = chain.for_projection(&subscribing(&[]));
        assert_eq!(part.upcasters().len(), 4);
        assert!(filter.event_types.is_empty());
    }

    #[test]
    fn a_chain_applies_each_upcaster_once_per_event_and_keeps_the_order() {
        let chain = Chain::new(vec![
            rename("v1-to-v2", &["PaidV1"], &["PaidV2"]),
            rename("v2-split", &["PaidV2"], &["PaidV2", "Fee"]),
            rename("loop-a", &["X"], &["Y"]),
            rename("loop-b", &["Y"], &["X"]),
        ])
        .expect("accepted");
        let out = chain
            .apply(&[event(1, "PaidV1"), event(2, "Other"), event(3, "X")])
            .expect("accepted");
        let shape: Vec<(u64, &str, &str, &str)> = out
            .iter()
            .map(|e| {
                (
                    e.position,
                    e.id.as_str(),
                    e.event_type.as_str(),
                    e.data.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (1, "id-1", "PaidV2", "{\"v1\":{\"v1\":{}}}"),
                (1, "id-1:1", "Fee", "{\"v1\":{\"v1\":{}}}"),
                (2, "id-2", "Other", "{}"),
                (3, "id-3", "X", "{\"v1\":{\"v1\":{}}}"),
            ]
        );
    }

    #[test]
    fn what_one_event_becomes_has_distinct_ids_and_a_bounded_count() {
        let chain = Chain::new(vec![
            rename("split-a", &["A"], &["B", "C"]),
            rename("split-b", &["B"], &["D", "E"]),
        ])
        .expect("accepted");
        let out = chain
            .apply(&[event(1, "A"), event(2, "Z")])
            .expect("upcast");
        let ids: Vec<(&str, &str)> = out
            .iter()
            .map(|e| (e.id.as_str(), e.event_type.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("id-1", "D"),
                ("id-1:1", "E"),
                ("id-1:2", "C"),
                ("id-2", "Z")
            ]
        );
        let nine: Vec<String> = (0..9).map(|i| format!("T{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        let eighty_one: Vec<String> = (0..9).map(|i| format!("U{i}")).collect();
        let eighty_one: Vec<&str> = eighty_one.iter().map(String::as_str).collect();
        let chain = Chain::new(vec![
            rename("wide", &["A"], &nine),
            rename("wider", &nine, &eighty_one),
        ])
        .expect("accepted");
        let error = chain.apply(&[event(3, "A")]).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "upcaster `wider` failed at position 3: the upcasters made 81 events of one; at most 64 are allowed"
        );
    }

    #[test]
    fn what_an_upcaster_may_not_return_fails_the_event() {
        struct Liar(UpcasterManifest, UpcastEvent);
        impl Upcaster for Liar {
            fn manifest(&self) -> &UpcasterManifest {
                &self.0
            }
            fn code_hash(&self) -> &str {
                "liar"
            }
            fn upcast(
                &self,
                events: &[&RecordedEvent],
            ) -> Result<Vec<Vec<UpcastEvent>>, HandleFailure> {
                Ok(events.iter().map(|_| vec![self.1.clone()]).collect())
            }
        }
        let liar = |event_type: &str, data: &str| {
            let manifest = UpcasterManifest {
                name: "liar".into(),
                event_types: vec!["A".into()],
                produces: vec!["B".into()],
            };
            let returned = UpcastEvent {
                event_type: event_type.into(),
                data: data.into(),
                metadata: "{}".into(),
            };
            Chain::new(vec![Arc::new(Liar(manifest, returned)) as Arc<dyn Upcaster>])
                .expect("accepted")
        };
        let error = liar("C", "{}")
            .apply(&[event(4, "A")])
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "upcaster `liar` failed at position 4: returned an event of type `C`, which its manifest does not produce (produces: B)"
        );
        assert_eq!(error.position(), Some(4));
        let error = liar("B", "[1]")
            .apply(&[event(4, "A")])
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .ends_with("whose data is not a JSON object")
        );
        let failing = Chain::new(vec![rename("a", &["A"], &["B"])]).expect("accepted");
        let mut bad = event(7, "A");
        bad.data = "{\"x\":\"bad\"}".into();
        let error = failing.apply(&[event(6, "A"), bad]).expect_err("refused");
        assert_eq!(error.position(), Some(7));
    }
}
