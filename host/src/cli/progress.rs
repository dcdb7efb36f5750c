//! Progress bars for projectors catching up.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::domain::Position;
use crate::projector::{ProjectorState, ProjectorStatus};

/// Show one bar per projector until each has reached `head` or stopped.
pub async fn until_caught_up(statuses: Vec<watch::Receiver<ProjectorStatus>>, head: Position) {
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>20} [{bar:40}] {pos:>9}/{len} {per_sec:>12} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let bars: Vec<(ProgressBar, watch::Receiver<ProjectorStatus>)> = statuses
        .into_iter()
        .map(|rx| {
            let bar = multi.add(ProgressBar::new(head));
            bar.set_style(style.clone());
            bar.set_prefix(rx.borrow().projection.clone());
            (bar, rx)
        })
        .collect();
    loop {
        let mut done = true;
        for (bar, rx) in &bars {
            let status = rx.borrow().clone();
            bar.set_position(status.checkpoint.min(head));
            let finished = status.state == ProjectorState::Stopped
                || (status.state == ProjectorState::Live && status.checkpoint >= head);
            if finished && !bar.is_finished() {
                match &status.error {
                    Some(error) => bar.abandon_with_message(format!("stopped: {error}")),
                    None => bar.finish_with_message("caught up"),
                }
            }
            done &= finished;
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
