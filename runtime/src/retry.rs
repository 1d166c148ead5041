//! Sending a call again while it fails for a while: a JetStream stream between leaders, a
//! nats-server lost with an acknowledgement, a coordinator failing over to its standby. One
//! helper, so every such loop pauses, grows its pause and gives up the same way.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Pauses that double from `first` up to `max`, none of them ending past the give-up time.
#[derive(Debug, Clone)]
pub struct Backoff {
    give_up: Instant,
    pause: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses for calls that may go on for `within` from now.
    pub fn within(within: Duration, first: Duration, max: Duration) -> Backoff {
        Backoff::until(Instant::now() + within, first, max)
    }

    /// Pauses for calls that may go on until `give_up` (tokio's clock, std's converts with `into`).
    pub fn until(give_up: Instant, first: Duration, max: Duration) -> Backoff {
        Backoff { give_up, pause: first, max: max.max(first) }
    }

    /// Whether the next pause ends before the give-up time.
    pub fn can_wait(&self) -> bool {
        Instant::now() + self.pause < self.give_up
    }

    /// Waits the next pause and doubles the one after (up to the maximum).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(self.max);
    }
}

/// Runs `call` until it succeeds, fails with an error `retryable` does not accept, or the next
/// pause of `backoff` would end past its give-up time; returns that last outcome. `retryable`
/// is asked only when another try will follow (the place to log or count the retry).
pub async fn retry<T, E, F, Fut>(
    mut backoff: Backoff,
    mut retryable: impl FnMut(&E) -> bool,
    mut call: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match call().await {
            Err(e) if backoff.can_wait() && retryable(&e) => backoff.wait().await,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_doubling_pauses() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let backoff = Backoff::within(Duration::from_secs(10), Duration::from_millis(100), Duration::from_millis(300));
        let out: Result<u32, &str> = retry(
            backoff,
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 4 {
                    Err("not yet")
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(out, Ok(4));
        // 100 + 200 + 300 + 300 ms of pauses.
        assert_eq!(started.elapsed(), Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_last_error_and_never_retries_what_is_not_retryable() {
        let calls = AtomicU32::new(0);
        let backoff = Backoff::within(Duration::from_millis(250), Duration::from_millis(100), Duration::from_secs(1));
        let out: Result<(), u32> =
            retry(backoff, |_| true, || async { Err(calls.fetch_add(1, Ordering::SeqCst)) }).await;
        // Tries at 0 and 100 ms; a pause of 200 ms more would end past 250 ms.
        assert_eq!(out, Err(1));

        calls.store(0, Ordering::SeqCst);
        let backoff = Backoff::within(Duration::from_secs(10), Duration::from_millis(10), Duration::from_secs(1));
        let out: Result<(), u32> =
            retry(backoff, |e| *e != 0, || async { Err(calls.fetch_add(1, Ordering::SeqCst)) }).await;
        assert_eq!(out, Err(0));
    }
}
