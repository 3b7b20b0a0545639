//! Rate limiting per Cal.com API key (governor's GCRA), on tokio's clock so tests can pause
//! time. Over the limit a caller waits: requests are never dropped. Waiting happens in the
//! tenant's own actor, so one tenant at its limit never holds up another. A 429 from Cal.com
//! blocks the key until its `Retry-After` has passed, on top of our own budget.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// governor's clock, read from tokio (paused in tests). Instants are offsets from `origin`.
#[derive(Clone, Copy, Debug)]
pub struct TokioGovernorClock {
    origin: Instant,
}

impl GovernorClock for TokioGovernorClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Instant::now() - self.origin
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioGovernorClock, NoOpMiddleware<Duration>>;

struct KeyBudget {
    per_min: u32,
    limiter: Direct,
    /// Set from Cal.com's `Retry-After`: nothing goes out before it.
    blocked_until: Mutex<Option<Instant>>,
}

/// The wait ended because the process is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate-limit wait interrupted by shutdown")]
pub struct Interrupted;

/// One budget per API key (by its SHA-256, so keys are not kept in memory twice).
pub struct Limiters {
    clock: TokioGovernorClock,
    budgets: Mutex<HashMap<[u8; 32], Arc<KeyBudget>>>,
}

impl Default for Limiters {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiters {
    pub fn new() -> Self {
        Self {
            clock: TokioGovernorClock {
                origin: Instant::now(),
            },
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `api_key` may send one request at `per_min` requests per minute (the
    /// burst is one minute's worth, as Cal.com counts per minute). Returns how long it waited.
    pub async fn acquire(
        &self,
        api_key: &str,
        per_min: u32,
        shutdown: &CancellationToken,
    ) -> Result<Duration, Interrupted> {
        let budget = self.budget(api_key, per_min);
        let started = Instant::now();
        loop {
            let blocked = *budget.blocked_until.lock().expect("limiter lock poisoned");
            if let Some(until) = blocked.filter(|u| *u > Instant::now()) {
                sleep_until(until, shutdown).await?;
                continue;
            }
            match budget.limiter.check() {
                Ok(()) => return Ok(started.elapsed()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(GovernorClock::now(&self.clock));
                    sleep_until(Instant::now() + wait, shutdown).await?;
                }
            }
        }
    }

    /// Cal.com said 429: hold every request of this key until `retry_after` has passed.
    pub fn block(&self, api_key: &str, per_min: u32, retry_after: Duration) {
        let budget = self.budget(api_key, per_min);
        let until = Instant::now() + retry_after;
        let mut blocked = budget.blocked_until.lock().expect("limiter lock poisoned");
        *blocked = Some(blocked.map_or(until, |b| b.max(until)));
    }

    fn budget(&self, api_key: &str, per_min: u32) -> Arc<KeyBudget> {
        let id: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        let mut budgets = self.budgets.lock().expect("limiter lock poisoned");
        match budgets.get(&id) {
            // Branches sharing a key share its budget; the lowest limit any of them names
            // wins (Cal.com counts per key), and a pending Retry-After block carries over.
            Some(b) if b.per_min <= per_min => Arc::clone(b),
            existing => {
                let blocked =
                    existing.and_then(|b| *b.blocked_until.lock().expect("limiter lock poisoned"));
                let budget = Arc::new(KeyBudget {
                    per_min,
                    limiter: RateLimiter::direct_with_clock(quota(per_min), self.clock),
                    blocked_until: Mutex::new(blocked),
                });
                budgets.insert(id, Arc::clone(&budget));
                budget
            }
        }
    }
}

fn quota(per_min: u32) -> Quota {
    let n = NonZeroU32::new(per_min.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n)
}

async fn sleep_until(until: Instant, shutdown: &CancellationToken) -> Result<(), Interrupted> {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => Ok(()),
        _ = shutdown.cancelled() => Err(Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_minute_of_burst_then_one_request_per_interval() {
        let limiters = Limiters::new();
        let shutdown = CancellationToken::new();
        for _ in 0..120 {
            let waited = limiters.acquire("k", 120, &shutdown).await.unwrap();
            assert_eq!(waited, Duration::ZERO);
        }
        let waited = limiters.acquire("k", 120, &shutdown).await.unwrap();
        assert_eq!(waited, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_separate_budgets() {
        let limiters = Limiters::new();
        let shutdown = CancellationToken::new();
        limiters.acquire("a", 1, &shutdown).await.unwrap();
        let b = limiters.acquire("b", 1, &shutdown).await.unwrap();
        assert_eq!(b, Duration::ZERO);
        let a = limiters.acquire("a", 1, &shutdown).await.unwrap();
        assert_eq!(a, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn branches_sharing_a_key_share_its_lowest_limit() {
        let limiters = Limiters::new();
        let shutdown = CancellationToken::new();
        limiters.acquire("k", 1, &shutdown).await.unwrap();
        // A second branch with a higher limit on the same key gets no fresh burst.
        let waited = limiters.acquire("k", 120, &shutdown).await.unwrap();
        assert_eq!(waited, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_the_key() {
        let limiters = Limiters::new();
        let shutdown = CancellationToken::new();
        limiters.block("k", 120, Duration::from_secs(7));
        let waited = limiters.acquire("k", 120, &shutdown).await.unwrap();
        assert_eq!(waited, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_wait() {
        let limiters = Arc::new(Limiters::new());
        let shutdown = CancellationToken::new();
        limiters.acquire("k", 1, &shutdown).await.unwrap();
        let waiting = {
            let (limiters, shutdown) = (Arc::clone(&limiters), shutdown.clone());
            tokio::spawn(async move { limiters.acquire("k", 1, &shutdown).await })
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        shutdown.cancel();
        assert_eq!(waiting.await.unwrap(), Err(Interrupted));
    }
}
