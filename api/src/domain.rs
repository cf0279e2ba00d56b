//! Request bodies parsed into domain types before anything reaches an actor. A body is first
//! read as JSON (malformed → 400), then each field is checked, and every bad field is listed
//! (→ 422): a client learns all its mistakes at once.
//!
//! Each body has one type that is both what the server reads and what `/openapi.json` shows
//! (`NewEvent`, `NewCategory`, `CapacityChange`, `NewTicket`, `crate::queue::NewQueue`, ...):
//! its fields are `Found`s, which take any JSON value and keep whether it was absent, of the
//! right type or of another, so that reading the body never stops at the first mistake the way
//! a plain derived `Deserialize` does (serde reports one error, in its own words, and refuses a
//! repeated field that the JSON map keeps). The checks then run over the typed fields and name
//! every mistake in the contract's words. The members a closed type does not know are named
//! first, from the field list its derive hands serde (`struct_fields`), so the document's
//! `additionalProperties: false` and the server's refusal come from the same attribute.
//!
//! A registration body, the body of the hottest request, is first read straight into borrowed
//! fields (`RegistrationBody`, also its schema): by hand when it has the common shape
//! (`RegistrationBody::read_plain`), else by serde_json; only a body that this reading refuses
//! is read again as a JSON map, which finds every mistake. Both readings hand the same
//! `FoundRegistration` to the same checks.

use std::borrow::Cow;
use std::sync::Arc;

use kuota_engine::{
    CategoryCode, CategoryConfig, CheckedEmail, Email, EventConfig, EventId, FullName, Idempotency,
    IdempotencyKey, QuotaLimits, Register, RegistrationDetails, Timestamp, limits,
};
use kuota_persist::words::{bytes_below, bytes_equal};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{ApiError, FieldError};
use crate::{time_format, tokens};

/// A field of a request body as found, before it is checked. As a field of a request type (with
/// `#[serde(default)]`, for a missing member) it reads any JSON value, so that reading a body
/// never fails on one field.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Found<T> {
    /// Absent, or `null`.
    #[default]
    Absent,
    Present(T),
    /// Present, with another JSON type.
    Mistyped,
}

impl<T> Found<T> {
    pub(crate) fn as_ref(&self) -> Found<&T> {
        match self {
            Found::Absent => Found::Absent,
            Found::Present(value) => Found::Present(value),
            Found::Mistyped => Found::Mistyped,
        }
    }
}

impl Found<String> {
    pub(crate) fn as_deref(&self) -> Found<&str> {
        match self {
            Found::Absent => Found::Absent,
            Found::Present(text) => Found::Present(text),
            Found::Mistyped => Found::Mistyped,
        }
    }
}

impl<'a> Found<&'a str> {
    fn text(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Found::Absent,
            Some(Value::String(text)) => Found::Present(text),
            Some(_) => Found::Mistyped,
        }
    }
}

impl<T> From<Option<T>> for Found<T> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Found::Absent, Found::Present)
    }
}

/// `null` is `Absent`; a value that `T` reads is `Present`; any other value is `Mistyped`.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Found<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<Value>::deserialize(deserializer)? {
            None => Found::Absent,
            Some(value) => T::deserialize(value).map_or(Found::Mistyped, Found::Present),
        })
    }
}

/// The member names a struct's derived `Deserialize` reads: the list serde's derive hands to
/// `deserialize_struct`, caught by a deserializer that reads nothing else.
pub(crate) fn struct_fields<T: Deserialize<'static>>() -> &'static [&'static str] {
    struct Introspect<'f>(&'f mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Introspect<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the one `deserialize_struct` returns, once it has the list.
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// Reads `object` into the closed request type `T` (`#[serde(deny_unknown_fields)]`, every
/// field a `Found`). Each member that is no field of `T` is named in `errors` as
/// `{prefix}{member}` and left out, so that the rest is read.
pub(crate) fn read_closed<T: DeserializeOwned>(
    mut object: Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Result<T, ApiError> {
    let known = struct_fields::<T>();
    object.retain(|member, _| {
        let is_known = known.contains(&member.as_str());
        if !is_known {
            errors.push(FieldError::new(&format!("{prefix}{member}"), "is not a known field"));
        }
        is_known
    });
    read_open(object)
}

/// Reads `object` into the request type `T` (every field a `Found`), ignoring members that are
/// no field of it.
pub(crate) fn read_open<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    // Fields that are all `Found`s take any value: this fails only for a type that breaks the
    // rule, and then as a refused body rather than a failed server.
    T::deserialize(Value::Object(object))
        .map_err(|error| ApiError::MalformedBody(format!("the body could not be read: {error}")))
}

/// Length limits of registration fields, in characters (bytes for `attributes`).
pub const FULL_NAME_LENGTH_MAX: usize = 200;
pub const PHONE_LENGTH_MAX: usize = 32;
pub const ATTRIBUTES_SERIALIZED_BYTES_MAX: usize = 4 * 1024;
pub const EVENT_NAME_LENGTH_MAX: usize = 200;
pub const HOLD_TTL_SECONDS_MAX: u64 = 7 * 24 * 60 * 60;

/// Parses a request body as a JSON object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::MalformedBody(format!("the body is not valid JSON: {error}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::MalformedBody("the body must be a JSON object".into())),
    }
}

/// A text's length in characters, and whether it holds a control character. An ASCII text
/// (nearly every name and phone number) byte by byte: its characters are its bytes, and its
/// control characters (`char::is_control`, category Cc) are those below the space and DEL.
/// Every registration, a sold-out one too, checks two; decoding them as characters twice was
/// about 200 instructions per registration (callgrind).
fn length_and_control(text: &str) -> (usize, bool) {
    let bytes = text.as_bytes();
    if bytes.is_ascii() {
        return (bytes.len(), bytes.iter().any(|&byte| byte < b' ' || byte == 0x7f));
    }
    (text.chars().count(), text.chars().any(char::is_control))
}

