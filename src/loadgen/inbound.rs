//! The `inbound` scenario: Retell `call_inbound` routing requests for each tenant's branch
//! number, to measure the latency of the synchronous answer (`--scenario inbound`).

use askpro_actors::domain::Branch;
use askpro_actors::{BranchId, StateStore, StoreError};
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;

use super::LoadTenant;

/// Where `call_inbound` goes when `--path-template` is left at its default.
pub const INBOUND_PATH: &str = "/webhooks/retell/inbound";

/// Numbers tried per tenant before giving up on finding a free one.
const NUMBER_ATTEMPTS: usize = 16;

/// What the load sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Signed `call_ended` webhooks to the tenant's URL (the durable-append path).
    #[default]
    CallEnded,
    /// Signed `call_inbound` requests for the tenant's branch number (the routing read path).
    Inbound,
    /// Signed `call_analyzed` webhooks carrying an appointment, for branches that book at
    /// `--calcom-url` (webhook to booked appointment).
    Booking,
}

/// The `call_inbound` body of tenant number `tenant`. There is no call id yet, so every
/// request of a tenant is the same body; the signature's timestamp still differs.
pub(crate) fn inbound_body(tenant: usize, phone: Option<&str>) -> Bytes {
    // Unprovisioned tenants ask for a number no branch owns (the unrouted path).
    let to_number = phone.map_or_else(|| synthetic_number(tenant), str::to_owned);
    let body = json!({
        "event": "call_inbound",
        "call_inbound": {
            "agent_id": format!("agent_lg_{tenant:026x}"),
            "agent_version": 42,
            "from_number": format!("+49151{:08}", 10_000_000 + tenant % 10_000_000),
            "to_number": to_number,
        }
    });
    Bytes::from(body.to_string())
}

fn synthetic_number(tenant: usize) -> String {
    format!("+4930{:08}", 30_000_000 + tenant % 10_000_000)
}

/// Gives every tenant without a number a branch with a fresh random Berlin number (runs
/// share a data dir, so numbers must not repeat across runs) and records it in the tenant.
pub async fn provision_branches(
    store: &dyn StateStore,
    tenants: &mut [LoadTenant],
) -> Result<(), StoreError> {
    for (i, tenant) in tenants.iter_mut().enumerate() {
        if tenant.phone.is_some() {
            continue;
        }
        tenant.phone = Some(provision_branch(store, tenant, i).await?);
    }
    tracing::info!(tenants = tenants.len(), "loadgen branches provisioned");
    Ok(())
}

async fn provision_branch(
    store: &dyn StateStore,
    tenant: &LoadTenant,
    index: usize,
) -> Result<String, StoreError> {
    let mut last = None;
    for _ in 0..NUMBER_ATTEMPTS {
        // +49 30 and eight digits not starting with 0 or 1: a valid Berlin number.
        let phone = format!("+4930{}", rand::random_range(20_000_000..100_000_000_u32));
        let branch = Branch {
            id: BranchId::new(),
            company_id: tenant.company_id,
            name: format!("loadgen branch {index}"),
            phone: phone.clone(),
            timezone: "Europe/Berlin".into(),
            retell_agent_id: Some(format!("agent_lg_{index:026x}")),
            retell_llm_id: None,
            calcom: None,
            created_at: Utc::now(),
            fallback_email: None,
        };
        match store.create_branch(&branch).await {
            Ok(()) => return Ok(phone),
            Err(StoreError::Conflict(reason)) => last = Some(StoreError::Conflict(reason)),
            Err(other) => return Err(other),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Conflict("no free loadgen number".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    #[test]
    fn bodies_ask_for_the_tenant_number_under_call_inbound() {
        let body = inbound_body(3, Some("+493051234567"));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["event"], "call_inbound");
        assert_eq!(value["call_inbound"]["to_number"], "+493051234567");
        let fallback: serde_json::Value = serde_json::from_slice(&inbound_body(3, None)).unwrap();
        assert_eq!(fallback["call_inbound"]["to_number"], "+493030000003");
    }

    #[tokio::test]
    async fn provisioned_numbers_are_valid_and_resolve_to_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut tenants = super::super::provision_tenants(&store, 3, "lg")
            .await
            .unwrap();
        provision_branches(&store, &mut tenants).await.unwrap();
        for tenant in &tenants {
            let phone = tenant.phone.as_deref().expect("provisioned");
            assert_eq!(askpro_actors::phone::normalize(phone, "DE").unwrap(), phone);
            let route = store.resolve_phone(phone).await.unwrap().expect("routed");
            assert_eq!(route.company_id, tenant.company_id);
        }
    }
}
