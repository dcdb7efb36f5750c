//! Generation leases on MongoDB (see [`Leases`]): one document per generation in `leases`
//! (`_id` as the generation's, an owner, an epoch and the time of its last renewal) and one per
//! host in `hosts` (the time of its last renewal). A host that serves projections enables them
//! ([`MongoStore::with_leases`]); its commits then check, in their own transaction, that the
//! generation's lease is still theirs under the epoch they took it with (see `checkpoints.rs`).
//!
//! Renewals run in a task of their own, three times per lease time, so nothing the host does
//! meanwhile (a slow reconcile, a projector finishing its batch) can delay them past the lease
//! time.
//!
//! Expiry is judged by the clock of the host that would take the lease over against the renewal
//! time the owner wrote: hosts' clocks must agree to well within the lease time (NTP does), as
//! for the sequencer's lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReadConcern;

use super::generations::generation_id;
use super::{MongoStore, errors};
use crate::domain::{Generation, time};
use crate::store::{Host, Lease, Leases, StoreError, StoreResult};

/// This host's side of the leases: its name, the lease time, the leases it holds, what it would
/// run, and the leases the renewal task found lost.
pub(super) struct Leasing {
    pub(super) owner: String,
    ttl: Duration,
    /// By lease id: the generation and the epoch it was taken with.
    held: Mutex<HashMap<String, (String, u32, i64)>>,
    /// The generations this host would run, as lease ids, written with its presence.
    wants: Mutex<Vec<String>>,
    /// Generations whose lease a renewal found taken over, not reported yet.
    lost: Mutex<BTreeSet<(String, u32)>>,
    /// The host left: renewals stop.
    left: std::sync::atomic::AtomicBool,
}

impl Leasing {
    /// The epoch this host holds a generation's lease with, if it does.
    pub(super) fn epoch(&self, id: &str) -> Option<i64> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .map(|(_, _, epoch)| *epoch)
    }

    fn hold(&self, id: &str, generation: &Generation, epoch: i64) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.to_owned(),
                (generation.projection.clone(), generation.number, epoch),
            );
    }

    fn drop_held(&self, id: &str) -> Option<(String, u32, i64)> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }
}

/// Renew the host's presence and leases three times per lease time, until `leasing` is dropped
/// (with the last clone of the store that enabled it). A failed round is logged and tried again
/// at the next one.
async fn renew_until_dropped(store: MongoStore, leasing: Weak<Leasing>) {
    let Some(ttl) = leasing.upgrade().map(|l| l.ttl) else {
        return;
    };
    // At a fixed rate, however long a round takes.
    let mut rounds = tokio::time::interval(ttl / 3);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        let Some(held) = leasing.upgrade() else {
            return;
        };
        if held.left.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Err(error) = renew(&store, &held).await {
            tracing::warn!(%error, "cannot renew this host's presence; trying again");
        }
    }
}

/// One renewal: the host's presence with what it would run, then each lease it holds (those
/// found taken over are dropped, and reported by [`Leases::renew_leases`]).
async fn renew(store: &MongoStore, leasing: &Leasing) -> StoreResult<()> {
    let wants = leasing
        .wants
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let ttl_ms = leasing.ttl.as_millis() as i64;
    store
        .hosts_collection()
        .update_one(
            doc! { "_id": &leasing.owner },
            doc! { "$set": { "renewedAtMs": time::now_millis(), "ttlMs": ttl_ms, "wants": wants } },
        )
        .upsert(true)
        .await
        .map_err(failed)?;
    let held: Vec<(String, i64)> = leasing
        .held
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, (_, _, epoch))| (id.clone(), *epoch))
        .collect();
    for (id, epoch) in held {
        // Not one given up meanwhile (its renewal time 0), which stays free.
        let filter = doc! {
            "_id": &id, "owner": &leasing.owner, "epoch": epoch, "renewedAtMs": { "$gt": 0i64 },
        };
        let set = doc! { "$set": { "renewedAtMs": time::now_millis(), "ttlMs": ttl_ms } };
        let renewed = match store.leases_collection().update_one(filter, set).await {
            Ok(renewed) => renewed,
            Err(error) => {
                tracing::warn!(lease = %id, %error, "cannot renew a lease; trying again");
                continue;
            }
        };
        // Unless it was given up (or taken again) meanwhile.
        if renewed.matched_count == 0
            && leasing.epoch(&id) == Some(epoch)
            && let Some((projection, number, _)) = leasing.drop_held(&id)
        {
            leasing
                .lost
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((projection, number));
        }
    }
    Ok(())
}