/// Collects field errors while fields are read.
#[derive(Default)]
struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    fn fail<T>(&mut self, field: &str, message: impl Into<String>) -> Option<T> {
        self.errors.push(FieldError::new(field, message));
        None
    }

    fn text<'a>(&mut self, found: Found<&'a str>, field: &str, required: bool) -> Option<&'a str> {
        match found {
            Found::Absent if required => self.fail(field, "is required"),
            Found::Absent => None,
            Found::Present(text) => Some(text),
            Found::Mistyped => self.fail(field, "must be a string"),
        }
    }

    /// The text trimmed, borrowed: the caller makes what it keeps of it.
    fn bounded_text<'a>(
        &mut self,
        found: Found<&'a str>,
        field: &str,
        required: bool,
        max: usize,
    ) -> Option<&'a str> {
        let text = self.text(found, field, required)?.trim();
        let (length, control) = length_and_control(text);
        if required && length == 0 {
            return self.fail(field, "must not be empty");
        }
        if length > max {
            return self.fail(field, format!("must have at most {max} characters"));
        }
        if control {
            return self.fail(field, "must not contain control characters");
        }
        Some(text)
    }

    fn flag(&mut self, found: Found<bool>, field: &str) -> bool {
        match found {
            Found::Absent => false,
            Found::Present(value) => value,
            Found::Mistyped => self.fail(field, "must be true or false").unwrap_or(false),
        }
    }

    fn unsigned(&mut self, found: Found<&Number>, field: &str, max: u64) -> Option<u64> {
        match found {
            Found::Absent => None,
            Found::Present(number) => match number.as_u64() {
                Some(value) if value <= max => Some(value),
                Some(_) => self.fail(field, format!("must be at most {max}")),
                None => self.fail(field, "must be a whole number, not negative"),
            },
            Found::Mistyped => self.fail(field, "must be a number"),
        }
    }

    fn time(&mut self, found: Found<&str>, field: &str) -> Option<Timestamp> {
        let text = self.text(found, field, false)?;
        time_format::parse(text)
            .or_else(|| self.fail(field, "must be an RFC 3339 time, e.g. 2026-11-24T10:00:00Z"))
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(ApiError::Validation(self.errors)),
        }
    }
}

/// A registration request, parsed. What only an admission needs (the request's fingerprint,
/// the registrant's access token and its hash: an HMAC and two SHA-256) is derived later, by
/// `into_register`, so that a sold-out answer from the published counters never pays for it.
#[derive(Debug)]
pub struct RegistrationRequest {
    pub category: CategoryCode,
    /// Checked; its digest is made by `into_register`, past the sold-out answer.
    pub registrant: CheckedEmail,
    pub waitlist: bool,
    full_name: FullName,
    phone: Option<String>,
    attributes_json: Option<String>,
}

impl RegistrationRequest {
    /// The actor's command for this request with `key`, and the registrant's access token
    /// (whose hash the command carries to the store).
    pub fn into_register(
        self,
        event: &EventId,
        key: IdempotencyKey,
        token_key: &tokens::TokenKey,
    ) -> (Register, tokens::AccessToken) {
        // Bytes, not texts: an e-mail's or a code's text is checked to be UTF-8 again on each
        // read, and the digest reads bytes anyway.
        let fingerprint = tokens::fingerprint(&[
            self.category.as_bytes(),
            self.registrant.as_bytes(),
            self.full_name.as_bytes(),
            self.phone.as_deref().unwrap_or("").as_bytes(),
            self.attributes_json.as_deref().unwrap_or("").as_bytes(),
            if self.waitlist { b"1" } else { b"0" },
        ]);
        let access_token = token_key.access_token(event, &key);
        let details = RegistrationDetails {
            full_name: self.full_name,
            phone: self.phone,
            attributes_json: self.attributes_json,
            access_token_hash: tokens::token_hash(access_token.as_bytes()),
        };
        let register = Register {
            category: self.category,
            registrant: Email::from(self.registrant),
            idempotency: Some(Idempotency { key, fingerprint }),
            waitlist: self.waitlist,
            details: Arc::new(details),
            queue_pass: None,
        };
        (register, access_token)
    }
}

/// Parses `Idempotency-Key`: required, 1–255 printable ASCII.
pub fn idempotency_key(header: Option<&[u8]>) -> Result<IdempotencyKey, ApiError> {
    let bytes = header.ok_or(ApiError::IdempotencyKeyMissing)?;
    IdempotencyKey::parse_bytes(bytes).map_err(|error| ApiError::IdempotencyKeyInvalid(error.to_string()))
}

/// The fields of a registration body, as either reading found them.
#[derive(Debug)]
struct FoundRegistration<'a> {
    category: Found<&'a str>,
    email: Found<&'a str>,
    full_name: Found<&'a str>,
    phone: Found<&'a str>,
    attributes: Found<&'a Map<String, Value>>,
    waitlist: Found<bool>,
}

impl<'a> FoundRegistration<'a> {
    fn in_object(object: &'a Map<String, Value>) -> Self {
        FoundRegistration {
            category: Found::text(object.get("category")),
            email: Found::text(object.get("email")),
            full_name: Found::text(object.get("full_name")),
            phone: Found::text(object.get("phone")),
            attributes: match object.get("attributes") {
                None | Some(Value::Null) => Found::Absent,
                Some(Value::Object(attributes)) => Found::Present(attributes),
                Some(_) => Found::Mistyped,
            },
            waitlist: match object.get("waitlist") {
                None | Some(Value::Null) => Found::Absent,
                Some(Value::Bool(value)) => Found::Present(*value),
                Some(_) => Found::Mistyped,
            },
        }
    }
}

