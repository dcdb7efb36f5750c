//! The MongoDB store: the production store. Needs a replica set (a single node is fine),
//! because appends and batch commits are multi-document transactions and the live feed is a
//! change stream.
//!
//! Collections of the database named in the URI (default `refold`):
//! - `events`: the seeds' document shape plus `position`; unique `{aggregateId, version}` and
//!   `{position}`, and `{eventType, position}`, `{aggregateType, timestamp}`;
//! - `counters`: the position counter. An append increments it inside its transaction, so
//!   concurrent appends conflict on it and commit in position order: a reader paging by
//!   position never sees a higher position before a lower one;
//! - `generations`: projection generations and their checkpoints;
//! - `refusals`, `paused`, `dead_letters`: component files a host refused, paused projections,
//!   and events skipped by a failure policy;
//! - `<projection>__g<n>__<collection>`: read collections, and `<projection>__<collection>`,
//!   views on the active generation.

mod checkpoints;
mod components;
mod documents;
mod errors;
mod events;
mod feed;
mod generations;
mod leases;
mod operator;
pub mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions, ReadConcern, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tokio::sync::watch;

use super::{StoreError, StoreResult};
use crate::domain::Position;

/// How long a transaction that keeps failing with transient errors (write conflicts on the
/// position counter, elections) is retried, as the drivers' `withTransaction` does.
const TRANSACTION_BUDGET: Duration = Duration::from_secs(60);
/// Attempts to learn the outcome of a commit whose result is unknown.
const COMMIT_ATTEMPTS: u32 = 20;

/// The MongoDB store.
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    feed: Arc<watch::Sender<Position>>,
    /// The leases this host takes, when it serves projections beside other hosts.
    leasing: Option<Arc<leases::Leasing>>,
}

fn backend(context: &str) -> impl FnOnce(mongodb::error::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

/// Every document of `collection` that matches `filter`, in `sort` order; `context` names the
/// read in an error.
async fn find_all(
    collection: &Collection<Document>,
    filter: Document,
    sort: Document,
    context: &str,
) -> StoreResult<Vec<Document>> {
    use futures_util::TryStreamExt;
    collection
        .find(filter)
        .sort(sort)
        .await
        .map_err(backend(context))?
        .try_collect()
        .await
        .map_err(backend(context))
}

/// Every document of a collection, in `_id` order.
async fn all_by_id(collection: &Collection<Document>, context: &str) -> StoreResult<Vec<Document>> {
    find_all(collection, doc! {}, doc! { "_id": 1 }, context).await
}

impl MongoStore {
    /// Connect, create the indexes (idempotent), and start the change feed.
    pub async fn open(uri: &str) -> StoreResult<Self> {
        let options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::InvalidInput(format!("MongoDB URI `{uri}`: {e}")))?;
        Self::open_with(options).await
    }

    /// [`Self::open`] with the driver's options given whole (an embedding application's own
    /// settings, a test watching the commands sent). The database is the options' default
    /// database, or `refold`.
    pub async fn open_with(options: ClientOptions) -> StoreResult<Self> {
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| "refold".to_owned());
        let client = Client::with_options(options).map_err(backend("connect"))?;
        let db = client.database(&database);
        let store = Self {
            client,
            db,
            feed: Arc::new(watch::channel(0).0),
            leasing: None,
        };
        store.create_indexes().await?;
        let head = store.head_now().await?;
        store.feed.send_replace(head);
        feed::spawn(
            store.events(),
            store.counters(),
            Arc::downgrade(&store.feed),
        );
        Ok(store)
    }

    fn events(&self) -> Collection<Document> {
        self.db.collection("events")
    }

    fn counters(&self) -> Collection<Document> {
        self.db.collection("counters")
    }

    fn generations_collection(&self) -> Collection<Document> {
        self.db.collection("generations")
    }

    fn refusals_collection(&self) -> Collection<Document> {
        self.db.collection("refusals")
    }

    fn dead_letters_collection(&self) -> Collection<Document> {
        self.db.collection("dead_letters")
    }

    fn paused_collection(&self) -> Collection<Document> {
        self.db.collection("paused")
    }

    fn document_writes_collection(&self) -> Collection<Document> {
        self.db.collection("document_writes")
    }

    async fn create_indexes(&self) -> StoreResult<()> {
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.events()
            .create_indexes([
                index(
                    doc! { "aggregateId": 1, "version": 1 },
                    "aggregate_version",
                    true,
                ),
                index(
                    doc! { "eventType": 1, "position": 1 },
                    "event_type_position",
                    false,
                ),
                index(
                    doc! { "aggregateType": 1, "timestamp": 1 },
                    "aggregate_type_timestamp",
                    false,
                ),
            ])
            .await
            .map_err(backend("create event indexes"))?;
        self.create_position_index().await?;
        self.generations_collection()
            .create_index(index(
                doc! { "projection": 1, "number": 1 },
                "projection_number",
                true,
            ))
            .await
            .map_err(backend("create generation indexes"))?;
        self.dead_letters_collection()
            .create_index(index(
                doc! { "projection": 1, "generation": 1, "position": 1 },
                "projection_generation_position",
                false,
            ))
            .await
            .map_err(backend("create dead-letter indexes"))?;
        self.document_writes_collection()
            .create_index(index(
                doc! { "projection": 1, "generation": 1, "upto": 1 },
                "projection_generation_upto",
                false,
            ))
            .await
            .map_err(backend("create write-history indexes"))?;
        self.db
            .collection::<Document>("component_chunks")
            .create_index(index(doc! { "hash": 1, "n": 1 }, "hash_n", true))
            .await
            .map_err(backend("create component indexes"))?;
        Ok(())
    }

    /// The unique index of positions, partial: events other applications insert have no position
    /// until the sequencer gives them one, and any number of them may wait. Stores made before
    /// had it whole, which refuses a second event without a position: it is replaced.
    async fn create_position_index(&self) -> StoreResult<()> {
        use futures_util::TryStreamExt;
        let partial = doc! { "position": { "$gte": 0 } };
        let existing: Vec<IndexModel> = self
            .events()
            .list_indexes()
            .await
            .map_err(backend("list event indexes"))?
            .try_collect()
            .await
            .map_err(backend("list event indexes"))?;
        let old = existing.iter().any(|index| {
            let options = index.options.as_ref();
            options.and_then(|o| o.name.as_deref()) == Some("position")
                && options.and_then(|o| o.partial_filter_expression.as_ref()) != Some(&partial)
        });
        if old {
            tracing::info!(
                "replacing the unique index of event positions by a partial one (events other applications insert have none until stamped)"
            );
            // Another host starting at the same time may have dropped it already.
            match self.events().drop_index("position").await {
                Ok(()) => {}
                Err(e) if errors::code(&e) == Some(errors::INDEX_NOT_FOUND) => {}
                Err(e) => return Err(StoreError::backend("replace the position index", e)),
            }
        }
        let model = IndexModel::builder()
            .keys(doc! { "position": 1 })
            .options(
                IndexOptions::builder()
                    .name("position".to_owned())
                    .unique(true)
                    .partial_filter_expression(partial)
                    .build(),
            )
            .build();
        self.events()
            .create_index(model)
            .await
            .map_err(backend("create the position index"))?;
        Ok(())
    }

    /// Start the sequencer (see [`sequencer`]) as `owner`, until the store is dropped or the
    /// handle stops it. Only hosts that serve projections run one.
    pub fn spawn_sequencer(&self, owner: String) -> SequencerHandle {
        let (stop, stopped) = watch::channel(false);
        // A store of its own, whose feed nobody reads: the task must not keep this store's feed
        // alive, which is how it learns that the store was dropped.
        let own = Self {
            client: self.client.clone(),
            db: self.db.clone(),
            feed: Arc::new(watch::channel(0).0),
            leasing: None,
        };
        let task = tokio::spawn(sequencer::run(
            own,
            owner,
            Arc::downgrade(&self.feed),
            stopped,
        ));
        SequencerHandle { stop, task }
    }

    /// The committed head, read with majority read concern.
    async fn head_now(&self) -> StoreResult<Position> {
        feed::read_head(&self.counters()).await
    }

    async fn start_transaction(
        &self,
        session: &mut ClientSession,
    ) -> Result<(), mongodb::error::Error> {
        session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .await
    }

    /// Commit, retrying a commit whose outcome is unknown. Returns whether the whole
    /// transaction should be retried.
    async fn commit_transaction(session: &mut ClientSession, context: &str) -> StoreResult<bool> {
        for _ in 0..COMMIT_ATTEMPTS {
            match session.commit_transaction().await {
                Ok(()) => return Ok(false),
                Err(e) if errors::is_unknown_commit(&e) => continue,
                Err(e) if errors::is_transient_transaction(&e) => return Ok(true),
                Err(e) => return Err(StoreError::backend(context, e)),
            }
        }
        Err(StoreError::backend(
            context,
            "commit outcome stayed unknown",
        ))
    }
}

