//! `refold run`: serve projections from a folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::StoreArgs;
use crate::deploy::{CachedCode, Changes, Deployer, FolderPublisher, FolderWatcher, Outcome};
use crate::domain::FailurePolicy;
use crate::engine::{CodeCache, Engine, Limits};
use crate::projector::{CodeSource, HostView, Supervisor};
use crate::store::{self, Store};

/// How often the store is checked for generation changes (a cut-over to finish, a rebuild or
/// rollback requested by another process).
const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// Arguments of `refold run` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Folder of projection components.
    #[arg(long, default_value = "projections")]
    projections: PathBuf,
    /// Exit once every projection has caught up with the head (and every new generation has
    /// taken over), instead of watching the folder and following live.
    #[arg(long)]
    exit_when_caught_up: bool,
    /// On MongoDB, where several hosts may serve the same projections: how long, in
    /// milliseconds, a host's lease on a generation lasts without renewal. One host runs each
    /// generation; when it stops renewing (killed, paused, cut off), another takes the
    /// generation over after this long, and the first can no longer commit to it. Hosts renew
    /// three times per lease time and share the generations evenly. Ignored on the embedded
    /// store, which one host holds.
    #[arg(long, env = "REFOLD_LEASE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    lease_ms: u64,
    /// This host's name: in its leases (with its process id), its metrics' `host` label, and
    /// the source of its folder's publications on MongoDB, which a restarted host must name
    /// alike to withdraw what its folder published before [default: the machine's name]. Give
    /// one where machine names change across restarts (containers).
    #[arg(long, env = "REFOLD_HOST_NAME", value_name = "NAME")]
    host_name: Option<String>,
    #[command(flatten)]
    host: HostArgs,
    #[command(flatten)]
    http: HttpArgs,
}

/// Settings of the HTTP API.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address of the HTTP API and console. Loopback by default; another address (such as
    /// `0.0.0.0:7070`, to serve other machines) needs an API token. Port 0 picks a free port.
    #[arg(long, env = "REFOLD_HTTP", default_value = "127.0.0.1:7070")]
    pub http: SocketAddr,
    /// Serve no HTTP API.
    #[arg(long)]
    pub no_http: bool,
    /// API token, at least 16 characters: every route but the console page, `/healthz`,
    /// `/readyz` and `/openapi.json` then needs `Authorization: Bearer TOKEN` (the console
    /// asks for it once). Prefer the environment variable or --api-token-file to keep it out of
    /// the process list.
    #[arg(long, env = "REFOLD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File whose first line is the API token; it wins over --api-token and REFOLD_API_TOKEN.
    #[arg(long, env = "REFOLD_API_TOKEN_FILE", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
    /// A host name clients use to reach the API (repeat, or separate with commas). Requests
    /// whose `Host` is not an IP address, `localhost` or one of these are refused, so a web page
    /// cannot reach the API through a name it controls (DNS rebinding).
    #[arg(
        long = "api-host",
        value_name = "NAME",
        env = "REFOLD_API_HOSTS",
        value_delimiter = ','
    )]
    pub api_hosts: Vec<String>,
}

/// A running HTTP API: publishes what the host runs, stops with the host.
pub(super) struct Api {
    view: watch::Sender<HostView>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    /// The address it listens on.
    pub address: SocketAddr,
}

impl HttpArgs {
    /// The access settings these arguments give.
    fn access(&self) -> anyhow::Result<crate::api::Access> {
        let token = match &self.api_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the API token file {}", path.display())
                })?;
                Some(text.lines().next().unwrap_or_default().trim().to_owned())
            }
            None => self.api_token.clone(),
        };
        crate::api::Access::new(token, &self.api_hosts).map_err(|e| match &self.api_token_file {
            Some(path) => anyhow::anyhow!("{e} (token from {})", path.display()),
            None => anyhow::anyhow!("{e}"),
        })
    }

    /// Bind the address and serve, unless `--no-http`; traces load code from `code`.
    pub(super) async fn start(
        &self,
        store: Arc<dyn Store>,
        code: Arc<dyn CodeSource>,
    ) -> anyhow::Result<Option<Api>> {
        if self.no_http {
            return Ok(None);
        }
        let access = self.access()?;
        if !self.http.ip().is_loopback() && !access.has_token() {
            anyhow::bail!(
                "refusing to serve the HTTP API on {} without a token: anyone who can reach that \
                 address could append events and change projections. Give one with --api-token, \
                 REFOLD_API_TOKEN or --api-token-file, or listen on a loopback address such as \
                 127.0.0.1:7070",
                self.http
            );
        }
        let listener = tokio::net::TcpListener::bind(self.http)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} for the HTTP API (change --http, or --no-http to serve none)",
                    self.http
                )
            })?;
        let address = listener.local_addr()?;
        let (view, watching) = watch::channel(HostView::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(crate::api::serve(
            listener,
            store,
            watching,
            access,
            code,
            async {
                let _ = stopped.await;
            },
        ));
        tracing::info!(%address, "HTTP API on http://{address}/api, console on http://{address}/");
        Ok(Some(Api {
            view,
            stop,
            task,
            address,
        }))
    }
}

