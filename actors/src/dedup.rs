//! Dedup keys. Providers send no event ids, so the key is derived from what identifies one
//! delivery of one event: Retell (`call_id`, `event`), Cal.com (`triggerEvent`, `payload.uid`,
//! `createdAt`), anything else the SHA-256 of the body. The provider is part of every key
//! (the original system keyed on `call_id` alone and lost `call_analyzed`).

use sha2::{Digest, Sha256};

use crate::record::Provider;

/// Key of a Retell call event.
pub fn retell_key(event: &str, call_id: &str) -> String {
    format!("retell:{event}:{call_id}")
}

/// Key of a Cal.com webhook.
pub fn calcom_key(trigger_event: &str, uid: &str, created_at: &str) -> String {
    format!("calcom:{trigger_event}:{uid}:{created_at}")
}

/// Fallback key: the body's SHA-256, namespaced by provider.
pub fn body_key(provider: Provider, body: &[u8]) -> String {
    format!("{provider}:sha256:{}", hex::encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_event_and_provider() {
        assert_ne!(
            retell_key("call_ended", "c1"),
            retell_key("call_analyzed", "c1")
        );
        assert_ne!(
            body_key(Provider::Retell, b"{}"),
            body_key(Provider::Calcom, b"{}")
        );
        assert_eq!(
            calcom_key("BOOKING_CREATED", "u1", "2024-01-10T14:30:00.000Z"),
            "calcom:BOOKING_CREATED:u1:2024-01-10T14:30:00.000Z"
        );
    }
}
