//! Secrets and signatures of the Standard Webhooks spec (v1): a secret is `whsec_` + base64 of
//! the key; a signature is `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a new secret's key.
pub const SECRET_KEY_BYTES: usize = 32;

/// A new secret from the operating system's random source.
pub fn new_secret() -> String {
    let key = kuota_persist::random::random_bytes::<SECRET_KEY_BYTES>();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key a secret stands for; `None` for a text that is not a secret.
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// `v1,<base64>`: the signature of one attempt under `key`.
pub fn sign(key: &[u8], message_id: &str, timestamp_seconds: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret, separated by spaces (during a
/// rotation, receivers that know either secret can verify). Secrets that do not decode (none
/// Kuota wrote) are left out.
pub fn signature_header(secrets: &[&str], message_id: &str, timestamp_seconds: u64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| key_of(secret))
        .map(|key| sign(&key, message_id, timestamp_seconds, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_test_vector_signs_as_published() {
        let key = key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn a_new_secret_decodes_to_its_key_length() {
        let secret = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(key_of(&secret).unwrap().len(), SECRET_KEY_BYTES);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn during_a_rotation_both_secrets_sign() {
        let (old, new) = (new_secret(), new_secret());
        let header = signature_header(&[&new, &old], "msg_1", 1, b"{}");
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(signatures[1], sign(&key_of(&old).unwrap(), "msg_1", 1, b"{}"));
    }
}