impl Api {
    /// Show what the supervisor runs now.
    pub(super) fn publish(&self, supervisor: &Supervisor) {
        self.view.send_replace(supervisor.view());
    }

    /// Stop serving (requests in flight finish).
    pub(super) async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP API stopped with an error"),
            Err(error) => tracing::warn!(%error, "the HTTP API task failed"),
            Ok(Ok(())) => {}
        }
    }
}

/// Settings of the wasm engine: the limits of a guest and the code cache.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Memory cap per projection instance, in MiB.
    #[arg(long, env = "REFOLD_MEMORY_MIB", default_value_t = 128)]
    pub memory_mib: usize,
    /// Deadline of one batch, in milliseconds; a guest that runs longer fails its batch. Time the
    /// host spends waiting on the store for the guest's reads does not count.
    #[arg(long, env = "REFOLD_BATCH_DEADLINE_MS", default_value_t = 10_000)]
    pub batch_deadline_ms: u64,
    /// Folder of the compiled-code cache, shared by runs on this machine [default:
    /// $XDG_CACHE_HOME/refold/code or ~/.cache/refold/code].
    #[arg(long, env = "REFOLD_CODE_CACHE")]
    pub code_cache: Option<PathBuf>,
}

/// Settings of a host that runs projections.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Failure policy of a projection, overriding its manifest: `NAME=stop` parks it at an event
    /// it keeps failing on, `NAME=skip` records the event as a dead letter and goes on; `:N`
    /// sets the attempts first (`payments=skip:5`); `*=...` applies to every projection.
    /// Repeatable. Default: the manifest's, else `stop:3`.
    #[arg(long = "on-failure", env = "REFOLD_ON_FAILURE", value_delimiter = ',', value_parser = parse_failure_policy, value_name = "NAME=POLICY")]
    pub on_failure: Vec<(String, FailurePolicy)>,
}

fn parse_failure_policy(text: &str) -> Result<(String, FailurePolicy), String> {
    let (name, policy) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=POLICY (e.g. payments=skip:5)"))?;
    if name.is_empty() {
        return Err(format!("`{text}` names no projection (use `*` for all)"));
    }
    Ok((name.to_owned(), policy.parse()?))
}

impl HostArgs {
    /// The wasm engine with these limits and the code cache.
    pub(super) fn engine(&self) -> anyhow::Result<Arc<Engine>> {
        self.engine.engine()
    }
}

impl EngineArgs {
    fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib.saturating_mul(1024 * 1024),
            deadline: Duration::from_millis(self.batch_deadline_ms.max(1)),
            ..Limits::default()
        }
    }

    fn code_cache_dir(&self) -> Option<PathBuf> {
        self.code_cache.clone().or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("refold").join("code"))
        })
    }

    /// The wasm engine with these limits and the code cache.
    pub(super) fn engine(&self) -> anyhow::Result<Arc<Engine>> {
        let cache = match self.code_cache_dir() {
            Some(dir) => Some(
                CodeCache::open(&dir)
                    .with_context(|| format!("opening the code cache {}", dir.display()))?,
            ),
            None => {
                tracing::warn!("no code cache: set --code-cache or HOME");
                None
            }
        };
        Ok(Arc::new(Engine::new(self.limits(), cache)?))
    }
}

/// Apply every component of a folder, reporting refusals.
pub(super) async fn start_folder(
    store: Arc<dyn Store>,
    dir: &Path,
    host: &HostArgs,
    engine: Arc<Engine>,
) -> anyhow::Result<Deployer> {
    let mut deployer = Deployer::new(engine, store, dir);
    deployer
        .supervisor
        .set_failure_policies(host.on_failure.iter().cloned().collect());
    let outcomes = deployer.scan().await?;
    report(outcomes);
    Ok(deployer)
}

/// Print refusals (the log has every outcome).
pub(super) fn report(outcomes: Vec<(String, Outcome)>) {
    for (component, outcome) in outcomes {
        if let Outcome::Refused { error } = outcome {
            eprintln!("refused {component}: {error}");
        }
    }
}

/// Apply a batch of folder changes.
pub(super) async fn apply_changes(deployer: &mut Deployer, changes: Changes) {
    let outcomes = if changes.rescan {
        rescanned(deployer.scan().await)
    } else {
        deployer.apply_all(changes.paths).await
    };
    report(outcomes);
}

/// The outcomes of a rescan of the folder; none, logged, when it cannot be read.
fn rescanned(
    scan: Result<Vec<(String, Outcome)>, crate::deploy::DeployError>,
) -> Vec<(String, Outcome)> {
    scan.unwrap_or_else(|error| {
        tracing::error!(%error, "cannot rescan the projections folder");
        Vec::new()
    })
}

/// How a host deploys: its folder, or, on a store that keeps components, what the store
/// publishes (its folder publishing to it).
enum Deploys {
    Folder,
    Store(Box<FolderPublisher>),
}

