//! The worker-loss scenario's moving parts, shared by the Kafka (embedded store) and the
//! Kafka plus CQL tests: two workers splitting the partitions, a stream of signed webhooks
//! sent concurrently while one worker is stopped, and the exactly-once check at the end.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askpro::calcom::fake::{FakeCalcom, FakeConfig};
use askpro_actors::domain::{AppointmentStatus, EventStatus};
use askpro_actors::{CompanyId, EventId, StateStore};
use futures::StreamExt;
use serde_json::Value;

use crate::booking::{analyzed, connect_calcom};
use crate::harness::{retell_body, Tenant};
use crate::kafka::{
    assigned, by_status, ledger, slot, tenants, wait_every, wait_until, Acked, Node, HEALTH_POLL,
};

/// A fake Cal.com without a rate limit, and `n` tenants (numbered from `seed`) whose branch
/// books there; with their company ids.
pub async fn booking_tenants(
    store: &dyn StateStore,
    seed: u32,
    n: usize,
) -> (FakeCalcom, Vec<Tenant>, Vec<CompanyId>) {
    let fake = FakeCalcom::start(FakeConfig {
        rate_limit_per_min: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let tenants = tenants(store, seed, n).await;
    for t in &tenants {
        connect_calcom(store, t, &fake, None).await;
    }
    let companies = tenants.iter().map(|t| t.company).collect();
    (fake, tenants, companies)
}

/// One webhook of a stream: (call id, body, whether it books).
pub type MakeWebhook = fn(usize, &Tenant) -> (String, String, bool);

/// Waits until `a` and `b` own disjoint, non-empty sets that together are all `partitions`;
/// returns what `a` owns.
pub async fn wait_split(
    client: &reqwest::Client,
    a: &Node,
    b: &Node,
    partitions: u32,
) -> BTreeSet<u32> {
    wait_every(
        &format!("the two workers split the {partitions} partitions"),
        Duration::from_secs(60),
        HEALTH_POLL,
        || async {
            let x = assigned(client, a).await?;
            let y = assigned(client, b).await?;
            let union: BTreeSet<u32> = x.union(&y).copied().collect();
            let split = !x.is_empty() && !y.is_empty() && x.is_disjoint(&y);
            match split && union.len() == partitions as usize {
                true => Ok(x),
                false => Err(format!("first {x:?}, second {y:?}")),
            }
        },
    )
    .await
}

/// Waits until `node` owns every partition (a lost worker's were handed over).
pub async fn wait_owns_all(client: &reqwest::Client, node: &Node, partitions: u32, lost: &str) {
    wait_every(
        &format!("the survivor owns all {partitions} partitions"),
        Duration::from_secs(60),
        HEALTH_POLL,
        || async {
            let now = assigned(client, node).await?;
            match now == (0..partitions).collect() {
                true => Ok(()),
                false => Err(format!(
                    "survivor owns {now:?} (the lost worker had {lost})"
                )),
            }
        },
    )
    .await;
}

/// Signed webhooks sent `senders` at a time to an ingress; what was acknowledged (202 with an
/// event id) and what was not.
pub struct Stream {
    acked: Arc<Mutex<Vec<Acked>>>,
    refused: Arc<Mutex<Vec<String>>>,
    count: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Starts sending webhook `i` (0..count) for tenant `i % tenants`.
    pub fn start(
        client: &reqwest::Client,
        ingress: &Node,
        tenants: Vec<Tenant>,
        count: usize,
        senders: usize,
        make: MakeWebhook,
    ) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (tenants, base) = (Arc::new(tenants), ingress.url(""));
        let (client, a, r) = (client.clone(), acked.clone(), refused.clone());
        let task = tokio::spawn(async move {
            futures::stream::iter(0..count)
                .for_each_concurrent(senders, |i| {
                    let (client, a, r, t, base) = (
                        &client,
                        a.clone(),
                        r.clone(),
                        &tenants[i % tenants.len()],
                        &base,
                    );
                    async move {
                        let (call_id, body, books) = make(i, t);
                        match post_to(client, base, t, &body).await {
                            Ok((202, Some(event_id))) => a.lock().unwrap().push(Acked {
                                event_id,
                                company: t.company,
                                call_id,
                                books,
                            }),
                            other => r.lock().unwrap().push(format!("{call_id}: {other:?}")),
                        }
                    }
                })
                .await
        });
        Stream {
            acked,
            refused,
            count,
            task,
        }
    }

    /// Waits until at least `n` webhooks are acknowledged; returns how many are.
    pub async fn wait_acked(&self, n: usize) -> usize {
        wait_until(
            &format!("{n} of the stream acknowledged"),
            Duration::from_secs(90),
            || async {
                let have = self.acked.lock().unwrap().len();
                match have >= n {
                    true => Ok(have),
                    false => Err(format!("{have} acknowledged")),
                }
            },
        )
        .await
    }

    /// Waits for the whole stream; every webhook must have been acknowledged.
    pub async fn finish(self) -> Vec<Acked> {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the stream is sent within 120 s")
            .unwrap();
        let refused = self.refused.lock().unwrap().clone();
        assert!(
            refused.is_empty(),
            "the ingress acknowledges every webhook while a worker dies: {} refused, e.g. {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
        let acked = self.acked.lock().unwrap().clone();
        assert_eq!(acked.len(), self.count);
        acked
    }
}

/// Posts a signed Retell webhook to `base`; the status and the answer's event id.
pub async fn post_to(
    client: &reqwest::Client,
    base: &str,
    t: &Tenant,
    body: &str,
) -> Result<(u16, Option<EventId>), String> {
    let signature =
        askpro::signature::sign_retell(&t.retell_secret, body.as_bytes(), crate::harness::now_ms());
    let response = client
        .post(format!("{base}/webhooks/retell/{}", t.company))
        .header("content-type", "application/json")
        .header("x-retell-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    Ok((
        status,
        body["event_id"].as_str().and_then(|s| s.parse().ok()),
    ))
}

/// The Cal.com bookings of the fake per idempotency key (`call_booking_key`).
pub fn bookings_per_call(fake: &FakeCalcom) -> HashMap<String, usize> {
    let mut per_call: HashMap<String, usize> = HashMap::new();
    for booking in fake.bookings() {
        let key = booking
            .metadata
            .get("askpro_key")
            .cloned()
            .unwrap_or_default();
        *per_call.entry(key).or_default() += 1;
    }
    per_call
}

/// Exactly once: one ledger row per acknowledged event and nothing else, all `processed`,
/// one row per dedup key, a call row per call, one booking (and one scheduled appointment) per
/// booking call.
pub async fn assert_exactly_once(
    store: &dyn StateStore,
    fake: &FakeCalcom,
    acked: &[Acked],
    companies: &[CompanyId],
) {
    wait_booked(store, acked, companies).await;
    let rows = ledger(store, companies).await;
    let wanted: BTreeSet<EventId> = acked.iter().map(|a| a.event_id).collect();
    let mut per_id: HashMap<EventId, usize> = HashMap::new();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_id.entry(row.id).or_default() += 1;
        *per_key.entry(row.dedup_key.as_str()).or_default() += 1;
        assert!(
            wanted.contains(&row.id),
            "a ledger row of an event never acknowledged: {} {:?}",
            row.dedup_key,
            row.status
        );
        assert_eq!(
            row.status,
            EventStatus::Processed,
            "{}: {:?}",
            row.dedup_key,
            row.error
        );
    }
    assert_eq!(
        rows.len(),
        wanted.len(),
        "one ledger row per acknowledged webhook: {:?}",
        by_status(&rows)
    );
    assert!(
        per_id.values().all(|n| *n == 1),
        "an event id has several rows"
    );
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "dedup keys processed twice: {twice:?}");
    for a in acked {
        let call = store.call(a.company, &a.call_id).await.unwrap();
        assert!(call.is_some(), "call {} recorded", a.call_id);
    }
    let per_call = bookings_per_call(fake);
    let booking_calls: Vec<&Acked> = acked.iter().filter(|a| a.books).collect();
    for a in &booking_calls {
        let key = askpro_actors::handlers::call_booking_key(a.company, &a.call_id);
        assert_eq!(
            per_call.get(&key).copied().unwrap_or(0),
            1,
            "exactly one Cal.com booking for {}",
            a.call_id
        );
    }
    assert_eq!(
        per_call.values().sum::<usize>(),
        booking_calls.len(),
        "no other bookings: {per_call:?}"
    );
    let mut scheduled = 0;
    for company in companies {
        let appointments = store.appointments(*company).await.unwrap();
        assert!(
            appointments
                .iter()
                .all(|a| a.status == AppointmentStatus::Scheduled),
            "{appointments:?}"
        );
        scheduled += appointments.len();
    }
    assert_eq!(
        scheduled,
        booking_calls.len(),
        "one appointment per booking call"
    );
}

