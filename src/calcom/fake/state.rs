//! The fake's memory: bookings, faults, per-key rate-limit windows, request counters and a
//! seeded random source. One mutex, never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FakeConfig, FaultUpdate, Faults};

/// Rate-limit windows are fixed minutes per API key, as Cal.com's throttler counts them.
const WINDOW: Duration = Duration::from_secs(60);

/// A booking as the fake stores and serves it (Cal.com's `data` shape, camelCase on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeBooking {
    pub id: i64,
    pub uid: String,
    pub title: String,
    #[serde(with = "iso_millis")]
    pub start: DateTime<Utc>,
    #[serde(with = "iso_millis")]
    pub end: DateTime<Utc>,
    /// Minutes.
    pub duration: u32,
    pub event_type_id: i64,
    /// `accepted` or `cancelled` (the fake never leaves a booking pending).
    pub status: String,
    pub attendees: Vec<FakeAttendee>,
    pub hosts: Vec<FakeHost>,
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "iso_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduling_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_from_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_to_uid: Option<String>,
}

impl FakeBooking {
    /// Holds its host at its start: the unique rule and the slot search look at these only.
    pub fn is_active(&self) -> bool {
        self.status == "accepted"
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeAttendee {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// The event type's owner; the fake makes one up from the event type id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeHost {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub username: String,
    pub time_zone: String,
}

impl FakeHost {
    pub(super) fn for_event_type(event_type_id: i64) -> Self {
        Self {
            id: event_type_id,
            name: format!("Fake Host {event_type_id}"),
            email: format!("host-{event_type_id}@fake-cal.invalid"),
            username: format!("host-{event_type_id}"),
            time_zone: "UTC".into(),
        }
    }
}

/// A hold on a slot (`POST /v2/slots/reservations`), live until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeReservation {
    pub uid: String,
    pub event_type_id: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// `GET /_fake/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeStats {
    /// `"POST /v2/bookings"` → HTTP status → count.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub requests_total: u64,
    /// Bookings stored, cancelled ones included.
    pub bookings: usize,
    pub accepted_bookings: usize,
}

impl FakeStats {
    /// Requests to `endpoint` (e.g. `"POST /v2/bookings"`) answered with `status`.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.requests
            .get(endpoint)
            .and_then(|by_status| by_status.get(&status))
            .copied()
            .unwrap_or(0)
    }
}

/// One key's standing in its current window, sent as `X-RateLimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub(super) struct RateLimits {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

impl RateLimits {
    pub(super) fn write(&self, headers: &mut HeaderMap, limited: bool) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        // Seconds until the window resets, as Cal.com's throttler reports it.
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_secs));
        if limited {
            headers.insert("retry-after", HeaderValue::from(self.reset_secs));
        }
    }
}

/// What the gate decided for one request.
pub(super) struct Admission {
    pub limits: Option<RateLimits>,
    pub limited: bool,
    pub fail: bool,
    pub latency: Duration,
}

struct Window {
    started: Instant,
    count: u32,
}

struct Inner {
    faults: Faults,
    rate_limit_per_min: u32,
    errors: XorShift,
    uids: XorShift,
    next_id: i64,
    bookings: Vec<FakeBooking>,
    reservations: Vec<FakeReservation>,
    windows: HashMap<String, Window>,
    requests: BTreeMap<String, BTreeMap<u16, u64>>,
    requests_total: u64,
}

impl Inner {
    fn new(config: &FakeConfig) -> Self {
        Self {
            faults: config.faults.clone(),
            rate_limit_per_min: config.rate_limit_per_min,
            errors: XorShift::new(config.seed),
            // A second stream, so creating bookings does not shift which requests fail.
            uids: XorShift::new(config.seed ^ 0x5bd1_e995_5bd1_e995),
            next_id: 1,
            bookings: Vec::new(),
            reservations: Vec::new(),
            windows: HashMap::new(),
            requests: BTreeMap::new(),
            requests_total: 0,
        }
    }