impl Deploys {
    /// Deploy the folder's components, or publish them and deploy what the store publishes.
    async fn start(
        store: &Arc<dyn Store>,
        dir: &Path,
        host: &HostArgs,
        host_name: &str,
        engine: Arc<Engine>,
    ) -> anyhow::Result<(Self, Deployer)> {
        if !store.publishes() {
            let deployer = start_folder(Arc::clone(store), dir, host, engine).await?;
            return Ok((Self::Folder, deployer));
        }
        let mut publisher =
            FolderPublisher::new(Arc::clone(&engine), Arc::clone(store), dir, host_name);
        report(publisher.publish_folder().await?);
        let mut deployer = Deployer::new(engine, Arc::clone(store), dir);
        deployer
            .supervisor
            .set_failure_policies(host.on_failure.iter().cloned().collect());
        report(deployer.follow_store().await?);
        Ok((Self::Store(Box::new(publisher)), deployer))
    }

    /// Apply a batch of folder changes: to the deployer, or published.
    async fn changed(&mut self, deployer: &mut Deployer, changes: Changes) {
        let Self::Store(publisher) = self else {
            return apply_changes(deployer, changes).await;
        };
        let outcomes = if changes.rescan {
            rescanned(publisher.publish_folder().await)
        } else {
            publisher.publish(changes.paths).await
        };
        report(outcomes);
        self.follow(deployer).await;
    }

    /// Publish what failed to publish before, and deploy what the store publishes now.
    async fn follow(&mut self, deployer: &mut Deployer) {
        let Self::Store(publisher) = self else {
            return;
        };
        report(publisher.publish_failed().await);
        match deployer.follow_store().await {
            Ok(outcomes) => report(outcomes),
            Err(error) => tracing::warn!(%error, "cannot read the published components; retrying"),
        }
    }
}

/// Reconcile projections whose generations changed in the store (cut-overs, and rebuilds or
/// rollbacks from other processes).
pub(super) async fn sync(deployer: &mut Deployer) {
    if let Err(error) = deployer.sync().await {
        tracing::warn!(%error, "cannot reconcile with the store; retrying");
    }
}

/// Resolve when Ctrl-C or SIGTERM arrives.
pub(super) async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// This process, as named in the leases it holds: the host's name, the process id, and a
/// random suffix (containers that share a name may all be process 1).
fn owner_name(host: &str) -> String {
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let lease = Duration::from_millis(args.lease_ms);
    let host = args
        .host_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(crate::machine::name);
    let owner = owner_name(&host);
    crate::metrics::set_host(&owner);
    let (store, tasks) = store::open_serving(&args.store.store, &owner, lease).await?;
    // Absolute, as the watcher reports changed paths: components are named by their path
    // under it.
    let projections = std::path::absolute(&args.projections).with_context(|| {
        format!(
            "projections folder {} has no absolute path",
            args.projections.display()
        )
    })?;
    // Watch before the first scan, so a file dropped meanwhile is not missed.
    let mut watcher = if args.exit_when_caught_up {
        None
    } else {
        let dir = &projections;
        anyhow::ensure!(
            dir.is_dir(),
            "projections folder {} does not exist or is not a folder",
            dir.display()
        );
        Some(
            FolderWatcher::new(dir)
                .with_context(|| format!("watching {}", args.projections.display()))?,
        )
    };
    let engine = args.host.engine()?;
    let api = match watcher {
        Some(_) => {
            let code = Arc::new(CachedCode(Arc::clone(&engine)));
            args.http.start(Arc::clone(&store), code).await?
        }
        None => None,
    };
    let (mut deploys, mut deployer) =
        Deploys::start(&store, &projections, &args.host, &host, engine).await?;
    let publish = |deployer: &Deployer| {
        if let Some(api) = &api {
            api.publish(&deployer.supervisor);
        }
    };
    publish(&deployer);
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    match watcher.as_mut() {
        None => {
            anyhow::ensure!(
                deployer.supervisor.deployed().next().is_some(),
                "no projection of {} could start",
                args.projections.display()
            );
            let head = store.head().await?;
            while !deployer.supervisor.caught_up(head) {
                tick.tick().await;
                sync(&mut deployer).await;
            }
        }
        Some(watcher) => {
            tracing::info!(store = %args.store.store, projections = %args.projections.display(), "serving and watching the projections folder; Ctrl-C to stop");
            let stop = stop_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    changes = watcher.next() => match changes {
                        Some(changes) => deploys.changed(&mut deployer, changes).await,
                        None => break,
                    },
                    _ = tick.tick() => {
                        deploys.follow(&mut deployer).await;
                        sync(&mut deployer).await;
                    }
                }
                publish(&deployer);
            }
        }
    }
    if let Some(api) = api {
        api.shutdown().await;
    }
    let mut failed = false;
    let stopped = deployer.supervisor.shutdown().await;
    tasks.stop().await;
    for (name, reason) in stopped {
        if !matches!(
            reason,
            crate::projector::DropReason::Shutdown | crate::projector::DropReason::Superseded(_)
        ) {
            failed = true;
            eprintln!("{name}: {reason}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