/// A running sequencer: [`Self::stop`] gives its lease up, so another host takes over at once.
pub struct SequencerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SequencerHandle {
    /// Stop the sequencer and give its lease up.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Run a transaction body, retrying it on transient errors (write conflicts, elections...).
///
/// The body is an async block over `$session` evaluating to
/// `Result<StoreResult<T>, mongodb::error::Error>`: the outer error is the driver's (maybe
/// retried), the inner one a decision of the store (a conflict...), which aborts.
macro_rules! transaction {
    ($store:expr, $context:expr, |$session:ident| $body:expr) => {{
        let context: &str = $context;
        let mut $session = $store
            .client
            .start_session()
            .await
            .map_err(|e| StoreError::backend(context, e))?;
        let started = std::time::Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            $store
                .start_transaction(&mut $session)
                .await
                .map_err(|e| StoreError::backend(context, e))?;
            let outcome: Result<StoreResult<_>, mongodb::error::Error> = $body.await;
            match outcome {
                Ok(Ok(value)) => {
                    if !MongoStore::commit_transaction(&mut $session, context).await? {
                        break Ok(value);
                    }
                }
                Ok(Err(decision)) => {
                    let _ = $session.abort_transaction().await;
                    break Err(decision);
                }
                Err(e) => {
                    let _ = $session.abort_transaction().await;
                    if !crate::store::mongo::errors::is_transient_transaction(&e)
                        || started.elapsed() > crate::store::mongo::TRANSACTION_BUDGET
                    {
                        break Err(StoreError::backend(context, e));
                    }
                }
            }
            // Random backoff, growing: writers that conflicted must not retry in lock step.
            let ceiling = 1u64 << attempt.min(7);
            tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=ceiling))).await;
        }
    }};
}
use transaction;
