//! A per-tenant circuit breaker: a small state machine on tokio's clock (so tests run it with
//! `tokio::time::pause`).
//!
//! closed → open after `failure_threshold` consecutive failures that trip it → half-open once
//! `open_for` has passed, letting exactly one probe through → closed when the probe succeeds,
//! open again (for another `open_for`) when it fails. Permanent 4xx answers are not failures
//! of Cal.com and do not count; they do not reset the count either.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// The three states, as shown in `/metrics` (0, 1, 2) and `/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a request may go to Cal.com now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead; `probe` is the single half-open trial.
    Allowed { probe: bool },
    /// The breaker is open (or its probe is out): do not call Cal.com.
    Rejected { retry_in: Duration },
}

/// A state change, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Inner,
    /// Whether Cal.com has answered (or failed) a request through this breaker. Breakers
    /// live in memory, so a new one knows nothing of what an earlier process learned.
    answered: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Inner::Closed {
                consecutive_failures: 0,
            },
            answered: false,
        }
    }

    /// Whether this breaker has seen a request's outcome yet (else its state is a default,
    /// not something it learned: `/health` reports it as being re-learned).
    pub fn has_outcome(&self) -> bool {
        self.answered
    }

    /// The state as of `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long the breaker stays open from `now` (zero unless it is open).
    pub fn open_for(&self, now: Instant) -> Duration {
        match self.inner {
            Inner::Open { until } => until.saturating_duration_since(now),
            Inner::Closed { .. } | Inner::HalfOpen { .. } => Duration::ZERO,
        }
    }

    /// Asks to send one request. A granted probe must be answered with
    /// [`Breaker::on_success`] or [`Breaker::on_failure`] (or [`Breaker::on_abandoned`]).
    pub fn acquire(&mut self, now: Instant) -> (Permit, Option<Transition>) {
        match self.inner {
            Inner::Closed { .. } => (Permit::Allowed { probe: false }, None),
            Inner::Open { until } if now < until => (
                Permit::Rejected {
                    retry_in: until - now,
                },
                None,
            ),
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen { probe_out: true };
                let t = Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                };
                (Permit::Allowed { probe: true }, Some(t))
            }
            Inner::HalfOpen { probe_out: true } => (
                Permit::Rejected {
                    retry_in: Duration::ZERO,
                },
                None,
            ),
            Inner::HalfOpen { probe_out: false } => {
                self.inner = Inner::HalfOpen { probe_out: true };
                (Permit::Allowed { probe: true }, None)
            }
        }
    }

    /// Cal.com answered 2xx.
    pub fn on_success(&mut self) -> Option<Transition> {
        self.answered = true;
        let from = match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        self.inner = Inner::Closed {
            consecutive_failures: 0,
        };
        (from != BreakerState::Closed).then_some(Transition {
            from,
            to: BreakerState::Closed,
        })
    }

    /// Cal.com refused this request for good (a 4xx other than 429). That says nothing about
    /// its health, so the failure count stays; but a half-open probe answered at all shows
    /// Cal.com is reachable, so it closes the breaker (else the probe would stay out).
    pub fn on_permanent(&mut self) -> Option<Transition> {
        self.answered = true;
        match self.inner {
            Inner::HalfOpen { .. } => self.on_success(),
            Inner::Closed { .. } | Inner::Open { .. } => None,
        }
    }

    /// A transient failure (5xx, 429, timeout, unknown outcome).
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        self.answered = true;
        match self.inner {
            Inner::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures + 1;
                if failures >= self.settings.failure_threshold {
                    self.open(now, BreakerState::Closed)
                } else {
                    self.inner = Inner::Closed {
                        consecutive_failures: failures,
                    };
                    None
                }
            }
            Inner::HalfOpen { .. } => self.open(now, BreakerState::HalfOpen),
            // A request allowed before the breaker opened failed late: it stays open.
            Inner::Open { .. } => None,
        }
    }

    /// A granted probe was never sent (e.g. shutdown during the rate-limit wait): let the
    /// next caller probe instead.
    pub fn on_abandoned(&mut self) {
        if let Inner::HalfOpen { probe_out: true } = self.inner {
            self.inner = Inner::HalfOpen { probe_out: false };
        }
    }

    fn open(&mut self, now: Instant, from: BreakerState) -> Option<Transition> {
        self.inner = Inner::Open {
            until: now + self.settings.open_for,
        };
        Some(Transition {
            from,
            to: BreakerState::Open,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings::default())
    }

    #[test]
    fn a_breaker_knows_whether_it_has_seen_an_outcome() {
        let mut b = breaker();
        assert!(!b.has_outcome(), "a new breaker has learned nothing");
        let _ = b.acquire(Instant::now());
        b.on_abandoned();
        assert!(!b.has_outcome(), "a permit alone is no outcome");
        b.on_success();
        assert!(b.has_outcome());
        let outcomes: [fn(&mut Breaker) -> Option<Transition>; 2] =
            [Breaker::on_permanent, |b| b.on_failure(Instant::now())];
        for outcome in outcomes {
            let mut b = breaker();
            outcome(&mut b);
            assert!(b.has_outcome());
        }
    }

    fn fail_times(b: &mut Breaker, n: u32) -> Vec<Transition> {
        (0..n)
            .filter_map(|_| b.on_failure(Instant::now()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_five_consecutive_failures_and_not_before() {
        let mut b = breaker();
        assert!(fail_times(&mut b, 4).is_empty());
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        assert_eq!(
            b.acquire(Instant::now()).0,
            Permit::Allowed { probe: false }
        );
        let t = fail_times(&mut b, 1);
        assert_eq!(
            t,
            vec![Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            }]
        );
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        assert_eq!(
            b.acquire(Instant::now()).0,
            Permit::Rejected {
                retry_in: Duration::from_secs(60)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let mut b = breaker();
        fail_times(&mut b, 4);
        assert_eq!(b.on_success(), None);
        assert!(fail_times(&mut b, 4).is_empty());
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_sixty_seconds_lets_exactly_one_probe_through() {
        let mut b = breaker();
        fail_times(&mut b, 5);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(
            b.acquire(Instant::now()).0,
            Permit::Rejected { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
        let (permit, transition) = b.acquire(Instant::now());
        assert_eq!(permit, Permit::Allowed { probe: true });
        assert_eq!(
            transition,
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        // The probe is out: everyone else waits for its answer.
        assert!(matches!(
            b.acquire(Instant::now()).0,
            Permit::Rejected { .. }
        ));
        assert_eq!(
            b.on_success(),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(
            b.acquire(Instant::now()).0,
            Permit::Allowed { probe: false }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_full_period() {
        let mut b = breaker();
        fail_times(&mut b, 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        b.acquire(Instant::now());
        let t = b.on_failure(Instant::now());
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_caller_probe() {
        let mut b = breaker();
        fail_times(&mut b, 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.acquire(Instant::now()).0, Permit::Allowed { probe: true });
        b.on_abandoned();
        assert_eq!(b.acquire(Instant::now()).0, Permit::Allowed { probe: true });
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_answer_keeps_the_count_but_closes_a_half_open_breaker() {
        let mut b = breaker();
        fail_times(&mut b, 4);
        assert_eq!(b.on_permanent(), None);
        assert_eq!(
            fail_times(&mut b, 1).len(),
            1,
            "the fifth failure still opens it"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        b.acquire(Instant::now());
        assert_eq!(
            b.on_permanent(),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_while_open_do_not_extend_it() {
        let mut b = breaker();
        fail_times(&mut b, 5);
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(b.on_failure(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
    }
}