/// A registration body read straight into its fields, borrowed from the body where no escape
/// needs decoding: no map, no owned keys, no copies. It reads only what the map reading would
/// read alike, and refuses (`None`) everything else, which the map reading then answers with
/// its own messages:
/// - not an object: a derived struct would also take a JSON array, field by field;
/// - an unknown field (`deny_unknown_fields`), which the map reading must name;
/// - a field twice, which serde refuses for a struct while the map keeps the last value;
/// - a field of another type, including a required field that is `null` or missing only as
///   far as serde is concerned: every field is an `Option` here, so `null` and absence are
///   both `None`, as the map reading treats them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = NewRegistration,
    description = "The body of `POST /v1/events/{event_id}/registrations`.",
    example = json!({ "category": "10K", "email": "ana@example.org", "full_name": "Ana Runner" })
)]
pub(crate) struct RegistrationBody<'a> {
    /// The code of one of the event's categories.
    #[serde(borrow)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9_-]+$")]
    category: Option<Text<'a>>,
    /// Trimmed and lower-cased; a registrant has at most one active (`held`, `confirmed` or
    /// `waitlisted`) registration per event.
    #[serde(borrow)]
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    email: Option<Text<'a>>,
    /// Trimmed; no control characters.
    #[serde(borrow)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    full_name: Option<Text<'a>>,
    /// Trimmed; no control characters.
    #[serde(borrow)]
    #[schema(value_type = Option<String>, max_length = 32)]
    phone: Option<Text<'a>>,
    /// Anything the organizer asks for; at most 4 KiB serialized.
    // Read into the same map type as the map reading's, so that it serializes alike.
    #[schema(value_type = Option<Object>)]
    attributes: Option<Map<String, Value>>,
    /// When sold out, join the waitlist (202) instead of being refused (409 `sold_out`).
    #[schema(default = false)]
    waitlist: Option<bool>,
}

/// A JSON string: borrowed unless it has escapes. A newtype because serde borrows a
/// `Cow<str>` only as a field of its own, not inside an `Option`.
#[derive(Debug, Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Text<'_> {
    fn found<'b>(field: &'b Option<Text<'_>>) -> Found<&'b str> {
        Found::from(field.as_ref().map(|text| text.0.as_ref()))
    }
}

impl<'a> RegistrationBody<'a> {
    fn read(body: &'a [u8]) -> Option<Self> {
        if let Some(read) = Self::read_plain(body) {
            return Some(read);
        }
        // serde_json skips exactly these before a value.
        let first = body.iter().find(|byte| !is_json_whitespace(**byte));
        if first != Some(&b'{') {
            return None;
        }
        serde_json::from_slice(body).ok()
    }

    /// The common body read by hand: an object of the known members but `attributes`, each at
    /// most once, whose values are `null`, strings without escapes or control characters, or,
    /// for `waitlist`, `true` and `false`. Everything else (`None`) goes to serde_json, which
    /// reads a body like this one alike. Every registration, a sold-out one too, reads one:
    /// serde_json's reading of the common body was about 2,300 instructions, this one about
    /// 1,750 (callgrind).
    fn read_plain(body: &'a [u8]) -> Option<Self> {
        let mut reader = PlainJson { body, at: 0 };
        let mut read = RegistrationBody {
            category: None,
            email: None,
            full_name: None,
            phone: None,
            attributes: None,
            waitlist: None,
        };
        // serde refuses a member given twice, even when the first was `null`.
        let mut seen = [false; 5];
        reader.expect(b'{')?;
        if !reader.eat(b'}') {
            loop {
                let member = match reader.string()? {
                    b"category" => 0,
                    b"email" => 1,
                    b"full_name" => 2,
                    b"phone" => 3,
                    b"waitlist" => 4,
                    _ => return None,
                };
                if std::mem::replace(&mut seen[member], true) {
                    return None;
                }
                reader.expect(b':')?;
                if member == 4 {
                    read.waitlist = reader.flag()?;
                } else {
                    let text = reader.text()?.map(|text| Text(Cow::Borrowed(text)));
                    match member {
                        0 => read.category = text,
                        1 => read.email = text,
                        2 => read.full_name = text,
                        _ => read.phone = text,
                    }
                }
                if reader.eat(b',') {
                    continue;
                }
                reader.expect(b'}')?;
                break;
            }
        }
        reader.skip_whitespace();
        (reader.at == body.len()).then_some(read)
    }

    fn found(&self) -> FoundRegistration<'_> {
        FoundRegistration {
            category: Text::found(&self.category),
            email: Text::found(&self.email),
            full_name: Text::found(&self.full_name),
            phone: Text::found(&self.phone),
            attributes: Found::from(self.attributes.as_ref()),
            waitlist: Found::from(self.waitlist),
        }
    }
}

/// The whitespace JSON allows between tokens, which serde_json skips.
fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// A cursor over a JSON body for `RegistrationBody::read_plain`: each read skips the whitespace
/// before its token, and answers `None` for anything it does not read as serde_json would.
struct PlainJson<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> PlainJson<'a> {
    fn skip_whitespace(&mut self) {
        while self.body.get(self.at).copied().is_some_and(is_json_whitespace) {
            self.at += 1;
        }
    }

    /// Takes `byte` when it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.body.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Takes `word` when it comes next.
    fn eat_word(&mut self, word: &[u8]) -> bool {
        self.skip_whitespace();
        let found = self.body.get(self.at..).is_some_and(|rest| rest.starts_with(word));
        if found {
            self.at += word.len();
        }
        found
    }

    /// A string's bytes, without its quotes; `None` for one with an escape or a control
    /// character (serde_json refuses those, or decodes them).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + string_stop(self.body.get(start..)?)?;
        if self.body[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        Some(&self.body[start..end])
    }

    /// `null`, or a string that is UTF-8 (as serde_json checks it).
    fn text(&mut self) -> Option<Option<&'a str>> {
        if self.eat_word(b"null") {
            return Some(None);
        }
        std::str::from_utf8(self.string()?).ok().map(Some)
    }

    /// `null`, `true` or `false`.
    fn flag(&mut self) -> Option<Option<bool>> {
        if self.eat_word(b"null") {
            Some(None)
        } else if self.eat_word(b"true") {
            Some(Some(true))
        } else if self.eat_word(b"false") {
            Some(Some(false))
        } else {
            None
        }
    }
}

