//! Registrant access tokens and request fingerprints.
//!
//! A registrant's access token is 128 bits of HMAC-SHA-256 under the node group's secret
//! (stored once in the database's settings, shared by every node) over the event and the
//! request's `Idempotency-Key`. It is therefore unguessable without the secret, yet the same
//! for a retried request: a replayed 201 carries the same token, byte for byte, while the
//! store keeps only the token's SHA-256.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use kuota_engine::{EventId, Fingerprint, IdempotencyKey};

/// The access token of the registration created by this event's request with this key.
pub fn access_token(secret: &[u8], event: &EventId, key: &IdempotencyKey) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(event.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(key.as_str().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time that depends only on their length class, not on where they
/// differ: both are hashed first, then every byte of the digests is compared.
pub fn constant_time_eq(left: &str, right: &str) -> bool {
    let (left, right) = (Sha256::digest(left.as_bytes()), Sha256::digest(right.as_bytes()));
    left.iter().zip(right.iter()).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// A digest of a registration body's parsed fields, so that the same request sent with other
/// whitespace or key order is still the same request.
pub fn fingerprint(canonical_fields: &[&str]) -> Fingerprint {
    let mut hasher = Sha256::new();
    for field in canonical_fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Fingerprint(u64::from_be_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_32_hex_digits_and_depends_on_event_key_and_secret() {
        let event = EventId::parse("race").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let token = access_token(b"secret", &event, &key);
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(token, access_token(b"secret", &event, &key));
        assert_ne!(token, access_token(b"other", &event, &key));
        assert_ne!(token, access_token(b"secret", &event, &IdempotencyKey::parse("k2").unwrap()));
    }

    #[test]
    fn fingerprints_separate_fields() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
