//! Identifiers and the small domain types that name things. Each is parsed once, at the edge,
//! through `TryFrom`/`parse`, so that everything past the edge can trust it.

use std::fmt;
use std::sync::Arc;

use crate::limits::{
    CATEGORY_CODE_LENGTH_MAX, EMAIL_LENGTH_MAX, EVENT_ID_LENGTH_MAX, IDEMPOTENCY_KEY_LENGTH_MAX,
};

/// Why a piece of input is not a valid identifier; the message is meant for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

fn is_code_character(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// An event's id: 1–64 of `[A-Za-z0-9_-]`. Cheap to clone.
///
/// Equality, order and `Hash` are its text's (the derived ones, of the one field, are `str`'s),
/// so it is `Borrow<str>`: a map keyed by ids is looked up by a request's text without making
/// an id of it (an allocation) first.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(Arc<str>);

impl EventId {
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        Self::check(text)?;
        Ok(EventId(Arc::from(text)))
    }

    /// Whether `parse` would accept `text`, without making the id.
    pub fn check(text: &str) -> Result<(), InvalidId> {
        if text.is_empty() || text.len() > EVENT_ID_LENGTH_MAX {
            return Err(InvalidId("an event id has 1 to 64 characters"));
        }
        if !text.bytes().all(is_code_character) {
            return Err(InvalidId("an event id uses only A-Z, a-z, 0-9, '_' and '-'"));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category's code, such as `10K`: 1–32 of `[A-Za-z0-9_-]`. Kept in place when it is short
/// (as nearly every code is): every registration's command and effect carries a copy, and
/// cloning a shared text writes its counter, an atomic add, once for each and again when each
/// is dropped. Equality, order and `Hash` are the text's.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CategoryCode(Text);

impl CategoryCode {
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.is_empty() || text.len() > CATEGORY_CODE_LENGTH_MAX {
            return Err(InvalidId("a category code has 1 to 32 characters"));
        }
        if !text.bytes().all(is_code_character) {
            return Err(InvalidId("a category code uses only A-Z, a-z, 0-9, '_' and '-'"));
        }
        Ok(CategoryCode(Text::new(text)))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The code's bytes: `as_str` without its UTF-8 check, for a caller that reads bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Bytes of a text that `Text` keeps in place rather than behind an `Arc`: most e-mail
/// addresses and idempotency keys are this short.
const TEXT_INLINE_MAX: usize = 22;

/// The text of an `Email` or an `IdempotencyKey`: short texts in place, longer ones shared.
/// Cloning a short one copies 24 bytes; cloning an `Arc` writes its counter, which a table of
/// thousands of registrants mostly finds out of the cache (the simulator clones each
/// registrant's twice per decision). Which form a text takes depends on its length alone, so
/// two equal texts have the same form.
#[derive(Clone)]
enum Text {
    Inline { length: u8, bytes: [u8; TEXT_INLINE_MAX] },
    Shared(Arc<str>),
}

const _: () = assert!(std::mem::size_of::<Text>() == 24);

impl Text {
    fn new(text: &str) -> Self {
        if text.len() > TEXT_INLINE_MAX {
            return Text::Shared(Arc::from(text));
        }
        Text::inline(text.as_bytes())
    }

    /// `new` of an ASCII text given as its bytes.
    fn from_ascii(bytes: &[u8]) -> Self {
        if bytes.len() > TEXT_INLINE_MAX {
            // The caller gives ASCII, which is UTF-8.
            return Text::Shared(Arc::from(std::str::from_utf8(bytes).expect("ASCII is UTF-8")));
        }
        Text::inline(bytes)
    }

    /// The bytes of a text of at most `TEXT_INLINE_MAX` bytes, in place.
    fn inline(text: &[u8]) -> Self {
        let mut bytes = [0; TEXT_INLINE_MAX];
        bytes[..text.len()].copy_from_slice(text);
        Text::Inline { length: text.len() as u8, bytes }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { length, bytes } => &bytes[..usize::from(*length)],
            Text::Shared(text) => text.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole, so valid UTF-8; checking again costs a few
            // nanoseconds and keeps the crate free of `unsafe`.
            Text::Inline { .. } => std::str::from_utf8(self.as_bytes()).expect("copied from a str"),
            Text::Shared(text) => text,
        }
    }
}

/// A registrant's e-mail address, trimmed and lower-cased. It is also the registrant's key:
/// two registrations whose e-mails normalize to the same text are the same person.
///
/// It carries its text's digest (`text_digest`), made once when it is parsed (or made of a
/// `CheckedEmail`): the core keys registrants by digest, and a request's e-mail is looked up
/// more than once (and again by recovery), which hashed the same text each time. Equality,
/// order and `Hash` are the text's.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    text: Text,
    digest: [u64; 2],
}

impl Email {
    /// Trims and lower-cases, then checks the shape `local@domain.tld` without spaces or
    /// control characters. Deliverability is not this type's business.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        CheckedEmail::parse(text).map(Email::from)
    }
}

/// An e-mail address as `Email::parse` checks and normalizes it, without the digest an `Email`
/// carries (`Email::from` makes it): what a request's body is checked with before it reaches an
/// event. A registration refused as sold out from the published counters never needs the
/// digest, which was about 280 instructions of its answer (callgrind).
#[derive(Clone)]
pub struct CheckedEmail(Text);

impl From<CheckedEmail> for Email {
    fn from(address: CheckedEmail) -> Self {
        Email { digest: bytes_digest(address.0.as_bytes()), text: address.0 }
    }
}

impl CheckedEmail {
    /// The checks and the normalizing of `Email::parse`.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let trimmed = text.trim();
        // An ASCII address (nearly every one) byte by byte: for ASCII, `to_ascii_lowercase`
        // is `to_lowercase`, and the bytes that are whitespace or control characters are those
        // up to the space and DEL. Every registration, a sold-out one too, parses one.
        let ascii = trimmed.is_ascii();
        if ascii && trimmed.len() <= TEXT_INLINE_MAX {
            // Short (most addresses): lower-cased in the array that `Text` keeps in place, so
            // that no heap copy is made only to be copied again and dropped.
            let mut bytes = [0; TEXT_INLINE_MAX];
            let normalized = &mut bytes[..trimmed.len()];
            normalized.copy_from_slice(trimmed.as_bytes());
            normalized.make_ascii_lowercase();
            check_address(normalized, ascii_is_spaced(normalized))?;
            return Ok(CheckedEmail(Text::Inline { length: trimmed.len() as u8, bytes }));
        }
        let normalized = if ascii { trimmed.to_ascii_lowercase() } else { trimmed.to_lowercase() };
        let spaced = if ascii {
            ascii_is_spaced(normalized.as_bytes())
        } else {
            normalized.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        check_address(normalized.as_bytes(), spaced)?;
        Ok(CheckedEmail(Text::new(&normalized)))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// See `Email::as_bytes`.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether an ASCII text holds whitespace or a control character: for ASCII, the bytes up to
/// the space and DEL are those `char::is_whitespace` or `char::is_control` names.
fn ascii_is_spaced(text: &[u8]) -> bool {
    text.iter().any(|&byte| byte <= b' ' || byte == 0x7f)
}

/// The checks of `Email::parse` on a normalized address, in their order; `spaced` says whether
/// it holds whitespace or a control character. Over bytes, for either way of normalizing: in
/// UTF-8, `@` and `.` are single bytes that no other character's bytes contain.
fn check_address(normalized: &[u8], spaced: bool) -> Result<(), InvalidId> {
    if normalized.is_empty() {
        return Err(InvalidId("an e-mail address is required"));
    }
    if normalized.len() > EMAIL_LENGTH_MAX {
        return Err(InvalidId("an e-mail address has at most 254 characters"));
    }
    if spaced {
        return Err(InvalidId("an e-mail address has no spaces or control characters"));
    }
    let shape = Err(InvalidId("an e-mail address has the shape name@domain"));
    // The domain (after the last `@`) in one pass from the end: not empty, a dot in it, none
    // first, last or next to another. Every registration, a sold-out one too, checks one; a
    // search for each rule was a pass of its own.
    let mut dotted = false;
    // Whether the byte after this one is a dot, or this is the last: then a dot here is last
    // or next to another, and an `@` here leaves the domain empty or starting with a dot.
    let mut before_dot = true;
    let mut at = None;
    for (index, &byte) in normalized.iter().enumerate().rev() {
        match byte {
            b'@' => {
                at = Some(index);
                break;
            }
            b'.' if before_dot => return shape,
            b'.' => (dotted, before_dot) = (true, true),
            _ => before_dot = false,
        }
    }
    let Some(at) = at else { return shape };
    let local = &normalized[..at];
    if before_dot || !dotted || local.is_empty() || local.contains(&b'@') {
        return shape;
    }
    Ok(())
}

/// The client's `Idempotency-Key`: 1–255 printable ASCII characters (space to `~`). Like
/// `Email`, it carries its text's digest, made once when it is parsed.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey {
    text: Text,
    digest: [u64; 2],
}

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.is_empty() || text.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return Err(InvalidId("an Idempotency-Key has 1 to 255 characters"));
        }
        if !text.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
            return Err(InvalidId("an Idempotency-Key uses printable ASCII only"));
        }
        Ok(IdempotencyKey { digest: text_digest(text), text: Text::new(text) })
    }

    /// `parse` of a header's bytes, as `parse` of their text decides it, and a refusal for
    /// bytes that are not UTF-8 (they are not printable ASCII either). A key (printable ASCII)
    /// is read without a check that it is UTF-8 first: every registration, a sold-out one too,
    /// reads one.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, InvalidId> {
        if !bytes.iter().all(|byte| (0x20..=0x7e).contains(byte)) {
            return match std::str::from_utf8(bytes) {
                Ok(text) => Self::parse(text),
                Err(_) => Err(InvalidId("an Idempotency-Key uses printable ASCII only")),
            };
        }
        if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return Err(InvalidId("an Idempotency-Key has 1 to 255 characters"));
        }
        Ok(IdempotencyKey { digest: bytes_digest(bytes), text: Text::from_ascii(bytes) })
    }
}

