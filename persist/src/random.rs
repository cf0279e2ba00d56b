//! Unpredictable bytes and tokens from the operating system: lease tokens, admin session ids
//! and (through the API) registrants' access tokens.
//!
//! Everything here comes from the operating system's cryptographically secure generator
//! (`getrandom(2)` on Linux, through the `getrandom` crate), which never blocks once the kernel
//! has been seeded at boot. No user-space generator sits in between, so there is no seed to
//! leak, to fork into two processes, or to get wrong.
//!
//! A machine whose generator cannot be read cannot issue tokens that are safe to hand out, so
//! a failure is a panic with a clear message, not an error to route around.

/// Bytes in a 128-bit token: enough that guessing one, or two ever colliding, is out of reach.
pub const TOKEN_128_LENGTH_BYTES: usize = 16;

/// Characters in the hexadecimal form of a 128-bit token.
pub const TOKEN_128_HEX_LENGTH_CHARACTERS: usize = 2 * TOKEN_128_LENGTH_BYTES;

/// The largest token `token_hex` produces, in random bytes. Tokens are identifiers, not bulk
/// data; anything larger is a mistake of the caller.
pub const TOKEN_LENGTH_MAX_BYTES: usize = 1024;

/// `N` random bytes from the operating system.
///
/// # Panics
/// When the operating system's generator cannot be read (see the module documentation).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes);
    bytes
}

/// Fills `buffer` with random bytes from the operating system.
///
/// # Panics
/// When the operating system's generator cannot be read (see the module documentation).
pub fn fill_random(buffer: &mut [u8]) {
    getrandom::fill(buffer).unwrap_or_else(|error| {
        panic!("cannot read the operating system's random generator ({error}): no secure token can be issued")
    });
}

/// A token of `length_bytes` random bytes, as `2 * length_bytes` lower-case hexadecimal
/// characters.
///
/// # Panics
/// When `length_bytes` is 0 or above `TOKEN_LENGTH_MAX_BYTES` (a mistake of the caller), or
/// when the random source cannot be read.
pub fn token_hex(length_bytes: usize) -> String {
    assert!(
        (1..=TOKEN_LENGTH_MAX_BYTES).contains(&length_bytes),
        "a token must have 1 to {TOKEN_LENGTH_MAX_BYTES} random bytes, not {length_bytes}"
    );
    let mut bytes = vec![0u8; length_bytes];
    fill_random(&mut bytes);
    hex::encode(bytes)
}

/// A 128-bit token as 32 lower-case hexadecimal characters.
pub fn random_token_128() -> String {
    hex::encode(random_bytes::<TOKEN_128_LENGTH_BYTES>())
}

/// Whether `text` is exactly `length_characters` lower-case hexadecimal characters: the one
/// form tokens are issued in, so that a token has a single spelling.
pub fn is_lowercase_hex(text: &str, length_characters: usize) -> bool {
    text.len() == length_characters && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_tokens_differ() {
        assert_ne!(random_token_128(), random_token_128());
        assert_ne!(token_hex(8), token_hex(8));
        assert_ne!(random_bytes::<16>(), random_bytes::<16>());
    }

    #[test]
    fn a_128_bit_token_is_32_lowercase_hex_characters() {
        let token = random_token_128();
        assert_eq!(token.len(), TOKEN_128_HEX_LENGTH_CHARACTERS);
        assert!(is_lowercase_hex(&token, TOKEN_128_HEX_LENGTH_CHARACTERS), "{token}");
    }

    #[test]
    fn a_token_has_two_hex_characters_per_random_byte() {
        for length_bytes in [1, 7, 32, TOKEN_LENGTH_MAX_BYTES] {
            let token = token_hex(length_bytes);
            assert!(is_lowercase_hex(&token, 2 * length_bytes), "{token}");
        }
    }

    #[test]
    fn hex_check_refuses_wrong_length_upper_case_and_non_hex() {
        assert!(is_lowercase_hex("00ff", 4));
        assert!(!is_lowercase_hex("00ff", 6));
        assert!(!is_lowercase_hex("00FF", 4));
        assert!(!is_lowercase_hex("00fg", 4));
        assert!(!is_lowercase_hex("é0", 3));
    }

    #[test]
    #[should_panic(expected = "1 to 1024 random bytes")]
    fn an_empty_token_is_a_mistake_of_the_caller() {
        token_hex(0);
    }
}
