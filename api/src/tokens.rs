//! Registrant access tokens and request fingerprints.
//!
//! A registrant's access token is 128 bits of HMAC-SHA-256 under the node group's secret
//! (stored once in the database's settings, shared by every node) over the event and the
//! request's `Idempotency-Key`. It is therefore unguessable without the secret, yet the same
//! for a retried request: a replayed 201 carries the same token, byte for byte, while the
//! store keeps only the token's SHA-256.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use kuota_engine::{AccessTokenHash, EventId, Fingerprint, IdempotencyKey};

/// The node group's token secret, keyed once: HMAC-SHA-256 hashes the key's inner and outer
/// pads before any message, two of the four SHA-256 blocks of a token, so a request clones the
/// keyed state instead of keying it again.
#[derive(Clone)]
pub struct TokenKey(Hmac<Sha256>);

impl TokenKey {
    pub fn new(secret: &[u8]) -> TokenKey {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        TokenKey(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"))
    }

    /// The access token of the registration created by this event's request with this key:
    /// `access_token` under this secret.
    pub fn access_token(&self, event: &EventId, key: &IdempotencyKey) -> AccessToken {
        let mut mac = self.0.clone();
        mac.update(event.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        let mut digits = [0; 32];
        hex_into(&mac.finalize().into_bytes()[..16], &mut digits);
        AccessToken(digits)
    }
}

/// A registrant's access token: 32 lower-case hexadecimal digits, made only by
/// `TokenKey::access_token`. Typed so that a writer of it knows it needs no escape (the
/// admission's JSON writes it as it is). Kept in place: every admission makes one, and a
/// `String` of it was an allocation and a free more.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken([u8; 32]);

impl AccessToken {
    pub fn as_str(&self) -> &str {
        // Only `hex_into` writes the digits.
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }

    /// The token's digits: `as_str` without its check that they are UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A bearer credential: kept out of logs and panic messages.
        formatter.write_str("AccessToken(..)")
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenKey(..)")
    }
}

/// The access token of the registration created by this event's request with this key.
pub fn access_token(secret: &[u8], event: &EventId, key: &IdempotencyKey) -> AccessToken {
    TokenKey::new(secret).access_token(event, key)
}

/// What the store keeps of a token: the hexadecimal SHA-256 of its text, in place (no
/// allocation: every registration makes one).
pub fn token_hash(token: &[u8]) -> AccessTokenHash {
    let mut digits = [0; 64];
    hex_into(&Sha256::digest(token), &mut digits);
    AccessTokenHash::new(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
}

/// Writes the lower-case hexadecimal digits of `bytes` into `digits`, twice as long, as
/// `hex::encode` writes them, without collecting a character at a time.
fn hex_into(bytes: &[u8], digits: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    assert_eq!(digits.len(), 2 * bytes.len(), "two digits per byte");
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Compares two secrets in time that depends only on their length class, not on where they
/// differ: both are hashed first, then every byte of the digests is compared.
pub fn constant_time_eq(left: &str, right: &str) -> bool {
    let (left, right) = (Sha256::digest(left.as_bytes()), Sha256::digest(right.as_bytes()));
    left.iter().zip(right.iter()).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// A digest of a registration body's parsed fields, so that the same request sent with other
/// whitespace or key order is still the same request.
pub fn fingerprint(canonical_fields: &[&[u8]]) -> Fingerprint {
    let mut hasher = Sha256::new();
    for field in canonical_fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
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
        assert_eq!(token.as_str().len(), 32);
        assert!(token.as_str().bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(token, access_token(b"secret", &event, &key));
        assert_ne!(token, access_token(b"other", &event, &key));
        assert_ne!(token, access_token(b"secret", &event, &IdempotencyKey::parse("k2").unwrap()));
    }

    #[test]
    fn a_keyed_secret_gives_the_tokens_of_the_secret() {
        let event = EventId::parse("race").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let keyed = TokenKey::new(b"secret");
        // The HMAC of "race\nk1" under "secret", computed afresh without the keyed state.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(b"race\nk1");
        let expected = hex::encode(&mac.finalize().into_bytes()[..16]);
        assert_eq!(keyed.access_token(&event, &key).as_str(), expected);
        // The keyed state is not consumed: the next token is computed from the key alone.
        assert_eq!(keyed.access_token(&event, &key).as_str(), expected);
        assert_eq!(access_token(b"secret", &event, &key).as_str(), expected);
    }

    #[test]
    fn hex_is_the_hex_crates() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut digits = vec![0; 2 * bytes.len()];
        hex_into(&bytes, &mut digits);
        assert_eq!(String::from_utf8(digits).unwrap(), hex::encode(&bytes));
        assert_eq!(token_hash(b"abc").as_str(), hex::encode(Sha256::digest(b"abc")));
        for length in [0, 1, 31, 32, 33, 100] {
            let token = vec![b'7'; length];
            assert_eq!(token_hash(&token).as_str(), hex::encode(Sha256::digest(&token)));
        }
    }

    #[test]
    fn fingerprints_separate_fields() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"a", b"b"]), fingerprint(&[b"a", b"b"]));
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