/// Equality, order and hashing of a text identifier kept as a `Text` (with its digest, for an
/// e-mail or a key): those of its text alone, as when it was the text alone (the digest
/// follows from the text).
macro_rules! text_order_impls {
    ($($name:ident),*) => {$(
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }
        impl Eq for $name {}
        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_bytes().cmp(other.as_bytes())
            }
        }
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }
    )*};
}

text_order_impls!(Email, CheckedEmail, IdempotencyKey, CategoryCode);

/// The accessors of a text identifier kept as a `Text` with its digest (`text_digest`, made
/// when it was parsed): an e-mail or a key.
macro_rules! digested_text_accessors {
    ($($name:ident),*) => {$(
        impl $name {
            pub fn as_str(&self) -> &str {
                self.text.as_str()
            }

            /// The text's bytes: `as_str` without its check that they are UTF-8 (a short
            /// text's check is some 170 instructions), for a caller that reads bytes.
            pub fn as_bytes(&self) -> &[u8] {
                self.text.as_bytes()
            }

            /// `text_digest` of the text, made when it was parsed.
            pub(crate) fn digest(&self) -> [u64; 2] {
                self.digest
            }
        }
    )*};
}

digested_text_accessors!(Email, IdempotencyKey);

/// A digest of a request body, so that a key reused with another body can be told apart from
/// a retry. The API computes it; the engine only compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint(pub u64);

