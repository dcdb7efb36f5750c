//! A MongoDB-compatible server for tests.
//!
//! When `REFOLD_TEST_MONGODB_URI` is set (a real replica set, e.g.
//! `mongodb://localhost:27017/?replicaSet=rs0`), tests use it. Otherwise one SecantusDB server
//! (`secantusd-py`, installed by `scripts/setup`) is started per test binary on a free loopback
//! port, in memory, with test commands (fail points) enabled. Each test uses a database of its
//! own.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, doc};

/// Environment variable naming a real MongoDB replica set for the tests.
pub const URI_VARIABLE: &str = "REFOLD_TEST_MONGODB_URI";

/// A test server: the shared one, or one a test owns because it injects faults that would
/// disturb other tests (fail points and step-downs are server-wide).
pub struct Server {
    base: String,
    child: Option<Child>,
    /// Set to stop the thread that makes SecantusDB end abandoned transactions (see
    /// [`end_abandoned_transactions`]).
    stop_reaper: Option<Arc<AtomicBool>>,
}

impl Server {
    /// Start a SecantusDB server of its own, killed when this is dropped.
    pub fn dedicated() -> Self {
        Self::start(spawn_secantus)
    }

    /// Start a SecantusDB server that lives as long as the test process. The kernel's
    /// parent-death signal follows the spawning *thread*, so it is spawned from a thread that
    /// never ends.
    fn for_the_process() -> Self {
        Self::start(|port| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(spawn_secantus(port));
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("SecantusDB spawner thread")
        })
    }

    fn start(spawn: impl FnOnce(u16) -> Child) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "SecantusDB exited at start ({status}): is it installed? Run scripts/setup, or set {URI_VARIABLE}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "SecantusDB did not listen on port {port} within 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let base = format!("mongodb://127.0.0.1:{port}/?replicaSet=secantus");
        let stop_reaper = Arc::new(AtomicBool::new(false));
        end_abandoned_transactions(&base, &stop_reaper);
        Self {
            base,
            child: Some(child),
            stop_reaper: Some(stop_reaper),
        }
    }

    /// A URI for a database of its own on this server.
    pub fn fresh_uri(&self, label: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}_{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        with_database(&self.base, &name)
    }
}

impl Server {
    /// The address of the server (its first host), for a proxy in front of it.
    pub fn address(&self) -> std::net::SocketAddr {
        use std::net::ToSocketAddrs;
        let rest = self.base.split_once("://").map_or("", |(_, r)| r);
        let hosts = rest.split(['/', '?']).next().unwrap_or_default();
        let host = hosts.rsplit('@').next().unwrap_or_default();
        let first = host.split(',').next().unwrap_or_default();
        first
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("cannot resolve `{first}` from {}", self.base))
    }

    /// `uri` (one of [`Self::fresh_uri`]) reaching the server through a proxy on a loopback
    /// `port`, as a direct connection: the driver must not learn the server's own address from
    /// the replica set and go around the proxy.
    pub fn through_proxy(&self, uri: &str, port: u16) -> String {
        let (scheme, rest) = uri.split_once("://").expect("URI with a scheme");
        let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let credentials = authority
            .rsplit_once('@')
            .map(|(c, _)| format!("{c}@"))
            .unwrap_or_default();
        let (database, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut options: Vec<&str> = query
            .split('&')
            .filter(|o| {
                !o.is_empty()
                    && !o.starts_with("replicaSet=")
                    && !o.starts_with("directConnection=")
            })
            .collect();
        options.push("directConnection=true");
        format!(
            "{scheme}://{credentials}127.0.0.1:{port}/{database}?{}",
            options.join("&")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop_reaper {
            stop.store(true, Ordering::Relaxed);
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(URI_VARIABLE) {
        Ok(uri) => Server {
            base: uri,
            child: None,
            stop_reaper: None,
        },
        Err(_) => Server::for_the_process(),
    })
}

/// A server for a test that injects faults: a SecantusDB of its own, or, when
/// `REFOLD_TEST_MONGODB_URI` is set, that server only if `REFOLD_TEST_MONGODB_FAULTS=1` says it
/// may be disturbed (it needs `enableTestCommands`); `None` otherwise.
pub fn fault_server() -> Option<Server> {
    match std::env::var(URI_VARIABLE) {
        Ok(uri) if std::env::var("REFOLD_TEST_MONGODB_FAULTS").as_deref() == Ok("1") => {
            Some(Server {
                base: uri,
                child: None,
                stop_reaper: None,
            })
        }
        Ok(_) => None,
        Err(_) => Some(Server::dedicated()),
    }
}

/// mongod aborts a transaction whose client is gone once it has been idle for
/// `transactionLifetimeLimitSeconds` (60 s), on a timer. SecantusDB aborts it only when another
/// transaction command arrives, so a host killed mid-commit would hold its locks (a lease, say)
/// for as long as no other transaction runs. A transaction begun and aborted every second, on a
/// thread of its own until `stop` is set, makes SecantusDB do as mongod does.
fn end_abandoned_transactions(base: &str, stop: &Arc<AtomicBool>) {
    let (uri, stop) = (with_database(base, "secantus_reaper"), Arc::clone(stop));
    let tick = async move {
        let Ok(client) = mongodb::Client::with_uri_str(&uri).await else {
            return;
        };
        let ticks = client
            .database("secantus_reaper")
            .collection::<Document>("ticks");
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut session) = client.start_session().await
                && session.start_transaction().await.is_ok()
            {
                let _ = ticks.find_one(doc! {}).session(&mut session).await;
                let _ = session.abort_transaction().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(tick);
        }
    });
}

