//! The embedded store: one SQLite file in WAL mode (bundled SQLite through `rusqlite`).
//!
//! One writer connection serialises appends and batch commits (SQLite has one writer anyway);
//! readers use a small pool of connections and see committed data only. Because positions are
//! assigned inside the single writer's transaction, they become visible strictly in order.
//! Blocking SQLite calls run on tokio's blocking pool.

mod checkpoints;
mod documents;
mod events;
mod feed;
mod fields;
mod generations;
mod import;
mod operator;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;

use super::{StoreError, StoreResult};
use crate::domain::Position;

/// The lock a host holds on a store file while it serves it (`refold run`): the embedded store
/// takes one host at a time. Released when dropped, or when the process ends however it ends.
pub struct HostLock {
    _file: std::fs::File,
}

/// Take the host lock of the store file at `path` (`PATH.host-lock` beside it, holding the pid
/// of the host), or say which process holds it.
pub fn lock_for_host(path: &Path) -> StoreResult<HostLock> {
    use std::io::{Read, Seek, Write};
    let lock_path = PathBuf::from(format!("{}.host-lock", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::backend(format!("open {}", lock_path.display()), e))?;
    match file.try_lock() {
        Ok(()) => {
            let written = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| write!(file, "{}", std::process::id()))
                .and_then(|()| file.flush());
            written
                .map_err(|e| StoreError::backend(format!("write {}", lock_path.display()), e))?;
            Ok(HostLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_owned(),
                pid => format!("process {pid}"),
            };
            Err(StoreError::InvalidInput(format!(
                "{} is already served by another `refold run` ({holder}): the embedded store \
                 takes one host at a time. Stop that host first, or use MongoDB to run several \
                 hosts on one store",
                path.display()
            )))
        }
        // A file system without locks (some network and FUSE mounts): the host runs as it did
        // before there was a lock, and says so.
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(%error, lock = %lock_path.display(), "cannot lock the store file: nothing keeps a second host off it");
            Ok(HostLock { _file: file })
        }
    }
}

/// The embedded store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    feed: Arc<watch::Sender<Position>>,
    query_budget: QueryBudget,
    /// Appends waiting for the next group commit.
    appends: Arc<events::AppendQueue>,
    /// What an import keeps between its batches.
    import: import::ImportState,
}

/// What one query of a read model may cost the embedded store, which matches and sorts
/// documents itself: past either bound the query is refused ([`StoreError::OverBudget`])
/// instead of holding a reader and the host's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBudget {
    /// Longest a query may run.
    pub time: std::time::Duration,
    /// Most matching documents a query may hold to sort them (a query in `_id` order, the
    /// default, stops at its page and holds no more).
    pub sorted: usize,
}

impl Default for QueryBudget {
    fn default() -> Self {
        Self {
            time: std::time::Duration::from_secs(5),
            sorted: 100_000,
        }
    }
}

impl SqliteStore {
    /// Open (creating if missing) the store in this file.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_path_buf();
        let (writer, path, head) = blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(StoreError::InvalidInput(format!(
                    "cannot create the store {}: folder {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
            let conn = Connection::open(&path)
                .map_err(|e| StoreError::backend(format!("open {}", path.display()), e))?;
            schema::configure_writer(&conn)?;
            schema::migrate(&conn)?;
            let head = events::head(&conn)?;
            Ok((conn, path, head))
        })
        .await?;
        let (sender, _) = watch::channel(head);
        let feed = Arc::new(sender);
        feed::spawn_poller(path.clone(), Arc::downgrade(&feed), head);
        Ok(Self {
            path,
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            feed,
            query_budget: QueryBudget::default(),
            appends: Arc::default(),
            import: import::ImportState::default(),
        })
    }

    /// The store with another budget for each query of a read model.
    pub fn with_query_budget(mut self, budget: QueryBudget) -> Self {
        self.query_budget = budget;
        self
    }

    /// The file behind the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_reader(path: &Path) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::backend(format!("open {} for reading", path.display()), e))?;
        schema::configure_reader(&conn)?;
        Ok(conn)
    }

    /// Run `f` with the writer connection on the blocking pool, its commits flushed to the disk
    /// unless `f` says otherwise (see `schema::UNFLUSHED`).
    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (writer, appends) = (Arc::clone(&self.writer), Arc::clone(&self.appends));
        blocking(move || {
            let mut conn = appends
                .other_writer(|| writer.lock())
                .map_err(|_| StoreError::backend("writer", "a previous writer panicked"))?;
            conn.execute_batch(schema::FLUSHED)
                .map_err(|e| StoreError::backend("writer", e))?;
            f(&mut conn)
        })
        .await
    }

    /// Run `f` with a pooled reader connection on the blocking pool.
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut pool| pool.pop());
            let mut conn = match pooled {
                Some(conn) => conn,
                None => Self::open_reader(&path)?,
            };
            let result = f(&mut conn);
            if let Ok(mut pool) = readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
    }
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::backend("blocking task", e))?
}

/// Quote an identifier that [`crate::domain::Manifest::validate`] has already restricted to
/// `[a-z0-9_-]`; the quotes make `-` legal in SQL.
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}