/// A registration, numbered from 1 within its event. The API shows it as `<event>.<number>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct RegistrationId(pub u64);

/// The per-event sequence number of an effect; the write-behind commits them in this order
/// and uses them to apply an effect at most once.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Seq(pub u64);

/// A 128-bit digest of a text: SipHash-1-3 (fixed keys) for one word, and a multiply-fold
/// hash with a murmur3 finalizer for the other. Deterministic (the core draws no randomness),
/// well spread, not cryptographic. Two independent functions make an accidental collision of
/// both words about as likely as one of 128 bits, at little more than the cost of one SipHash.
/// `Email` and `IdempotencyKey` make it once, when they are parsed.
pub(crate) fn text_digest(text: &str) -> [u64; 2] {
    bytes_digest(text.as_bytes())
}

/// `text_digest` of a text's bytes.
fn bytes_digest(bytes: &[u8]) -> [u64; 2] {
    [sip13_of_str(bytes), fold_hash(bytes)]
}

/// What `std::hash::DefaultHasher::new()` gives for `text.hash(..)` (SipHash-1-3 with both keys
/// zero over the text and the `0xff` that `Hasher::write_str` appends), computed directly: the
/// streaming hasher's buffering cost more than the rounds on texts this short. A test holds
/// the two equal, so that the digests are the ones they were.
fn sip13_of_str(bytes: &[u8]) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    #[inline(always)]
    fn compress(v: &mut [u64; 4], word: u64) {
        v[3] ^= word;
        round(v);
        v[0] ^= word;
    }
    // The keys are zero, so the state starts as the constants themselves.
    let mut v = [0x736f_6d65_7073_6575, 0x646f_7261_6e64_6f6d, 0x6c79_6765_6e65_7261, 0x7465_6462_7974_6573];
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        // `chunks_exact(8)` yields exactly 8 bytes.
        compress(&mut v, u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
    }
    // The message is the text and one 0xff byte; the last block carries its length's low byte.
    let remainder = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..remainder.len()].copy_from_slice(remainder);
    tail[remainder.len()] = 0xff;
    let length_byte = ((bytes.len() as u64).wrapping_add(1) & 0xff) << 56;
    let tail = u64::from_le_bytes(tail);
    let last = if remainder.len() == 7 {
        // The 0xff filled the word: it is a whole word, and the length goes alone.
        compress(&mut v, tail);
        length_byte
    } else {
        tail | length_byte
    };
    compress(&mut v, last);
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// murmur3's x64 body, one lane: each word is mixed before it meets the state, so that
/// differences in two words cannot cancel each other out.
fn fold_hash(bytes: &[u8]) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mix = |word: u64| word.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mut state = (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        // `chunks_exact(8)` yields exactly 8 bytes.
        let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        state = (state ^ mix(word)).rotate_left(27).wrapping_mul(5).wrapping_add(0x52dc_e729);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    state ^= mix(u64::from_le_bytes(tail));
    // murmur3's fmix64: every input bit reaches every output bit.
    state ^= state >> 33;
    state = state.wrapping_mul(0xff51_afd7_ed55_8ccd);
    state ^= state >> 33;
    state = state.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    state ^ (state >> 33)
}

