//! Webhook signatures: Retell `x-retell-signature` and Cal.com `X-Cal-Signature-256`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Retell's signature header value for `body` at `timestamp_ms`:
/// `v=<ms>,d=hex(HMAC-SHA256(secret, body ++ decimal(ms)))`.
pub fn sign_retell(secret: &str, body: &[u8], timestamp_ms: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    format!("v={timestamp_ms},d={}", hex::encode(mac.finalize().into_bytes()))
}

/// Cal.com's `X-Cal-Signature-256` value: `hex(HMAC-SHA256(secret, body))`.
pub fn sign_calcom(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
