//! What can be asked of one event's `EventQuota`.

use std::sync::Arc;

use crate::ids::{CategoryCode, Email, Fingerprint, IdempotencyKey, RegistrationId};
use crate::queue::QueuePass;

/// The part of a registration the core carries to the store but never reads: the registrant's
/// details and the hash of their access token. Shared, so an effect can hold it without a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationDetails {
    pub full_name: FullName,
    pub phone: Option<String>,
    /// The `attributes` object as JSON text, already checked by the API.
    pub attributes_json: Option<String>,
    /// A hash of the registrant's access token; the token itself is never stored.
    pub access_token_hash: AccessTokenHash,
}

/// A registrant's name, in place up to 48 bytes (nearly every name).
pub type FullName = InlineText<48>;

/// The hash of an access token, in place up to 64 bytes: the API's, 64 hexadecimal digits of a
/// SHA-256, always.
pub type AccessTokenHash = InlineText<64>;

/// A text of a registration's details, in place up to `INLINE` bytes (at most 255) and on the
/// heap beyond. Every registration carries its details to the store, and each text as a `String`
/// was an allocation made on an HTTP worker and freed on the writer's thread. Which form a text
/// takes depends on its length alone, so the derived equality is the text's (the bytes past
/// `length` are zero).
#[derive(Clone, PartialEq, Eq)]
pub struct InlineText<const INLINE: usize>(TextForm<INLINE>);

#[derive(Clone, PartialEq, Eq)]
enum TextForm<const INLINE: usize> {
    Inline { length: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl<const INLINE: usize> InlineText<INLINE> {
    const FITS_A_BYTE: () = assert!(INLINE <= u8::MAX as usize);

    pub fn new(text: &str) -> Self {
        let () = Self::FITS_A_BYTE;
        if text.len() > INLINE {
            return InlineText(TextForm::Heap(text.into()));
        }
        let mut bytes = [0; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        // At most `INLINE`, which fits a byte (`FITS_A_BYTE`).
        InlineText(TextForm::Inline { length: text.len() as u8, bytes })
    }

    /// The text's bytes, UTF-8: `as_str` without its check, for a caller that reads bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            TextForm::Inline { length, bytes } => &bytes[..usize::from(*length)],
            TextForm::Heap(text) => text.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        // Copied from a `&str` whole (`new`), so valid UTF-8; checking again keeps the crate
        // free of `unsafe`.
        std::str::from_utf8(self.as_bytes()).expect("copied from a str")
    }
}

impl<const INLINE: usize> Default for InlineText<INLINE> {
    fn default() -> Self {
        InlineText::new("")
    }
}

impl<const INLINE: usize> From<&str> for InlineText<INLINE> {
    fn from(text: &str) -> Self {
        InlineText::new(text)
    }
}

impl<const INLINE: usize> From<String> for InlineText<INLINE> {
    fn from(text: String) -> Self {
        InlineText::new(&text)
    }
}

impl<const INLINE: usize> std::fmt::Debug for InlineText<INLINE> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), formatter)
    }
}

/// An `Idempotency-Key` with the fingerprint of the body it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub category: CategoryCode,
    pub registrant: Email,
    pub idempotency: Option<Idempotency>,
    /// Join the category's waitlist when it is sold out.
    pub waitlist: bool,
    pub details: Arc<RegistrationDetails>,
    /// The `Queue-Pass` presented, required by a queued event.
    pub queue_pass: Option<QueuePass>,
}

/// A registrant asks for a ticket in a queued event's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinQueue {
    pub registrant: Email,
    pub idempotency: Option<Idempotency>,
}

/// One command for one event. Applying it is `EventQuota::apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Register(Register),
    /// Payment arrived: a held registration becomes confirmed.
    Confirm {
        registration: RegistrationId,
    },
    /// The registrant or an organizer cancels; the seat goes to the waitlist first.
    Cancel {
        registration: RegistrationId,
    },
    /// Let every hold that is due at `now` expire. Every command does this first anyway; this
    /// one exists so that a timer can do it when no other command comes.
    ExpireHolds,
    /// An organizer changes a category's number of seats.
    SetCapacity {
        category: CategoryCode,
        capacity: u32,
    },
    /// A registrant joins the event's queue.
    JoinQueue(JoinQueue),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text reads back as the text it was made of, in place up to its bound and on the heap
    /// beyond, and two are equal when their texts are.
    #[test]
    fn a_detail_text_is_its_text_short_or_long() {
        let texts =
            ["", "?", &"a".repeat(63), &"0123456789abcdef".repeat(4), &"b".repeat(65), "é漢", "Zoë O'Brien"];
        for text in texts {
            let hash = AccessTokenHash::from(text);
            assert_eq!(hash.as_str(), text);
            assert_eq!(hash.as_bytes(), text.as_bytes());
            assert_eq!(format!("{hash:?}"), format!("{text:?}"));
            assert_eq!(matches!(hash.0, TextForm::Inline { .. }), text.len() <= 64);
            let name = FullName::from(text.to_string());
            assert_eq!(name.as_str(), text);
            assert_eq!(matches!(name.0, TextForm::Inline { .. }), text.len() <= 48);
            for other in texts {
                assert_eq!(hash == AccessTokenHash::from(other), text == other, "{text} {other}");
                assert_eq!(name == FullName::from(other), text == other, "{text} {other}");
            }
        }
        assert_eq!(AccessTokenHash::default().as_str(), "");
        assert_eq!(FullName::default(), FullName::from(""));
    }
}