macro_rules! text_identifier_impls {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(text: String) -> Result<Self, InvalidId> {
                Self::parse(&text)
            }
        }
        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(text: &str) -> Result<Self, InvalidId> {
                Self::parse(text)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_string()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({:?})", stringify!($name), self.as_str())
            }
        }
    )*};
}

text_identifier_impls!(EventId, CategoryCode, Email, CheckedEmail, IdempotencyKey);

impl std::borrow::Borrow<str> for EventId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_a_million_distinct_texts_are_distinct_in_both_words() {
        let mut first = std::collections::HashSet::new();
        let mut second = std::collections::HashSet::new();
        for n in 0..1_000_000u32 {
            let [a, b] = text_digest(&format!("runner{n}@example.org"));
            assert!(first.insert(a) && second.insert(b), "collision at {n}");
        }
    }

    #[test]
    fn the_direct_siphash_equals_the_standard_hasher_on_every_length() {
        use std::hash::{Hash, Hasher};
        let alphabet: Vec<char> = "abcXYZ09@.-_~ é".chars().collect();
        for length in 0..=300usize {
            for variant in 0..3usize {
                let text: String =
                    (0..length).map(|i| alphabet[(i * 7 + variant * 5 + length) % alphabet.len()]).collect();
                let mut standard = std::hash::DefaultHasher::new();
                text.hash(&mut standard);
                assert_eq!(sip13_of_str(text.as_bytes()), standard.finish(), "{text:?}");
            }
        }
    }

    #[test]
    fn parsed_identifiers_carry_their_texts_digest_and_compare_by_text() {
        let email = Email::parse(" Ana@Example.org").unwrap();
        assert_eq!(email.digest(), text_digest("ana@example.org"));
        assert_eq!(email, Email::parse("ana@example.org").unwrap());
        assert!(email < Email::parse("bob@example.org").unwrap());
        let key = IdempotencyKey::parse("form-1").unwrap();
        assert_eq!(key.digest(), text_digest("form-1"));
        // What deserializing does (`serde(try_from = "String")`).
        let back = IdempotencyKey::try_from(String::from("form-1")).unwrap();
        assert_eq!((back.digest(), back), (key.digest(), key));
    }

    #[test]
    fn short_and_long_texts_read_compare_and_hash_as_their_text() {
        use std::hash::{BuildHasher, RandomState};
        // Around the length kept in place: 22, 21 and 23 bytes; a long one; one not ASCII.
        let texts = ["a2345678901@sample.org", "a234567890@sample.org", "a23456789012@sample.org"];
        let mut texts: Vec<String> = texts.iter().map(|text| text.to_string()).collect();
        texts.push(format!("{}@example.org", "x".repeat(200)));
        texts.push("ä@example.org".to_string());
        let hasher = RandomState::new();
        for text in &texts {
            let email = Email::parse(text).unwrap();
            assert_eq!(email.as_str(), text);
            assert_eq!(hasher.hash_one(&email), hasher.hash_one(text.as_str()), "{text}");
            let key = IdempotencyKey::parse(&text.replace('ä', "a")).unwrap();
            assert_eq!(key.as_str(), text.replace('ä', "a"));
            assert_eq!(String::from(key.clone()), key.as_str());
            for other in &texts {
                let other_email = Email::parse(other).unwrap();
                assert_eq!(email == other_email, text == other);
                assert_eq!(email.cmp(&other_email), text.cmp(other), "{text} against {other}");
            }
        }
        let short = Email::parse(&texts[1]).unwrap();
        assert!(matches!(short.text, Text::Inline { .. }));
        assert!(matches!(short.clone().text, Text::Inline { .. }));
        assert!(matches!(Email::parse(&texts[2]).unwrap().text, Text::Shared(_)));
    }

    #[test]
    fn category_codes_short_and_long_read_compare_and_hash_as_their_text() {
        use std::hash::{BuildHasher, RandomState};
        // 22 bytes (in place), 23 and 32 (shared), and short ones either side in order.
        let texts = ["10K", "21K", "a234567890123456789012", "a2345678901234567890123", &"Z".repeat(32), "9"];
        let hasher = RandomState::new();
        for text in texts {
            let code = CategoryCode::parse(text).unwrap();
            assert_eq!(code.as_str(), text);
            assert_eq!(format!("{code:?}"), format!("CategoryCode({text:?})"));
            assert_eq!(hasher.hash_one(&code), hasher.hash_one(text), "{text}");
            for other in texts {
                let other_code = CategoryCode::parse(other).unwrap();
                assert_eq!(code == other_code, text == other);
                assert_eq!(code.cmp(&other_code), text.cmp(other), "{text} against {other}");
            }
        }
        assert!(matches!(CategoryCode::parse(texts[2]).unwrap().0, Text::Inline { .. }));
        assert!(matches!(CategoryCode::parse(texts[3]).unwrap().0, Text::Shared(_)));
    }

    #[test]
    fn an_email_is_trimmed_and_lower_cased() {
        let email = Email::parse("  Ana.Runner@Example.ORG ").unwrap();
        assert_eq!(email.as_str(), "ana.runner@example.org");
    }

    #[test]
    fn an_email_without_a_domain_dot_or_with_spaces_is_rejected() {
        for bad in
            ["", "ana", "ana@", "@example.org", "ana@example", "a na@example.org", "ana@@x.org", "ana@x..org"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(250))).is_err());
    }

    /// An address checked without its digest becomes, with it, the `Email` that `parse` makes:
    /// the same text and the same digest, short and long, ASCII and not; and it is refused alike.
    #[test]
    fn a_checked_address_becomes_the_email_parse_makes() {
        let long = format!("{}@example.org", "a".repeat(40));
        for text in [" Ana@Example.org", "a@b.co", "İ@X.ORG", &long, "bad", "a b@x.org", "", "a@b"] {
            let checked = CheckedEmail::parse(text);
            let parsed = Email::parse(text);
            assert_eq!(
                checked.as_ref().map(CheckedEmail::as_str).ok(),
                parsed.as_ref().map(Email::as_str).ok()
            );
            assert_eq!(checked.as_ref().err(), parsed.as_ref().err(), "{text:?}");
            if let (Ok(checked), Ok(parsed)) = (checked, parsed) {
                let made = Email::from(checked);
                assert_eq!((made.as_str(), made.digest()), (parsed.as_str(), parsed.digest()));
                assert_eq!(made.digest(), text_digest(parsed.as_str()));
            }
        }
    }

    /// The ASCII way of `Email::parse` decides and normalizes as the general one: every ASCII
    /// character in the local part, the domain and around the address, against
    /// `str::to_lowercase` and `char::is_whitespace`/`is_control`.
    #[test]
    fn an_ascii_email_is_parsed_as_the_unicode_way_parses_it() {
        let unicode_way = |text: &str| {
            let normalized = text.trim().to_lowercase();
            let spaced = normalized.chars().any(|c| c.is_whitespace() || c.is_control());
            (normalized, spaced)
        };
        for byte in 0u8..=0x7f {
            let c = char::from(byte);
            for text in [format!("a{c}b@x.org"), format!("ab@x{c}.org"), format!("{c}ab@x.org{c}")] {
                let (normalized, spaced) = unicode_way(&text);
                let parsed = Email::parse(&text);
                if spaced {
                    assert!(parsed.is_err(), "{text:?} was accepted");
                } else if let Ok(email) = parsed {
                    assert_eq!(email.as_str(), normalized, "{text:?}");
                    assert_eq!(email.digest(), text_digest(&normalized));
                }
            }
        }
        // Beyond ASCII the general way runs: `İ` lower-cases to two characters.
        assert_eq!(Email::parse("İ@X.ORG").unwrap().as_str(), "i\u{307}@x.org");
        assert!(Email::parse("a\u{85}b@x.org").is_err(), "NEL is whitespace");
    }

    /// `Email::parse` as it was written with one heap copy for every address, kept here as the
    /// reference that the short ASCII way (lower-cased in place) must agree with.
    fn parse_through_the_heap(text: &str) -> Result<String, InvalidId> {
        let trimmed = text.trim();
        let ascii = trimmed.is_ascii();
        let normalized = if ascii { trimmed.to_ascii_lowercase() } else { trimmed.to_lowercase() };
        if normalized.is_empty() {
            return Err(InvalidId("an e-mail address is required"));
        }
        if normalized.len() > EMAIL_LENGTH_MAX {
            return Err(InvalidId("an e-mail address has at most 254 characters"));
        }
        if normalized.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidId("an e-mail address has no spaces or control characters"));
        }
        let Some((local, domain)) = normalized.rsplit_once('@') else {
            return Err(InvalidId("an e-mail address has the shape name@domain"));
        };
        let domain_is_valid = !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.contains('@') || !domain_is_valid {
            return Err(InvalidId("an e-mail address has the shape name@domain"));
        }
        Ok(normalized)
    }

    /// Every ASCII character in every place of short addresses (kept in place) and of addresses
    /// just past that length, and the shapes at the checks' edges: the same text or the same
    /// refusal, with the same message, as the reference; and the digest of the text.
    #[test]
    fn an_email_parses_as_the_heap_way_parsed_it_short_or_long() {
        let mut texts: Vec<String> = [
            "",
            " ",
            "@",
            "a@",
            "@b.c",
            "a@b",
            "a@b.c",
            "a@.bc",
            "a@bc.",
            "a@b..c",
            "a@@b.c",
            "A@B.C",
            " A@B.C\t",
            "a.b@c.d.e",
            "a@b@c.d",
            "ab@c.d\u{7f}",
            "\u{85}a@b.c",
            "ä@b.c",
            "İ@B.C",
            "a@b.çom",
            "a2345678901@sample.org",
            "a23456789012@sample.org",
            "A2345678901@SAMPLE.ORG ",
        ]
        .iter()
        .map(|text| text.to_string())
        .collect();
        for byte in 0u8..=0x7f {
            let c = char::from(byte);
            for padding in ["", "0123456789abcd"] {
                texts.push(format!("{c}a{padding}b@x.org"));
                texts.push(format!("a{padding}{c}b@x.org"));
                texts.push(format!("ab@x{c}{padding}.org"));
                texts.push(format!("ab{padding}@x.or{c}"));
                texts.push(format!("{c}{padding}ab@x.org{c}"));
            }
        }
        texts.push(format!("{}@example.org", "a".repeat(242)));
        texts.push(format!("{}@example.org", "a".repeat(243)));
        for text in &texts {
            let parsed = Email::parse(text);
            let reference = parse_through_the_heap(text);
            assert_eq!(
                parsed.as_ref().map(Email::as_str).map_err(Clone::clone),
                reference.as_deref().map_err(Clone::clone),
                "{text:?}"
            );
            if let Ok(email) = parsed {
                assert_eq!(email.digest(), text_digest(email.as_str()), "{text:?}");
                assert_eq!(
                    matches!(email.text, Text::Inline { .. }),
                    email.as_str().len() <= TEXT_INLINE_MAX
                );
            }
        }
    }

    /// A header's bytes read as `parse` reads their text, and bytes that are not UTF-8 refused
    /// as not printable ASCII (what the API said of them): every byte in a key, keys either side
    /// of the in-place length and of the length bound, broken and valid UTF-8 beyond ASCII.
    #[test]
    fn a_key_from_bytes_is_the_key_from_their_text() {
        let mut keys: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"k".to_vec(),
            vec![b'k'; 22],
            vec![b'k'; 23],
            vec![b'k'; 255],
            vec![b'k'; 256],
            vec![0xff; 300],
            "cl\u{e9}".as_bytes().to_vec(),
            vec![b'k', 0xc3],
        ];
        for byte in 0u8..=0xff {
            keys.push(vec![b'a', byte, b'b']);
            keys.push([vec![byte], vec![b'k'; 24]].concat());
        }
        for bytes in &keys {
            let from_text = match std::str::from_utf8(bytes) {
                Ok(text) => IdempotencyKey::parse(text),
                Err(_) => Err(InvalidId("an Idempotency-Key uses printable ASCII only")),
            };
            let from_bytes = IdempotencyKey::parse_bytes(bytes);
            let seen = |key: &Result<IdempotencyKey, InvalidId>| {
                key.as_ref().map(|key| (key.as_str().to_string(), key.digest())).map_err(Clone::clone)
            };
            assert_eq!(seen(&from_bytes), seen(&from_text), "{bytes:?}");
            if let Ok(key) = from_bytes {
                assert_eq!(matches!(key.text, Text::Inline { .. }), bytes.len() <= TEXT_INLINE_MAX);
            }
        }
    }

    #[test]
    fn category_codes_and_event_ids_allow_only_the_code_alphabet() {
        assert!(CategoryCode::parse("21K_elite-1").is_ok());
        for bad in ["", "10 K", "10K.", "ü", &"x".repeat(33)] {
            assert!(CategoryCode::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(EventId::parse("race-2026").is_ok());
        assert!(EventId::parse("race.2026").is_err());
    }

    /// `Borrow<str>` holds only while an id hashes, compares and orders as its text: a map keyed
    /// by ids is looked up by text.
    #[test]
    fn an_event_id_hashes_compares_and_orders_as_its_text() {
        use std::hash::BuildHasher;
        let texts = ["r", "race", "race-2026", "Race_2", &"x".repeat(64)];
        let hasher = std::collections::hash_map::RandomState::new();
        for text in texts {
            let id = EventId::parse(text).unwrap();
            assert_eq!(EventId::check(text), Ok(()));
            assert_eq!(hasher.hash_one(&id), hasher.hash_one(text), "{text}");
            for other in texts {
                let other_id = EventId::parse(other).unwrap();
                assert_eq!(id == other_id, text == other);
                assert_eq!(id.cmp(&other_id), text.cmp(other), "{text} against {other}");
            }
        }
        let map: std::collections::HashMap<EventId, u32> =
            texts.iter().zip(0..).map(|(text, index)| (EventId::parse(text).unwrap(), index)).collect();
        assert_eq!(map.get("race-2026"), Some(&2));
        assert_eq!(map.get("race-2027"), None);
        for bad in ["", "race.2026", "ü", &"x".repeat(65)] {
            assert_eq!(EventId::check(bad), EventId::parse(bad).map(|_| ()), "{bad:?}");
            assert!(EventId::check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_idempotency_key_is_one_to_255_printable_ascii_characters() {
        assert!(IdempotencyKey::parse("a b~!").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "tab\there", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