/// Waits until every booking call's appointment is scheduled. An event whose appointment's
/// sync lease was left by the lost worker finishes at once (deferred) and its appointment is
/// booked by the survivor's reconciler when that lease ends, up to 60 s after the lost
/// worker's sync began.
async fn wait_booked(store: &dyn StateStore, acked: &[Acked], companies: &[CompanyId]) {
    let wanted = acked.iter().filter(|a| a.books).count();
    wait_until(
        "every booking call's appointment scheduled",
        Duration::from_secs(90),
        || async {
            let mut scheduled = 0;
            for company in companies {
                let appointments = store
                    .appointments(*company)
                    .await
                    .map_err(|e| e.to_string())?;
                scheduled += appointments
                    .iter()
                    .filter(|a| a.status == AppointmentStatus::Scheduled)
                    .count();
            }
            match scheduled >= wanted {
                true => Ok(()),
                false => Err(format!("{scheduled} of {wanted} scheduled")),
            }
        },
    )
    .await;
}

/// One webhook of a stream: every fifth is a `call_analyzed` that books.
pub fn webhook(prefix: &str, i: usize, t: &Tenant) -> (String, String, bool) {
    let call_id = format!("call_{prefix}_{i}");
    match i.is_multiple_of(5) {
        true => {
            let body = analyzed(&call_id, &t.phone, &slot(i / 5));
            (call_id, body, true)
        }
        false => (
            call_id.clone(),
            retell_body("call_ended", &call_id, &t.phone),
            false,
        ),
    }
}
