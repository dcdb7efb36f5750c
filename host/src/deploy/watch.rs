//! Watching the projections folder with `notify`, debounced.
//!
//! Events arrive from notify's thread; [`FolderWatcher::next`] waits for the first one, then
//! keeps collecting until the folder has been quiet for [`QUIET`], so a file written in several
//! chunks or replaced by a rename is applied once, whole. A file still being written after the
//! quiet period fails validation and is refused; its next write triggers another attempt.
//! Changes notify cannot describe file by file (a folder created, moved or removed, or a lost
//! event queue) ask for a rescan of the whole folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::is_component;

/// How long the folder must be quiet before a batch of changes is applied.
pub const QUIET: Duration = Duration::from_millis(50);

/// Changes to apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Component files created, written, renamed or removed.
    pub paths: Vec<PathBuf>,
    /// The whole folder must be rescanned.
    pub rescan: bool,
}

enum Signal {
    Path(PathBuf),
    Rescan,
}

/// A debounced watch on a folder, recursive.
pub struct FolderWatcher {
    _watcher: notify::RecommendedWatcher,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// Changes received but not returned yet; kept here, not in the future, so that
    /// [`FolderWatcher::next`] is cancel-safe inside `select!`.
    pending: Changes,
}

impl FolderWatcher {
    /// Start watching a folder.
    pub fn new(dir: &Path) -> notify::Result<Self> {
        let (tx, signals) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let signals = match event {
                    Ok(event) => classify(&event),
                    Err(error) => {
                        tracing::warn!(%error, "folder watch error; rescanning");
                        vec![Signal::Rescan]
                    }
                };
                for signal in signals {
                    let _ = tx.send(signal);
                }
            })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        Ok(Self {
            _watcher: watcher,
            signals,
            pending: Changes::default(),
        })
    }

    /// The next batch of changes, once the folder has been quiet for [`QUIET`]; `None` when
    /// the watch ended. Cancel-safe: changes received by a cancelled call are returned by the
    /// next one.
    pub async fn next(&mut self) -> Option<Changes> {
        if self.pending == Changes::default() {
            let first = self.signals.recv().await?;
            add(&mut self.pending, first);
        }
        while let Ok(Some(signal)) = tokio::time::timeout(QUIET, self.signals.recv()).await {
            add(&mut self.pending, signal);
        }
        let mut changes = std::mem::take(&mut self.pending);
        changes.paths.sort();
        changes.paths.dedup();
        Some(changes)
    }
}

fn add(changes: &mut Changes, signal: Signal) {
    match signal {
        Signal::Path(path) => changes.paths.push(path),
        Signal::Rescan => changes.rescan = true,
    }
}

/// Temporary files of editors and copy tools (`.name.swp`, `.name.wasm.tmp`).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn classify(event: &notify::Event) -> Vec<Signal> {
    if event.need_rescan() {
        return vec![Signal::Rescan];
    }
    if matches!(event.kind, EventKind::Access(_)) {
        // Opening or reading a file changes nothing; a close after writing follows a modify
        // event that is already queued.
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter_map(|path| {
            if is_component(path) {
                Some(Signal::Path(path.clone()))
            } else if path.is_dir()
                || matches!(
                    event.kind,
                    EventKind::Remove(notify::event::RemoveKind::Folder)
                )
                || (matches!(
                    event.kind,
                    EventKind::Modify(notify::event::ModifyKind::Name(_))
                ) && !is_hidden(path))
            {
                Some(Signal::Rescan)
            } else {
                None
            }
        })
        .collect()
}
