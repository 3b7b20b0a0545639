//! Webhook signatures: Retell `x-retell-signature` and Cal.com `X-Cal-Signature-256`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Retell's signature header value for `body` at `timestamp_ms`:
/// `v=<ms>,d=hex(HMAC-SHA256(secret, body ++ decimal(ms)))`.
pub fn sign_retell(secret: &str, body: &[u8], timestamp_ms: i64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    format!(
        "v={timestamp_ms},d={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Cal.com's `X-Cal-Signature-256` value: `hex(HMAC-SHA256(secret, body))`.
pub fn sign_calcom(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Retell's signature header (header names are case-insensitive on the wire).
pub const RETELL_HEADER: &str = "x-retell-signature";
/// Cal.com's signature header.
pub const CALCOM_HEADER: &str = "x-cal-signature-256";
/// The literal Cal.com sends in [`CALCOM_HEADER`] when the webhook has no secret.
pub const CALCOM_NO_SECRET: &str = "no-secret-provided";
/// Retell's replay window: five minutes either way.
pub const RETELL_TOLERANCE_MS: i64 = 300_000;

const RETELL_FORMAT: &str = "v=<unix-ms>,d=<64 hex>";
const CALCOM_FORMAT: &str = "<64 hex> (HMAC-SHA256 of the raw body) or no-secret-provided";

/// Why a webhook signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header {header} is missing")]
    MissingHeader { header: &'static str },
    #[error(
        "signature header {header} is present but unreadable: it contains characters that are \
         not visible ASCII"
    )]
    NotAscii { header: &'static str },
    #[error("signature header {header} is malformed ({problem}); expected {expected}")]
    Malformed {
        header: &'static str,
        problem: String,
        expected: &'static str,
    },
    #[error(
        "signature timestamp is {} s {} our clock, outside the tolerance of {} s",
        secs(skew_ms.abs()),
        if *skew_ms > 0 { "behind" } else { "ahead of" },
        secs(*tolerance_ms)
    )]
    OutsideTolerance {
        /// `now - timestamp` in ms: positive when the signature is old, negative when it is
        /// from the future.
        skew_ms: i64,
        tolerance_ms: i64,
    },
    #[error(
        "no {provider} webhook secret is configured for this tenant, so nothing can be verified"
    )]
    NoSecret { provider: &'static str },
    // Says nothing about how many secrets are active: that is the tenant's business.
    #[error("{provider} signature does not match the active secret")]
    Mismatch { provider: &'static str },
    #[error(
        "Cal.com sent {CALCOM_HEADER}: {CALCOM_NO_SECRET} (the webhook has no secret) and this \
         tenant does not allow unsigned webhooks; set a secret on the Cal.com webhook"
    )]
    UnsignedNotAllowed,
}

fn secs(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

/// A signing secret with its id (the id ends up in the log record as `askpro-secret-id`).
#[derive(Clone, Copy, Debug)]
pub struct SecretRef<'a> {
    pub id: &'a str,
    pub value: &'a str,
}

fn malformed(
    header: &'static str,
    expected: &'static str,
    problem: impl Into<String>,
) -> SignatureError {
    SignatureError::Malformed {
        header,
        problem: problem.into(),
        expected,
    }
}

/// The text of signature header `header` from its raw bytes: `None` when absent, refused
/// (not reported as missing) when it holds anything but visible ASCII, spaces and tabs.
pub fn header_text<'a>(
    header: &'static str,
    raw: Option<&'a [u8]>,
) -> Result<Option<&'a str>, SignatureError> {
    let Some(raw) = raw else { return Ok(None) };
    let readable = raw
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    match std::str::from_utf8(raw) {
        Ok(text) if readable => Ok(Some(text)),
        _ => Err(SignatureError::NotAscii { header }),
    }
}

/// Decodes exactly 64 hex digits (either case) into 32 bytes.
fn decode_digest(hex_str: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex_str.len() != 64 {
        return None;
    }
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

/// Parses `v=<unix-ms>,d=<64 hex>` (any order, spaces around parts, unknown parts ignored).
fn parse_retell(value: &str) -> Result<(i64, [u8; 32]), SignatureError> {
    let bad = |problem: String| malformed(RETELL_HEADER, RETELL_FORMAT, problem);
    let (mut v, mut d) = (None, None);
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("part {part:?} has no '='")))?;
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "v" => &mut v,
            "d" => &mut d,
            _ => continue,
        };
        if slot.replace(val.trim()).is_some() {
            return Err(bad(format!("{} appears twice", key.trim())));
        }
    }
    let v = v.ok_or_else(|| bad("no v=<unix-ms> part".into()))?;
    let d = d.ok_or_else(|| bad("no d=<64 hex> part".into()))?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "v={v:?} is not a unix timestamp in milliseconds"
        )));
    }
    let ts = v
        .parse::<i64>()
        .map_err(|_| bad(format!("v={v:?} is out of range")))?;
    let digest = decode_digest(d).ok_or_else(|| match d.chars().count() {
        64 => bad("d contains characters that are not hex digits".into()),
        n => bad(format!("d has {n} characters, not 64 hex digits")),
    })?;
    Ok((ts, digest))
}