/// Where a JSON string's plain run in `bytes` stops: the first quote, backslash or control
/// character. Eight bytes at a time while eight remain, then a byte at a time: every
/// registration, a sold-out one too, reads six strings, and a byte at a time throughout they cost
/// about 330 instructions more (callgrind). Of the bytes a word flags, the first is a stop: a
/// false flag follows a true one only (`bytes_below`).
fn string_stop(bytes: &[u8]) -> Option<usize> {
    let (words, rest) = bytes.as_chunks::<8>();
    for (index, word) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*word);
        let stops = bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20);
        if stops != 0 {
            return Some(index * 8 + stops.trailing_zeros() as usize / 8);
        }
    }
    let stop = rest.iter().position(|byte| matches!(byte, b'"' | b'\\' | 0..0x20))?;
    Some(words.len() * 8 + stop)
}

/// Parses a registration body for `event` (whose categories are known).
pub fn registration(body: &[u8], event: &EventConfig) -> Result<RegistrationRequest, ApiError> {
    match RegistrationBody::read(body) {
        Some(read) => check_registration(Fields::default(), read.found(), event),
        None => registration_as_map(body, event),
    }
}

/// `registration` for every body, through a JSON map: slower, and names every mistake.
fn registration_as_map(body: &[u8], event: &EventConfig) -> Result<RegistrationRequest, ApiError> {
    let object = json_object(body)?;
    let mut fields = Fields::default();
    // The fields the fast reading knows: the same type is the schema.
    let known = struct_fields::<RegistrationBody<'static>>();
    for member in object.keys().filter(|member| !known.contains(&member.as_str())) {
        fields.errors.push(FieldError::new(member, "is not a known field"));
    }
    check_registration(fields, FoundRegistration::in_object(&object), event)
}

fn check_registration(
    mut fields: Fields,
    found: FoundRegistration<'_>,
    event: &EventConfig,
) -> Result<RegistrationRequest, ApiError> {
    let category = fields.text(found.category, "category", true).and_then(|code| {
        // The event's own code when it is one (an `Arc` clone, not a new one); a code that is
        // none of them is parsed only to say why. Compared as bytes: `as_str` checks a code's
        // bytes to be UTF-8 again.
        if let Some(category) =
            event.categories.iter().find(|category| category.code.as_bytes() == code.as_bytes())
        {
            return Some(category.code.clone());
        }
        match CategoryCode::parse(code) {
            Ok(_) => fields.fail("category", "is not a category of this event"),
            Err(error) => fields.fail("category", error.to_string()),
        }
    });
    let email = fields.text(found.email, "email", true).and_then(|text| match CheckedEmail::parse(text) {
        Ok(email) => Some(email),
        Err(error) => fields.fail("email", error.to_string()),
    });
    // In place, from the body's text: most names need no allocation (`FullName`).
    let full_name =
        fields.bounded_text(found.full_name, "full_name", true, FULL_NAME_LENGTH_MAX).map(FullName::new);
    let phone = fields.bounded_text(found.phone, "phone", false, PHONE_LENGTH_MAX).map(str::to_owned);
    let attributes = match found.attributes {
        Found::Absent => None,
        Found::Present(attributes) => {
            // Serializing a parsed JSON map cannot fail.
            let text = serde_json::to_string(attributes).expect("JSON values serialize");
            if text.len() > ATTRIBUTES_SERIALIZED_BYTES_MAX {
                fields.fail("attributes", "must be at most 4 KiB when serialized")
            } else {
                Some(text)
            }
        }
        Found::Mistyped => fields.fail("attributes", "must be an object"),
    };
    let waitlist = fields.flag(found.waitlist, "waitlist");
    let parsed = match (category, email, full_name) {
        (Some(category), Some(email), Some(full_name)) => Some((category, email, full_name)),
        _ => None,
    };
    let (category, registrant, full_name) = fields.finish(parsed)?;
    Ok(RegistrationRequest { category, registrant, waitlist, full_name, phone, attributes_json: attributes })
}

/// The body of `POST /v1/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "city-race",
    "name": "City Race",
    "opens_at": "2026-11-24T10:00:00Z",
    "closes_at": "2026-12-24T10:00:00Z",
    "hold_ttl_seconds": 900,
    "categories": [{ "code": "10K", "name": "10 km", "capacity": 500 }]
}))]
pub struct NewEvent {
    /// Generated when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    id: Found<String>,
    /// Trimmed; no control characters.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    name: Found<String>,
    /// When registration opens; open at once when absent. Required for an event with a
    /// `queue`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    opens_at: Found<String>,
    /// When registration closes; must be after `opens_at` (422 on `closes_at` otherwise);
    /// never when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    closes_at: Found<String>,
    /// How long a seat is held until confirmed (`POST /v1/registrations/{id}/confirm`); 0
    /// confirms at once. A JSON integer, written without a fraction.
    #[serde(default)]
    #[schema(value_type = Option<u32>, default = 0, minimum = 0, maximum = 604800)]
    hold_ttl_seconds: Found<Number>,
    /// Distinct codes.
    // Items are read one by one (`NewCategory`), so that each mistake names its index.
    #[serde(default)]
    #[schema(value_type = Vec<NewCategory>, required = true, min_items = 1, max_items = 64)]
    categories: Found<Vec<Value>>,
    /// A fair opening: registrations then need a `Queue-Pass` from the event's queue.
    #[serde(default)]
    #[schema(value_type = Option<crate::queue::NewQueue>)]
    queue: Found<Map<String, Value>>,
}