    fn rate_limit(&mut self, api_key: &str, now: Instant) -> (Option<RateLimits>, bool) {
        let limit = self.rate_limit_per_min;
        if limit == 0 {
            return (None, false);
        }
        let window = self.windows.entry(api_key.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        let left = (window.started + WINDOW).saturating_duration_since(now);
        let reset_secs = left.as_secs_f64().ceil().max(1.0) as u64;
        let limited = window.count >= limit;
        if !limited {
            window.count += 1;
        }
        let limits = RateLimits {
            limit,
            remaining: limit - window.count,
            reset_secs,
        };
        (Some(limits), limited)
    }
}

/// State shared by every request of one fake.
pub(super) struct Shared {
    config: FakeConfig,
    shutdown: CancellationToken,
    inner: Mutex<Inner>,
}

impl Shared {
    pub(super) fn new(config: FakeConfig, shutdown: CancellationToken) -> Self {
        let inner = Mutex::new(Inner::new(&config));
        Self {
            config,
            shutdown,
            inner,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the fake down with it; the data stays usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn admit(&self, api_key: &str) -> Admission {
        let mut inner = self.lock();
        let (limits, limited) = inner.rate_limit(api_key, Instant::now());
        let mut fail = false;
        if !limited {
            if inner.faults.fail_next > 0 {
                inner.faults.fail_next -= 1;
                fail = true;
            } else if inner.faults.error_rate > 0.0 {
                // Drawn only when a rate is set, so the sequence depends on nothing else.
                fail = inner.errors.next_f64() < inner.faults.error_rate;
            }
        }
        Admission {
            limits,
            limited,
            fail,
            latency: Duration::from_millis(inner.faults.latency_ms),
        }
    }

    /// Sleeps, unless the server is stopping.
    pub(super) async fn pause(&self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    pub(super) fn record(&self, endpoint: String, status: u16) {
        let mut inner = self.lock();
        inner.requests_total += 1;
        *inner
            .requests
            .entry(endpoint)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    pub(super) fn bookings(&self) -> Vec<FakeBooking> {
        self.lock().bookings.clone()
    }

    pub(super) fn reservations(&self) -> Vec<FakeReservation> {
        self.lock().reservations.clone()
    }

    pub(super) fn hours(&self) -> super::OpeningHours {
        self.config.hours
    }

    pub(super) fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub(super) fn apply(&self, update: &FaultUpdate) -> Faults {
        let mut inner = self.lock();
        let faults = &mut inner.faults;
        if let Some(v) = update.latency_ms {
            faults.latency_ms = v;
        }
        if let Some(v) = update.error_rate {
            faults.error_rate = v;
        }
        if let Some(v) = update.fail_next {
            faults.fail_next = v;
        }
        if let Some(v) = update.hang_after_commit {
            faults.hang_after_commit = v;
        }
        if let Some(v) = update.hang_ms {
            faults.hang_ms = v;
        }
        if let Some(v) = update.rate_limit_per_min {
            inner.rate_limit_per_min = v;
            inner.windows.clear();
        }
        inner.faults.clone()
    }

    pub(super) fn stats(&self) -> FakeStats {
        let inner = self.lock();
        FakeStats {
            requests: inner.requests.clone(),
            requests_total: inner.requests_total,
            bookings: inner.bookings.len(),
            accepted_bookings: inner.bookings.iter().filter(|b| b.is_active()).count(),
        }
    }

    pub(super) fn reset(&self) {
        *self.lock() = Inner::new(&self.config);
    }

    /// The bookings under the lock, for one endpoint's read-check-write. Never hold it across
    /// an await (clippy's `await_holding_lock` is denied in this workspace).
    pub(super) fn ledger(&self) -> Ledger<'_> {
        Ledger(self.lock())
    }
}

/// Exclusive access to the bookings and the id/uid sequence.
pub(super) struct Ledger<'a>(MutexGuard<'a, Inner>);

impl Ledger<'_> {
    pub(super) fn bookings(&self) -> &[FakeBooking] {
        &self.0.bookings
    }

    pub(super) fn bookings_mut(&mut self) -> &mut Vec<FakeBooking> {
        &mut self.0.bookings
    }

    /// Holds, expired ones included (they are dropped when a new one is made).
    pub(super) fn reservations_mut(&mut self) -> &mut Vec<FakeReservation> {
        &mut self.0.reservations
    }

    /// A hold live at `now` that overlaps `start..end` of this event type.
    pub(super) fn held(
        &self,
        event_type_id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<&FakeReservation> {
        self.0.reservations.iter().find(|r| {
            r.event_type_id == event_type_id && r.until > now && r.start < end && start < r.end
        })
    }

    /// A fresh reservation uid (the same alphabet as booking uids).
    pub(super) fn next_reservation_uid(&mut self) -> String {
        self.0.uids.uid()
    }

    /// The id and uid of the next booking.
    pub(super) fn next_identity(&mut self) -> (i64, String) {
        let id = self.0.next_id;
        self.0.next_id += 1;
        (id, self.0.uids.uid())
    }

    /// Whether this create stalls after committing (`hang_after_commit`), and for how long.
    pub(super) fn take_hang(&mut self) -> Option<Duration> {
        let faults = &mut self.0.faults;
        (faults.hang_after_commit > 0).then(|| {
            faults.hang_after_commit -= 1;
            Duration::from_millis(faults.hang_ms)
        })
    }
}

/// xorshift64*: tiny, seedable and the same on every platform and crate version.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so small seeds (0, 1, 2) still start well mixed and nonzero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 22 base62 characters, the length of Cal.com's uids.
    fn uid(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..22)
            .map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// Cal.com writes instants as `2030-01-07T09:00:00.000Z`.
mod iso_millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_source_is_seeded_and_uniform_enough() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let draws: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert_eq!(
            draws[..5],
            (0..5).map(|_| b.next_f64()).collect::<Vec<_>>()[..]
        );
        let below_half = draws.iter().filter(|d| **d < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
        assert_ne!(XorShift::new(0).uid(), XorShift::new(1).uid());
        assert_eq!(XorShift::new(0).uid().len(), 22);
    }

    #[test]
    fn rate_limit_windows_are_per_key_and_reset_after_a_minute() {
        let config = FakeConfig {
            rate_limit_per_min: 2,
            ..FakeConfig::default()
        };
        let mut inner = Inner::new(&config);
        let t0 = Instant::now();
        assert!(!inner.rate_limit("a", t0).1);
        assert!(!inner.rate_limit("a", t0).1);
        let (limits, limited) = inner.rate_limit("a", t0 + Duration::from_millis(500));
        assert!(limited);
        assert_eq!(limits.map(|l| (l.remaining, l.reset_secs)), Some((0, 60)));
        assert!(
            !inner.rate_limit("b", t0).1,
            "another key has its own window"
        );
        assert!(!inner.rate_limit("a", t0 + WINDOW).1);
        inner.rate_limit_per_min = 0;
        assert!(matches!(inner.rate_limit("a", t0 + WINDOW), (None, false)));
    }
}