fn failed(e: mongodb::error::Error) -> StoreError {
    StoreError::backend("generation lease", e)
}

fn int(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        _ => 0,
    }
}

impl MongoStore {
    /// This store, taking leases as `owner`, each lasting `ttl` without renewal: its commits
    /// then need the generation's lease.
    /// A task renews them until the last clone of this store is dropped.
    pub fn with_leases(mut self, owner: &str, ttl: Duration) -> Self {
        let leasing = Arc::new(Leasing {
            owner: owner.to_owned(),
            ttl,
            held: Mutex::new(HashMap::new()),
            wants: Mutex::new(Vec::new()),
            lost: Mutex::new(BTreeSet::new()),
            left: std::sync::atomic::AtomicBool::new(false),
        });
        let renewing = Self {
            client: self.client.clone(),
            db: self.db.clone(),
            feed: Arc::new(tokio::sync::watch::channel(0).0),
            leasing: None,
        };
        tokio::spawn(renew_until_dropped(renewing, Arc::downgrade(&leasing)));
        self.leasing = Some(leasing);
        self
    }

    fn leases_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("leases")
    }

    fn hosts_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("hosts")
    }
}

#[async_trait]
impl Leases for MongoStore {
    fn lease_time(&self) -> Option<Duration> {
        self.leasing.as_ref().map(|l| l.ttl)
    }