/// A category of a new event. Closed: another member is refused (422), as in every body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    #[serde(default)]
    #[schema(
        value_type = String,
        required = true,
        min_length = 1,
        max_length = 32,
        pattern = "^[A-Za-z0-9_-]+$",
        example = "10K"
    )]
    code: Found<String>,
    /// Not blank; trimmed.
    #[serde(default)]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200, example = "10 km")]
    name: Found<String>,
    /// Seats. A JSON integer, written without a fraction (`500`, not `500.0`).
    #[serde(default)]
    #[schema(value_type = u32, required = true, minimum = 0, maximum = 10000000, example = 500)]
    capacity: Found<Number>,
}

/// Parses `POST /v1/events`; `generated_id` is used when the body names none, `draw_seed`
/// when it has a `queue`.
pub fn new_event(
    body: &[u8],
    generated_id: &str,
    retention_seconds: u32,
    draw_seed: [u8; 32],
) -> Result<EventConfig, ApiError> {
    let mut fields = Fields::default();
    let new: NewEvent = read_closed(json_object(body)?, "", &mut fields.errors)?;
    let id = match fields.text(new.id.as_deref(), "id", false) {
        Some(text) => EventId::parse(text).map_err(|error| fields.fail::<()>("id", error.to_string())).ok(),
        None => EventId::parse(generated_id).ok(),
    };
    let name =
        fields.bounded_text(new.name.as_deref(), "name", true, EVENT_NAME_LENGTH_MAX).map(str::to_owned);
    let opens_at = fields.time(new.opens_at.as_deref(), "opens_at");
    let closes_at = fields.time(new.closes_at.as_deref(), "closes_at");
    if let (Some(opens_at), Some(closes_at)) = (opens_at, closes_at)
        && closes_at <= opens_at
    {
        fields.fail::<()>("closes_at", "must be after opens_at");
    }
    let hold_ttl_seconds = fields
        .unsigned(new.hold_ttl_seconds.as_ref(), "hold_ttl_seconds", HOLD_TTL_SECONDS_MAX)
        .unwrap_or(0) as u32;
    let categories = categories(&mut fields, new.categories);
    let queue = crate::queue::settings(new.queue, opens_at, draw_seed, &mut fields.errors)?;
    let parsed = match (id, name, categories) {
        (Some(id), Some(name), Some(categories)) => Some(EventConfig {
            id,
            name,
            opens_at,
            closes_at,
            hold_ttl_seconds,
            categories,
            limits: QuotaLimits {
                idempotency_retention_seconds: retention_seconds,
                ..QuotaLimits::default()
            },
            queue,
        }),
        _ => None,
    };
    fields.finish(parsed)
}

fn categories(fields: &mut Fields, found: Found<Vec<Value>>) -> Option<Vec<CategoryConfig>> {
    let Found::Present(items) = found else {
        return fields.fail("categories", "must be a list of {code, name, capacity}");
    };
    if items.is_empty() {
        return fields.fail("categories", "must have at least one category");
    }
    if items.len() > limits::CATEGORIES_MAX {
        return fields.fail("categories", format!("must have at most {} categories", limits::CATEGORIES_MAX));
    }
    let mut categories = Vec::with_capacity(items.len());
    let mut codes_seen: Vec<CategoryCode> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(object) = item else {
            fields.fail::<()>(&format!("categories[{index}]"), "must be an object");
            continue;
        };
        let new: NewCategory = match read_closed(object, &format!("categories[{index}]."), &mut fields.errors)
        {
            Ok(new) => new,
            Err(_) => {
                fields.fail::<()>(&format!("categories[{index}]"), "must be an object");
                continue;
            }
        };
        let code_field = format!("categories[{index}].code");
        let code = match new.code {
            Found::Present(text) => CategoryCode::parse(&text)
                .map_err(|error| fields.fail::<()>(&code_field, error.to_string()))
                .ok(),
            _ => fields.fail(&code_field, "is required and must be a string"),
        };
        let name = match new.name {
            Found::Present(text)
                if !text.trim().is_empty() && text.chars().count() <= EVENT_NAME_LENGTH_MAX =>
            {
                Some(text.trim().to_string())
            }
            _ => fields.fail(&format!("categories[{index}].name"), "is required, 1 to 200 characters"),
        };
        let capacity_field = format!("categories[{index}].capacity");
        let capacity = match new.capacity.as_ref() {
            Found::Present(number) => match number.as_i64() {
                Some(capacity) if capacity < 0 => fields.fail(&capacity_field, "must not be negative"),
                Some(capacity) if capacity > i64::from(limits::CATEGORY_CAPACITY_MAX) => {
                    fields.fail(&capacity_field, format!("must be at most {}", limits::CATEGORY_CAPACITY_MAX))
                }
                Some(capacity) => Some(capacity as u32),
                None => fields.fail(&capacity_field, "is required and must be a whole number"),
            },
            _ => fields.fail(&capacity_field, "is required and must be a whole number"),
        };
        if let Some(code) = &code {
            if codes_seen.contains(code) {
                fields.fail::<()>(&code_field, "appears twice");
                continue;
            }
            codes_seen.push(code.clone());
        }
        if let (Some(code), Some(name), Some(capacity)) = (code, name, capacity) {
            categories.push(CategoryConfig { code, name, capacity });
        }
    }
    Some(categories)
}

/// The body of `PATCH /v1/events/{event_id}/categories/{code}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityChange {
    /// Seats; raising it promotes waitlisted registrants, and it cannot go below the seats
    /// confirmed or held (409 `capacity_below_taken`). A JSON integer, written without a
    /// fraction (`600`, not `600.0`).
    #[serde(default)]
    #[schema(value_type = u32, required = true, minimum = 0, maximum = 10000000, example = 600)]
    capacity: Found<Number>,
}