/// Tries every secret in constant time per comparison and returns the id of the first that
/// matches (all secrets are tried, so timing does not reveal which one matched).
fn match_secret(
    provider: &'static str,
    secrets: &[SecretRef<'_>],
    given: &[u8; 32],
    mac_of: impl Fn(&str) -> [u8; 32],
) -> Result<String, SignatureError> {
    let mut found: Option<&str> = None;
    for secret in secrets {
        let expected = mac_of(secret.value);
        let equal: bool = expected[..].ct_eq(&given[..]).into();
        if equal && found.is_none() {
            found = Some(secret.id);
        }
    }
    found
        .map(str::to_owned)
        .ok_or(SignatureError::Mismatch { provider })
}

fn hmac_parts(secret: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Verifies Retell's `x-retell-signature` over the raw `body` and returns the id of the secret
/// that matched. `tolerance_ms` is normally [`RETELL_TOLERANCE_MS`].
pub fn verify_retell(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretRef<'_>],
    now_ms: i64,
    tolerance_ms: i64,
) -> Result<String, SignatureError> {
    let value = header.ok_or(SignatureError::MissingHeader {
        header: RETELL_HEADER,
    })?;
    let (ts, given) = parse_retell(value)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret { provider: "Retell" });
    }
    let skew_ms = now_ms.saturating_sub(ts);
    if skew_ms.saturating_abs() > tolerance_ms {
        return Err(SignatureError::OutsideTolerance {
            skew_ms,
            tolerance_ms,
        });
    }
    let ts_digits = ts.to_string();
    match_secret("Retell", secrets, &given, |secret| {
        hmac_parts(secret, &[body, ts_digits.as_bytes()])
    })
}