    async fn take_lease(&self, generation: &Generation) -> StoreResult<bool> {
        let Some(leasing) = &self.leasing else {
            return Ok(true);
        };
        let id = generation_id(&generation.projection, generation.number);
        let leases = self.leases_collection();
        let now = time::now_millis();
        let found = leases
            .find_one(doc! { "_id": &id })
            .read_concern(ReadConcern::majority())
            .await
            .map_err(failed)?;
        let Some(found) = found else {
            let created = leases
                .insert_one(doc! {
                    "_id": &id, "projection": &generation.projection,
                    "generation": i64::from(generation.number), "owner": &leasing.owner,
                    "epoch": 1i64, "renewedAtMs": now, "ttlMs": leasing.ttl.as_millis() as i64,
                })
                .await;
            return match created {
                Ok(_) => {
                    leasing.hold(&id, generation, 1);
                    Ok(true)
                }
                Err(e) if errors::code(&e) == Some(errors::DUPLICATE_KEY) => Ok(false),
                Err(e) => Err(failed(e)),
            };
        };
        let epoch = int(&found, "epoch");
        let mine = found.get_str("owner").ok() == Some(leasing.owner.as_str());
        // By the lease time its owner renews it under (this host's, for a lease without one).
        let ttl_ms = match int(&found, "ttlMs") {
            0 => leasing.ttl.as_millis() as i64,
            ttl => ttl,
        };
        let expired = now.saturating_sub(int(&found, "renewedAtMs")) > ttl_ms;
        let (filter, set, taken_epoch) = if mine && leasing.epoch(&id) == Some(epoch) {
            (
                doc! { "_id": &id, "owner": &leasing.owner, "epoch": epoch },
                doc! { "renewedAtMs": now },
                epoch,
            )
        } else if mine || expired {
            // Expired, or given up by this very host: taken over under the next epoch, so that
            // any commit still in flight under the old one is refused. Only as it was read: a
            // takeover the server applies late (it waited on a killed commit's transaction)
            // must not take a lease its owner renewed meanwhile.
            let renewed = found.get("renewedAtMs").cloned().unwrap_or(Bson::Null);
            (
                doc! { "_id": &id, "epoch": epoch, "renewedAtMs": renewed },
                doc! {
                    "owner": &leasing.owner, "epoch": epoch + 1, "renewedAtMs": now,
                    "ttlMs": leasing.ttl.as_millis() as i64,
                },
                epoch + 1,
            )
        } else {
            return Ok(false);
        };
        let updated = leases
            .update_one(filter, doc! { "$set": set })
            .await
            .map_err(failed)?;
        if updated.matched_count == 1 {
            leasing.hold(&id, generation, taken_epoch);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn renew_leases(&self, wants: &[(String, u32)]) -> StoreResult<Vec<(String, u32)>> {
        let Some(leasing) = &self.leasing else {
            return Ok(vec![]);
        };
        *leasing.wants.lock().unwrap_or_else(PoisonError::into_inner) = wants
            .iter()
            .map(|(projection, number)| generation_id(projection, *number))
            .collect();
        let lost =
            std::mem::take(&mut *leasing.lost.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(lost.into_iter().collect())
    }

    async fn release_lease(&self, projection: &str, generation: u32) -> StoreResult<()> {
        let Some(leasing) = &self.leasing else {
            return Ok(());
        };
        let id = generation_id(projection, generation);
        let Some((_, _, epoch)) = leasing.drop_held(&id) else {
            return Ok(());
        };
        self.leases_collection()
            .update_one(
                doc! { "_id": &id, "owner": &leasing.owner, "epoch": epoch },
                doc! { "$set": { "renewedAtMs": 0i64 } },
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    fn held_leases(&self) -> Vec<(String, u32)> {
        self.leasing.as_ref().map_or_else(Vec::new, |leasing| {
            leasing
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .map(|(projection, number, _)| (projection.clone(), *number))
                .collect()
        })
    }

    async fn leave(&self) -> StoreResult<()> {
        let Some(leasing) = &self.leasing else {
            return Ok(());
        };
        leasing
            .left
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.hosts_collection()
            .delete_one(doc! { "_id": &leasing.owner })
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn live_hosts(&self) -> StoreResult<Vec<Host>> {
        // Each host by the lease time it renews under.
        let now = time::now_millis();
        let default_ttl = self
            .leasing
            .as_ref()
            .map_or(super::sequencer::LEASE, |l| l.ttl)
            .as_millis() as i64;
        let hosts: Vec<Document> = self
            .hosts_collection()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        let this = self.leasing.as_ref().map(|l| l.owner.as_str());
        Ok(hosts
            .iter()
            .filter(|h| {
                let ttl = match int(h, "ttlMs") {
                    0 => default_ttl,
                    ttl => ttl,
                };
                now.saturating_sub(int(h, "renewedAtMs")) <= ttl
            })
            .filter_map(|h| {
                let name = h.get_str("_id").ok()?.to_owned();
                let wants = h
                    .get_array("wants")
                    .map(|wants| {
                        wants
                            .iter()
                            .filter_map(|w| w.as_str()?.rsplit_once(':'))
                            .filter_map(|(p, n)| Some((p.to_owned(), n.parse().ok()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(Host {
                    this: this == Some(name.as_str()),
                    name,
                    wants,
                })
            })
            .collect())
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        let now = time::now_millis();
        let leases: Vec<Document> = self
            .leases_collection()
            .find(doc! {})
            .sort(doc! { "projection": 1, "generation": 1 })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        Ok(leases
            .iter()
            .map(|l| {
                let renewed = int(l, "renewedAtMs");
                let age = now.saturating_sub(renewed);
                Lease {
                    live: renewed != 0 && age <= int(l, "ttlMs"),
                    projection: l.get_str("projection").unwrap_or_default().to_owned(),
                    generation: int(l, "generation") as u32,
                    owner: l.get_str("owner").unwrap_or_default().to_owned(),
                    epoch: int(l, "epoch") as u64,
                    age_ms: (renewed != 0).then(|| now.saturating_sub(renewed) as u64),
                }
            })
            .collect())
    }
}