/// Parses `PATCH .../categories/{code}`: `{capacity}`.
pub fn capacity(body: &[u8]) -> Result<u32, ApiError> {
    let mut fields = Fields::default();
    let change: CapacityChange = read_closed(json_object(body)?, "", &mut fields.errors)?;
    let capacity = match change.capacity.as_ref() {
        Found::Present(number) => match number.as_i64() {
            Some(value) if value < 0 => fields.fail("capacity", "must not be negative"),
            Some(value) if value > i64::from(limits::CATEGORY_CAPACITY_MAX) => {
                fields.fail("capacity", format!("must be at most {}", limits::CATEGORY_CAPACITY_MAX))
            }
            Some(value) => Some(value as u32),
            None => fields.fail("capacity", "must be a whole number"),
        },
        _ => fields.fail("capacity", "is required and must be a number"),
    };
    fields.finish(capacity)
}

/// The body of `POST /v1/events/{event_id}/queue`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "email": "ana@example.org" }))]
pub struct NewTicket {
    /// Trimmed and lower-cased; one ticket per e-mail per event.
    #[serde(default)]
    #[schema(value_type = String, required = true, format = Email, max_length = 254)]
    email: Found<String>,
}

/// Parses `POST /v1/events/{event_id}/queue`: `{email}`.
pub fn queue_join(body: &[u8]) -> Result<CheckedEmail, ApiError> {
    let mut fields = Fields::default();
    let new: NewTicket = read_closed(json_object(body)?, "", &mut fields.errors)?;
    let email =
        fields.text(new.email.as_deref(), "email", true).and_then(|text| match CheckedEmail::parse(text) {
            Ok(email) => Some(email),
            Err(error) => fields.fail("email", error.to_string()),
        });
    fields.finish(email)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Eight bytes at a time, a string's run stops where it stops a byte at a time: for every
    /// byte value at every place of runs up to 19 bytes long, and for every pair of bytes among
    /// those that stop a run or border on them, at every two places.
    #[test]
    fn a_string_stops_where_it_stops_byte_by_byte() {
        let bytewise = |bytes: &[u8]| bytes.iter().position(|byte| matches!(byte, b'"' | b'\\' | 0..0x20));
        let mut checked = 0;
        for length in 0..20 {
            for place in 0..length {
                for byte in 0..=u8::MAX {
                    let mut bytes = vec![b'a'; length];
                    bytes[place] = byte;
                    assert_eq!(string_stop(&bytes), bytewise(&bytes), "{bytes:?}");
                    checked += 1;
                }
            }
            let borders = [
                0x00,
                0x01,
                0x1f,
                0x20,
                0x21,
                b'"' - 1,
                b'"',
                b'"' + 1,
                b'\\' - 1,
                b'\\',
                b'\\' + 1,
                0x7f,
                0x80,
                0xa2,
                0xdc,
                0xff,
            ];
            for first in 0..length {
                for second in first + 1..length {
                    for (left, right) in
                        borders.iter().flat_map(|left| borders.iter().map(move |right| (*left, *right)))
                    {
                        let mut bytes = vec![b'a'; length];
                        (bytes[first], bytes[second]) = (left, right);
                        assert_eq!(string_stop(&bytes), bytewise(&bytes), "{bytes:?}");
                        checked += 1;
                    }
                }
            }
        }
        // 190 places of one byte and 1,140 places of two, over the lengths.
        assert_eq!(checked, 190 * 256 + 1_140 * 16 * 16);
    }

    fn event() -> EventConfig {
        let category = |code: &str| CategoryConfig {
            code: CategoryCode::parse(code).unwrap(),
            name: code.to_string(),
            capacity: 5,
        };
        EventConfig {
            id: EventId::parse("race").unwrap(),
            name: "City Race".into(),
            opens_at: None,
            closes_at: None,
            hold_ttl_seconds: 0,
            categories: vec![category("10K"), category("5K")],
            limits: QuotaLimits::default(),
            queue: None,
        }
    }

    /// What a reading answers, comparable: the `Debug` of the request or of the problem names
    /// every field, message and value.
    fn answer(result: Result<RegistrationRequest, ApiError>) -> String {
        format!("{result:?}")
    }

    /// Asserts that `registration` answers `body` as the map reading does, and returns whether
    /// the fast reading took it.
    fn agrees_with_the_map_reading(body: &str) -> bool {
        let event = event();
        let expected = answer(registration_as_map(body.as_bytes(), &event));
        assert_eq!(answer(registration(body.as_bytes(), &event)), expected, "{body}");
        RegistrationBody::read(body.as_bytes()).is_some()
    }

    #[test]
    fn common_bodies_are_read_without_the_map_and_answered_alike() {
        let bodies = [
            r#"{"category":"10K","email":"Ana@Example.org","full_name":"Ana Runner"}"#,
            " \n\t{ \"category\" : \"5K\", \"email\": \"a@example.org\", \"full_name\": \" Ana \" } \r\n",
            r#"{"category":"10K","email":"a@example.org","full_name":"A","phone":null,"attributes":null,"waitlist":null}"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"A","phone":"+1 555","waitlist":true}"#,
            // Escapes are decoded, in values and in field names.
            r#"{"c\u0061tegory":"10\u004B","email":"a\u0040example.org","full_name":"Ana \"R\" \u00e9\ud83d\ude00"}"#,
            // Attributes serialize as the map reading's do: keys sorted, the last of a repeated key.
            r#"{"category":"10K","email":"a@example.org","full_name":"A","attributes":{"b":1.0,"a":{"y":1e2,"x":-0},"b":"\u0041"}}"#,
            // Checks fail alike, every field named.
            r#"{"category":null,"email":"not-an-email","full_name":"","phone":"1234567890123456789012345678901234"}"#,
            r#"{"category":"42K","email":"a@example.org","full_name":"A\nB","attributes":[1]}"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"A","waitlist":"yes"}"#,
            "{}",
        ];
        for body in bodies {
            let fast = agrees_with_the_map_reading(body);
            let mistyped = body.contains("[1]") || body.contains("\"yes\"");
            assert_eq!(fast, !mistyped, "{body}");
        }
    }

    #[test]
    fn bodies_the_fast_reading_refuses_are_answered_by_the_map_reading() {
        let bodies = [
            // The map keeps the last of a repeated field; a struct refuses it.
            r#"{"category":"5K","category":"10K","email":"a@example.org","full_name":"A"}"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"A","extra":1,"other":null}"#,
            // A derived struct would read an array field by field.
            r#"["10K","a@example.org","A"]"#,
            r#"{"category":10,"email":["a"],"full_name":true}"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"A"} x"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"A\ud800"}"#,
            "",
            "null",
            "{",
        ];
        for body in bodies {
            assert!(!agrees_with_the_map_reading(body), "{body}");
        }
    }

    /// The hand reading takes the common bodies, and whatever it takes, serde_json reads alike:
    /// every body below, and every body one byte away from them (a byte left out, doubled, or
    /// replaced by one that JSON gives a meaning).
    #[test]
    fn the_plain_reading_reads_what_it_takes_as_serde_json_does() {
        let bodies = [
            r#"{"category":"10K","email":"runner1@example.org","full_name":"Bench Runner"}"#,
            " \n\t{ \"category\" : \"5K\", \"email\": \"a@example.org\", \"full_name\": \" Ana \" } \r\n",
            r#"{"category":"10K","email":"a@example.org","full_name":"A","phone":null,"waitlist":null}"#,
            r#"{"category":"10K","email":"a@example.org","full_name":"Zoë 😀","phone":"+1 555","waitlist":true}"#,
            r#"{"waitlist":false,"phone":"1","full_name":"A","email":"a@example.org","category":null}"#,
            "{}",
        ];
        let serde_reading = |body: &[u8]| {
            serde_json::from_slice::<RegistrationBody<'_>>(body).ok().map(|read| format!("{read:?}"))
        };
        for body in bodies {
            assert!(RegistrationBody::read_plain(body.as_bytes()).is_some(), "{body}");
        }
        let replacements = b"\"\\{}[],: \n\t0an\x01\xff";
        let mut taken = 0;
        for body in bodies.iter().map(|body| body.as_bytes()) {
            let mut variants = vec![body.to_vec()];
            for at in 0..body.len() {
                let mut shorter = body.to_vec();
                shorter.remove(at);
                let mut doubled = body.to_vec();
                doubled.insert(at, body[at]);
                variants.extend([shorter, doubled]);
                for &byte in replacements {
                    let mut replaced = body.to_vec();
                    replaced[at] = byte;
                    variants.push(replaced);
                }
            }
            for variant in variants {
                if let Some(read) = RegistrationBody::read_plain(&variant) {
                    taken += 1;
                    let shown = String::from_utf8_lossy(&variant);
                    assert_eq!(Some(format!("{read:?}")), serde_reading(&variant), "{shown}");
                }
            }
        }
        assert!(taken > bodies.len(), "the variants that stay valid are read by hand too");
    }

    #[test]
    fn text_without_escapes_is_borrowed_from_the_body() {
        let body = br#"{"category":"10K","email":"a@example.org","full_name":"Ana \u0052unner"}"#;
        let read = RegistrationBody::read(body).unwrap();
        assert!(matches!(read.category, Some(Text(Cow::Borrowed("10K")))));
        assert!(matches!(read.full_name, Some(Text(Cow::Owned(ref name))) if name == "Ana Runner"));
    }

    /// What the document says of a request type's members, and what a reading of it does: the
    /// same member names, and `additionalProperties: false` exactly where an unknown member is
    /// refused.
    fn document_matches_reading<T: utoipa::PartialSchema + Deserialize<'static>>() {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let mut documented: Vec<&str> =
            schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut read = struct_fields::<T>().to_vec();
        documented.sort_unstable();
        read.sort_unstable();
        assert_eq!(documented, read, "{schema}");
        let refuses_unknown = serde_json::from_str::<T>(r#"{"not_a_field": 1}"#).is_err();
        assert_eq!(schema["additionalProperties"] == false, refuses_unknown, "{schema}");
    }

    #[test]
    fn every_request_type_is_documented_as_it_is_read() {
        document_matches_reading::<RegistrationBody<'static>>();
        document_matches_reading::<NewEvent>();
        document_matches_reading::<NewCategory>();
        document_matches_reading::<CapacityChange>();
        document_matches_reading::<NewTicket>();
        document_matches_reading::<crate::queue::NewQueue>();
        document_matches_reading::<crate::routes::admin::LogIn>();
        document_matches_reading::<crate::routes::webhooks::NewWebhook>();
    }

    #[test]
    fn the_fields_of_a_struct_are_the_ones_its_derive_reads() {
        assert_eq!(struct_fields::<CapacityChange>(), ["capacity"]);
        assert_eq!(
            struct_fields::<RegistrationBody<'static>>(),
            ["category", "email", "full_name", "phone", "attributes", "waitlist"]
        );
    }

    #[test]
    fn a_found_field_takes_any_value_and_says_what_it_was() {
        let read = |json: &str| serde_json::from_str::<NewTicket>(json).unwrap().email;
        assert!(matches!(read("{}"), Found::Absent));
        assert!(matches!(read(r#"{"email":null}"#), Found::Absent));
        assert!(
            matches!(read(r#"{"email":"a@example.org"}"#), Found::Present(ref text) if text == "a@example.org")
        );
        for other in ["1", "1.5", "true", "[]", "{}"] {
            assert!(matches!(read(&format!(r#"{{"email":{other}}}"#)), Found::Mistyped), "{other}");
        }
    }

    #[test]
    fn every_bad_member_of_a_new_event_is_named_in_one_answer() {
        let body = br#"{"zz":1,"aa":2,"name":" ","opens_at":"2026-11-24T10:00:00Z","closes_at":"2026-11-24T09:00:00Z",
            "hold_ttl_seconds":-1,"categories":[{"code":"10K","name":"A","capacity":7.0},"x",{"code":"10K","name":"B","capacity":1}],
            "queue":{"lobby_opens_at":"2026-11-24T11:00:00Z","overbook":"2","extra":true}}"#;
        let Err(ApiError::Validation(errors)) = new_event(body, "generated", 60, [0; 32]) else {
            panic!("a body with mistakes is refused");
        };
        let named: Vec<(&str, &str)> =
            errors.iter().map(|error| (error.field.as_str(), error.message.as_str())).collect();
        assert_eq!(
            named,
            [
                ("aa", "is not a known field"),
                ("zz", "is not a known field"),
                ("name", "must not be empty"),
                ("closes_at", "must be after opens_at"),
                ("hold_ttl_seconds", "must be a whole number, not negative"),
                ("categories[0].capacity", "is required and must be a whole number"),
                ("categories[1]", "must be an object"),
                ("categories[2].code", "appears twice"),
                ("queue.extra", "is not a known field"),
                ("queue.lobby_opens_at", "must be before opens_at"),
                ("queue.overbook", "must be a number from 1.0 to 10.0"),
            ]
        );
        assert!(matches!(capacity(br#"{"capacity":7.0}"#), Err(ApiError::Validation(_))));
        assert!(matches!(capacity(br#"{"capacity":7}"#), Ok(7)));
    }

    /// A field name as a body may spell it: known, escaped, or unknown.
    fn field_name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "category",
            "email",
            "full_name",
            "phone",
            "attributes",
            "waitlist",
            r"c\u0061tegory",
            "extra",
            "",
        ])
    }

    /// A field value as JSON text, of every type the fields take and some they do not.
    fn field_value() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            r#""10K""#,
            r#""5K""#,
            r#""42K""#,
            r#""a@example.org""#,
            r#""B@Example.ORG ""#,
            r#""Ana Runner""#,
            r#""\u0041na\tRunner""#,
            r#""""#,
            "null",
            "true",
            "false",
            "1",
            "-2.5e3",
            r#"{"x":1,"a":[true,null],"x":2}"#,
            "{}",
            "[1]",
            "[]",
        ])
    }

    proptest! {
        #[test]
        fn any_object_of_these_fields_is_answered_as_the_map_reading_answers_it(
            fields in prop::collection::vec((field_name(), field_value()), 0..8),
        ) {
            let members: Vec<String> = fields.iter().map(|(name, value)| format!("\"{name}\":{value}")).collect();
            agrees_with_the_map_reading(&format!("{{{}}}", members.join(",")));
        }
    }

    /// `Fields::bounded_text` as it was before `length_and_control`: characters decoded twice.
    fn bounded_text_by_characters(
        found: Found<&str>,
        required: bool,
        max: usize,
    ) -> (Option<String>, Vec<String>) {
        let mut fields = Fields::default();
        let read = (|| {
            let text = fields.text(found, "f", required)?.trim();
            let length = text.chars().count();
            if required && length == 0 {
                return fields.fail("f", "must not be empty");
            }
            if length > max {
                return fields.fail("f", format!("must have at most {max} characters"));
            }
            if text.chars().any(char::is_control) {
                return fields.fail("f", "must not contain control characters");
            }
            Some(text.to_string())
        })();
        (read, fields.errors.iter().map(|error| format!("{error:?}")).collect())
    }

    #[test]
    fn bounded_texts_are_read_as_when_their_characters_were_decoded_for_every_character_in_every_place() {
        // Every ASCII character, and characters of two to four bytes, among them controls
        // (U+0085, U+009F), spaces that trim takes (U+00A0, U+2028, U+3000) and neither.
        let characters: Vec<char> = (0u8..0x80)
            .map(char::from)
            .chain(['\u{80}', '\u{85}', '\u{9f}', '\u{a0}', 'é', 'ß', '\u{2028}', '\u{3000}', '語', '🏃'])
            .collect();
        let mut checked = 0;
        for &character in &characters {
            for length in [1, 2, 3, 7, 8, 9, 31, 32, 33] {
                for place in [0, length / 2, length - 1] {
                    let text: String =
                        (0..length).map(|index| if index == place { character } else { 'a' }).collect();
                    let spaced = format!(" {text}\t");
                    for text in [text.as_str(), spaced.as_str()] {
                        assert_eq!(
                            length_and_control(text),
                            (text.chars().count(), text.chars().any(char::is_control)),
                            "{text:?}"
                        );
                        for (required, max) in [(true, 32), (false, 32), (true, 8), (false, 200)] {
                            let mut fields = Fields::default();
                            let read = fields
                                .bounded_text(Found::Present(text), "f", required, max)
                                .map(str::to_owned);
                            let errors: Vec<String> =
                                fields.errors.iter().map(|error| format!("{error:?}")).collect();
                            assert_eq!(
                                (read, errors),
                                bounded_text_by_characters(Found::Present(text), required, max),
                                "{text:?}, required {required}, max {max}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000);
        for found in [Found::Absent, Found::Mistyped, Found::Present(""), Found::Present("  ")] {
            for required in [true, false] {
                let mut fields = Fields::default();
                let read = fields.bounded_text(found, "f", required, 8).map(str::to_owned);
                let errors: Vec<String> = fields.errors.iter().map(|error| format!("{error:?}")).collect();
                assert_eq!((read, errors), bounded_text_by_characters(found, required, 8));
            }
        }
    }
}