/// Start SecantusDB; it dies with the thread that spawned it (PR_SET_PDEATHSIG), so no server
/// outlives its tests.
fn spawn_secantus(port: u16) -> Child {
    // Through the interpreter pip installed it into, not the `secantusd-py` script: a fresh
    // pyenv does not put new console scripts on the PATH until `pyenv rehash`.
    let mut command = Command::new("python3");
    command
        .args(["-c", "import sys; from secantus.cli import main; sys.argv[0] = 'secantusd-py'; sys.exit(main())"])
        .args([
            "--port",
            &port.to_string(),
            "--storage-path",
            ":memory:",
            "--enable-test-commands",
            "--log-level",
            "WARNING",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start SecantusDB with python3 ({e}): run scripts/setup, or set {URI_VARIABLE}"
        )
    })
}

/// A URI for a database of its own on the shared test server.
pub fn fresh_uri(label: &str) -> String {
    server().fresh_uri(label)
}

/// The same server URI with another database.
pub fn with_database(uri: &str, database: &str) -> String {
    let (scheme, rest) = uri.split_once("://").expect("URI with a scheme");
    let (hosts, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{hosts}/{database}{query}")
}

/// A driver client and the database a URI names.
pub async fn database(uri: &str) -> (mongodb::Client, mongodb::Database) {
    let options = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("parse URI");
    let name = options
        .default_database
        .clone()
        .expect("URI names a database");
    let client = mongodb::Client::with_options(options).expect("client");
    let db = client.database(&name);
    (client, db)
}

/// Run an admin command (fail points, step-downs); errors are returned, not raised.
pub async fn admin(uri: &str, command: Document) -> Result<Document, mongodb::error::Error> {
    let (client, _) = database(uri).await;
    client.database("admin").run_command(command).await
}

/// Fail points are global to the server (mongod keeps one `failCommand` configuration, which
/// the next one replaces): a test that sets them holds this lock, so such tests run one at a time.
pub async fn fail_points() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Turn on the `failCommand` fail point for the next `times` calls of `commands` made by
/// clients named `app` (`appName` in their URI), with `data` saying how they fail
/// (`{"closeConnection": true}`, `{"errorCode": 91}`, `{"writeConcernError": {...}}`).
pub async fn fail_app_commands(
    uri: &str,
    app: &str,
    commands: &[&str],
    times: i32,
    data: Document,
) {
    let mut data = data;
    data.insert("failCommands", commands);
    data.insert("appName", app);
    admin(
        uri,
        doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": times },
            "data": data,
        },
    )
    .await
    .expect("configure fail point");
}

/// Turn the `failCommand` fail point off.
pub async fn fail_point_off(uri: &str) {
    admin(
        uri,
        doc! { "configureFailPoint": "failCommand", "mode": "off" },
    )
    .await
    .expect("turn the fail point off");
}

/// `failCommand` data for a command that runs but whose answer says its write concern failed:
/// the driver cannot tell whether a commit so answered happened.
pub fn lost_answers() -> Document {
    doc! { "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "injected" } }
}

/// Turn on the `failCommand` fail point for `commands`, failing the next `times` calls.
pub async fn fail_commands(uri: &str, commands: &[&str], times: i32, code: i32, labels: &[&str]) {
    admin(
        uri,
        doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": times },
            "data": { "failCommands": commands, "errorCode": code, "errorLabels": labels },
        },
    )
    .await
    .expect("configure fail point");
}

/// Every view of the database (the stable names of read models): name -> sorted documents as
/// relaxed Extended JSON, read with the plain driver.
pub async fn dump(
    uri: &str,
) -> std::collections::BTreeMap<String, Vec<(String, serde_json::Value)>> {
    use futures_util::TryStreamExt;
    let (_client, db) = database(uri).await;
    let mut views = db
        .list_collection_names()
        .filter(doc! { "type": "view" })
        .await
        .expect("list views");
    views.sort();
    let mut models = std::collections::BTreeMap::new();
    for view in views {
        let docs: Vec<Document> = db
            .collection::<Document>(&view)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("read view");
        let rows = docs
            .into_iter()
            .map(|d| {
                let id = match d.get("_id") {
                    Some(Bson::String(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (id, Bson::Document(d).into_relaxed_extjson())
            })
            .collect();
        models.insert(view, rows);
    }
    models
}
