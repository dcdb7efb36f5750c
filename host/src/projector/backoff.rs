//! Exponential backoff between retries, for store calls and for events that failed.

use std::time::Duration;

/// First pause.
const FIRST: Duration = Duration::from_millis(50);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff, doubling from 50 ms up to [`MAX_BACKOFF`].
#[derive(Debug)]
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(FIRST)
    }

    /// Sleep for the current pause, then double it.
    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}