/// Verifies Cal.com's `X-Cal-Signature-256` over the raw `body`. Returns the id of the secret
/// that matched, or `None` for `no-secret-provided` when the tenant allows unsigned webhooks.
pub fn verify_calcom(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretRef<'_>],
    allow_unsigned: bool,
) -> Result<Option<String>, SignatureError> {
    let value = header
        .ok_or(SignatureError::MissingHeader {
            header: CALCOM_HEADER,
        })?
        .trim();
    if value == CALCOM_NO_SECRET {
        return if allow_unsigned {
            Ok(None)
        } else {
            Err(SignatureError::UnsignedNotAllowed)
        };
    }
    let given = decode_digest(value).ok_or_else(|| {
        let problem = match value.chars().count() {
            64 => "it contains characters that are not hex digits".to_owned(),
            n => format!("it has {n} characters, not 64 hex digits"),
        };
        malformed(CALCOM_HEADER, CALCOM_FORMAT, problem)
    })?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret {
            provider: "Cal.com",
        });
    }
    match_secret("Cal.com", secrets, &given, |secret| {
        hmac_parts(secret, &[body])
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000;
    const BODY: &[u8] = br#"{"event":"call_ended","call":{"call_id":"call_1"}}"#;
    const K1: SecretRef<'static> = SecretRef {
        id: "sec_old",
        value: "key_old_0123",
    };
    const K2: SecretRef<'static> = SecretRef {
        id: "sec_new",
        value: "key_new_4567",
    };

    fn retell(
        header: &str,
        body: &[u8],
        secrets: &[SecretRef<'_>],
    ) -> Result<String, SignatureError> {
        verify_retell(Some(header), body, secrets, NOW, RETELL_TOLERANCE_MS)
    }

    #[test]
    fn retell_valid() {
        let header = sign_retell(K1.value, BODY, NOW - 1_000);
        assert_eq!(retell(&header, BODY, &[K1]).unwrap(), "sec_old");
    }

    #[test]
    fn retell_tolerates_spacing_order_and_case() {
        let header = sign_retell(K1.value, BODY, NOW);
        let (v, d) = header.split_once(',').unwrap();
        let shuffled = format!("  {} , {}  ", d.to_uppercase().replacen("D=", "d=", 1), v);
        assert_eq!(retell(&shuffled, BODY, &[K1]).unwrap(), "sec_old");
    }

    #[test]
    fn retell_wrong_key_and_tampered_body() {
        let header = sign_retell("some_other_key", BODY, NOW);
        let err = retell(&header, BODY, &[K1, K2]).unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch { .. }), "{err}");
        // The refusal must not tell a caller how many secrets the tenant has active.
        let message = err.to_string();
        assert!(
            !message.contains('2') && !message.contains("secrets"),
            "{message}"
        );

        let header = sign_retell(K1.value, BODY, NOW);
        let tampered = br#"{"event":"call_ended","call":{"call_id":"call_2"}}"#;
        assert!(matches!(
            retell(&header, tampered, &[K1]),
            Err(SignatureError::Mismatch { .. })
        ));
        // Re-serialised JSON is a different byte string: the raw bytes are what is signed.
        let reserialised = br#"{"event": "call_ended", "call": {"call_id": "call_1"}}"#;
        assert!(retell(&header, reserialised, &[K1]).is_err());
    }

    #[test]
    fn retell_timestamp_outside_tolerance() {
        for (offset, word) in [(-360_000, "behind"), (360_000, "ahead of")] {
            let header = sign_retell(K1.value, BODY, NOW + offset);
            let err = retell(&header, BODY, &[K1]).unwrap_err();
            assert!(
                matches!(err, SignatureError::OutsideTolerance { skew_ms, .. } if skew_ms == -offset),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("360.0 s") && msg.contains(word) && msg.contains("300.0 s"),
                "{msg}"
            );
        }
        // Exactly at the edge is still accepted.
        let header = sign_retell(K1.value, BODY, NOW - RETELL_TOLERANCE_MS);
        assert!(retell(&header, BODY, &[K1]).is_ok());
    }

    #[test]
    fn retell_malformed_headers() {
        let good_d = "ab".repeat(32);
        let cases = [
            String::new(),
            "garbage".to_owned(),
            format!("d={good_d}"),
            "v=1764064800000".to_owned(),
            format!("v=abc,d={good_d}"),
            format!("v=-5,d={good_d}"),
            format!("v=99999999999999999999999,d={good_d}"),
            "v=1764064800000,d=abcd".to_owned(),
            format!("v=1764064800000,d={}", "zz".repeat(32)),
            format!("v=1,v=2,d={good_d}"),
            format!("v=1764064800000;d={good_d}"),
        ];
        for header in cases {
            let err = retell(&header, BODY, &[K1]).unwrap_err();
            assert!(
                matches!(err, SignatureError::Malformed { .. }),
                "{header:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("v=<unix-ms>,d=<64 hex>") && msg.contains(RETELL_HEADER),
                "{msg}"
            );
        }
    }

    #[test]
    fn retell_missing_header_and_no_secret() {
        let err = verify_retell(None, BODY, &[K1], NOW, RETELL_TOLERANCE_MS).unwrap_err();
        assert!(err.to_string().contains("x-retell-signature"), "{err}");
        let header = sign_retell(K1.value, BODY, NOW);
        let err = retell(&header, BODY, &[]).unwrap_err();
        assert!(matches!(err, SignatureError::NoSecret { .. }), "{err}");
    }

    #[test]
    fn retell_rotated_secret_returns_matching_id() {
        let header = sign_retell(K2.value, BODY, NOW);
        assert_eq!(retell(&header, BODY, &[K1, K2]).unwrap(), "sec_new");
        assert_eq!(retell(&header, BODY, &[K2, K1]).unwrap(), "sec_new");
    }

    #[test]
    fn calcom_valid_invalid_and_unsigned() {
        let body = br#"{"triggerEvent":"BOOKING_CREATED"}"#;
        let sig = sign_calcom(K2.value, body);
        assert_eq!(
            verify_calcom(Some(&sig), body, &[K1, K2], false)
                .unwrap()
                .as_deref(),
            Some("sec_new")
        );
        let upper = sig.to_uppercase();
        assert!(verify_calcom(Some(&upper), body, &[K2], false).is_ok());
        let err = verify_calcom(Some(&sig), b"{}", &[K1, K2], false).unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch { .. }), "{err}");
        let err = verify_calcom(Some(&sign_calcom("other", body)), body, &[K1], false).unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch { .. }), "{err}");

        assert_eq!(
            verify_calcom(Some(CALCOM_NO_SECRET), body, &[], true).unwrap(),
            None
        );
        let err = verify_calcom(Some(CALCOM_NO_SECRET), body, &[K1], false).unwrap_err();
        assert!(matches!(err, SignatureError::UnsignedNotAllowed));
        assert!(err.to_string().contains("no-secret-provided"), "{err}");

        let err = verify_calcom(None, body, &[K1], true).unwrap_err();
        assert!(err.to_string().contains(CALCOM_HEADER), "{err}");
        let err = verify_calcom(Some("sha256=abc"), body, &[K1], false).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
        let err = verify_calcom(Some(&sig), body, &[], true).unwrap_err();
        assert!(matches!(err, SignatureError::NoSecret { .. }), "{err}");
    }

    #[test]
    fn header_text_tells_absent_from_unreadable() {
        assert_eq!(header_text(RETELL_HEADER, None).unwrap(), None);
        let plain = b"v=1, d=ab\tcd";
        assert_eq!(
            header_text(RETELL_HEADER, Some(plain)).unwrap(),
            Some("v=1, d=ab\tcd")
        );
        for raw in ["v=1,d=\u{e4}".as_bytes(), b"v=1\x7f", b"\xff\xfe"] {
            let err = header_text(RETELL_HEADER, Some(raw)).unwrap_err();
            assert!(matches!(err, SignatureError::NotAscii { .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains("present") && message.contains("not visible ASCII"),
                "{message}"
            );
            assert!(!message.contains("missing"), "{message}");
        }
    }
}
