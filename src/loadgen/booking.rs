//! The `booking` scenario: signed `call_analyzed` webhooks whose post-call analysis carries an
//! appointment, for tenants whose branch books at a (fake) Cal.com — the whole way from
//! webhook to booked appointment (`--scenario booking --calcom-url URL`).

use std::sync::atomic::{AtomicU64, Ordering};

use askpro_actors::catalog::CalcomConfig;
use askpro_actors::{StateStore, StoreError};
use bytes::Bytes;
use chrono::{Duration, NaiveDate, NaiveDateTime};
use serde_json::json;

use super::LoadTenant;

/// Slots start here (Berlin time) and step a minute per booking. Two months of minutes hold
/// 86,400 distinct starts per tenant, all in winter time (no DST gap to trip over).
const FIRST_SLOT: (i32, u32, u32) = (2027, 1, 4);
const SLOTS: u64 = 60 * 24 * 60;

/// Each tenant books its own event type, so tenants never compete for a (host, start);
/// a random base per run keeps runs against one long-lived fake apart as well.
fn event_type_for(run_base: i64, tenant: usize) -> i64 {
    run_base + tenant as i64
}

/// Points every tenant's branch at `calcom_url`, with its own key and event type and a rate
/// limit high enough that the benchmark measures the pipeline, not the budget.
pub async fn connect_branches(
    store: &dyn StateStore,
    tenants: &[LoadTenant],
    calcom_url: &str,
    rate_limit_per_min: u32,
) -> Result<(), StoreError> {
    let run_base = i64::from(rand::random_range(1..1_000_000_u32)) * 100_000;
    for (i, tenant) in tenants.iter().enumerate() {
        for mut branch in store.branches(tenant.company_id).await? {
            branch.calcom = Some(CalcomConfig {
                api_key: format!("cal_loadgen_{}", tenant.company_id.0.simple()),
                event_type_id: event_type_for(run_base, i),
                base_url: calcom_url.trim_end_matches('/').to_owned(),
                rate_limit_per_min: Some(rate_limit_per_min),
            });
            store.update_branch(&branch).await?;
        }
    }
    Ok(())
}

/// A tenant's `call_analyzed` bodies: a fresh call id and the next free slot each time.
#[derive(Debug)]
pub(crate) struct BookingTemplate {
    to_number: String,
    start_ms: i64,
    next_slot: AtomicU64,
}

impl BookingTemplate {
    pub(crate) fn new(phone: Option<&str>, now_ms: i64) -> Self {
        Self {
            to_number: phone.unwrap_or("+493099999999").to_owned(),
            start_ms: now_ms - 95_000,
            next_slot: AtomicU64::new(0),
        }
    }

    pub(crate) fn fresh(&self) -> Bytes {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % SLOTS;
        let call_id = format!("call_lg_{}", uuid::Uuid::now_v7().simple());
        let body = json!({
            "event": "call_analyzed",
            "call": {
                "call_id": call_id,
                "call_type": "phone_call",
                "agent_id": "agent_loadgen",
                "direction": "inbound",
                "from_number": "+4915123456789",
                "to_number": self.to_number,
                "call_status": "ended",
                "start_timestamp": self.start_ms,
                "end_timestamp": self.start_ms + 93_000,
                "duration_ms": 93_000,
                "call_analysis": {
                    "call_summary": "Termin vereinbart",
                    "call_successful": true,
                    "custom_analysis_data": {
                        "appointment_made": true,
                        "appointment_date_time": slot_text(slot),
                        "caller_full_name": "Hans Robert",
                    }
                }
            }
        });
        Bytes::from(body.to_string())
    }
}

fn slot_text(slot: u64) -> String {
    let (y, m, d) = FIRST_SLOT;
    let first: NaiveDateTime = NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid first slot");
    let at = first + Duration::minutes(slot as i64);
    at.format("%Y-%m-%d %H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_a_new_call_and_the_next_slot() {
        let t = BookingTemplate::new(Some("+493012345678"), 1_800_000_000_000);
        let a: serde_json::Value = serde_json::from_slice(&t.fresh()).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&t.fresh()).unwrap();
        assert_eq!(a["event"], "call_analyzed");
        assert_eq!(a["call"]["to_number"], "+493012345678");
        let slot = |v: &serde_json::Value| {
            v["call"]["call_analysis"]["custom_analysis_data"]["appointment_date_time"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(slot(&a), "2027-01-04 00:00");
        assert_eq!(slot(&b), "2027-01-04 00:01");
        assert_ne!(a["call"]["call_id"], b["call"]["call_id"]);
    }

    #[test]
    fn slots_wrap_before_the_spring_dst_change() {
        assert_eq!(slot_text(SLOTS - 1), "2027-03-04 23:59");
    }
}
