//! The embedded store's change feed across processes.
//!
//! Appends made through this process ring the feed directly. Appends made by another process
//! (e.g. `refold append` beside `refold run`) are noticed by a small thread that watches
//! `PRAGMA data_version`, which changes when another connection commits.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::watch;

use crate::domain::Position;

/// How often another process's commits are looked for.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub(super) fn spawn_poller(path: PathBuf, feed: Weak<watch::Sender<Position>>, mut head: Position) {
    let spawned = std::thread::Builder::new().name("refold-sqlite-feed".into()).spawn(move || {
        let Ok(conn) = super::SqliteStore::open_reader(&path) else {
            tracing::warn!(path = %path.display(), "change feed: cannot open the store; other processes' appends will not wake projectors");
            return;
        };
        let mut version = data_version(&conn);
        loop {
            std::thread::sleep(POLL_INTERVAL);
            let Some(feed) = feed.upgrade() else { return };
            let now = data_version(&conn);
            if now == version {
                continue;
            }
            version = now;
            if let Ok(new_head) = super::events::head(&conn)
                && new_head > head
            {
                head = new_head;
                crate::store::ring(&feed, new_head);
            }
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "change feed: cannot start the polling thread");
    }
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}
