//! Tenant API keys: how a key is made and how it is looked up. A key is `ak_` followed by 256
//! random bits in hex; only its SHA-256 is stored. A fast hash is enough for a key with that
//! much entropy (nothing to brute-force), and it keeps a request's lookup to one point read.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every key starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "ak_";

/// A fresh key: `ak_` + 64 hex characters from the OS-seeded CSPRNG.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a key: lowercase hex SHA-256 of the whole string.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh public key id (`key_…`), for listing and revoking.
pub fn new_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_256_bit_hex_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a[KEY_PREFIX.len()..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }
}
