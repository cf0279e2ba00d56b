//! Request bodies parsed into domain types before anything reaches an actor. A body is first
//! read as JSON (malformed → 400), then each field is checked, and every bad field is listed
//! (→ 422): a client learns all its mistakes at once.

use std::sync::Arc;

use kuota_engine::{
    CategoryCode, CategoryConfig, Email, EventConfig, EventId, Idempotency, IdempotencyKey, QuotaLimits,
    Register, RegistrationDetails, Timestamp, limits,
};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};
use crate::{time_format, tokens};

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

    fn string<'a>(&mut self, object: &'a Map<String, Value>, field: &str, required: bool) -> Option<&'a str> {
        match object.get(field) {
            None | Some(Value::Null) if required => self.fail(field, "is required"),
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => self.fail(field, "must be a string"),
        }
    }

    fn bounded_string(
        &mut self,
        object: &Map<String, Value>,
        field: &str,
        required: bool,
        max: usize,
    ) -> Option<String> {
        let text = self.string(object, field, required)?.trim();
        let length = text.chars().count();
        if required && length == 0 {
            return self.fail(field, "must not be empty");
        }
        if length > max {
            return self.fail(field, format!("must have at most {max} characters"));
        }
        if text.chars().any(char::is_control) {
            return self.fail(field, "must not contain control characters");
        }
        Some(text.to_string())
    }

    fn boolean(&mut self, object: &Map<String, Value>, field: &str) -> bool {
        match object.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(value)) => *value,
            Some(_) => self.fail(field, "must be true or false").unwrap_or(false),
        }
    }

    fn unsigned(&mut self, object: &Map<String, Value>, field: &str, max: u64) -> Option<u64> {
        match object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => match number.as_u64() {
                Some(value) if value <= max => Some(value),
                Some(_) => self.fail(field, format!("must be at most {max}")),
                None => self.fail(field, "must be a whole number, not negative"),
            },
            Some(_) => self.fail(field, "must be a number"),
        }
    }

    fn time(&mut self, object: &Map<String, Value>, field: &str) -> Option<Timestamp> {
        let text = self.string(object, field, false)?;
        time_format::parse(text)
            .or_else(|| self.fail(field, "must be an RFC 3339 time, e.g. 2026-11-24T10:00:00Z"))
    }

    fn unknown(&mut self, object: &Map<String, Value>, known: &[&str]) {
        for field in object.keys().filter(|field| !known.contains(&field.as_str())) {
            self.errors.push(FieldError::new(field, "is not a known field"));
        }
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
    pub registrant: Email,
    pub waitlist: bool,
    full_name: String,
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
        token_secret: &[u8],
    ) -> (Register, String) {
        let fingerprint = tokens::fingerprint(&[
            self.category.as_str(),
            self.registrant.as_str(),
            &self.full_name,
            self.phone.as_deref().unwrap_or(""),
            self.attributes_json.as_deref().unwrap_or(""),
            if self.waitlist { "1" } else { "0" },
        ]);
        let access_token = tokens::access_token(token_secret, event, &key);
        let details = RegistrationDetails {
            full_name: self.full_name,
            phone: self.phone,
            attributes_json: self.attributes_json,
            access_token_hash: tokens::token_hash(&access_token),
        };
        let register = Register {
            category: self.category,
            registrant: self.registrant,
            idempotency: Some(Idempotency { key, fingerprint }),
            waitlist: self.waitlist,
            details: Arc::new(details),
        };
        (register, access_token)
    }
}

/// Parses `Idempotency-Key`: required, 1–255 printable ASCII.
pub fn idempotency_key(header: Option<&[u8]>) -> Result<IdempotencyKey, ApiError> {
    let bytes = header.ok_or(ApiError::IdempotencyKeyMissing)?;
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::IdempotencyKeyInvalid("an Idempotency-Key uses printable ASCII only".into())
    })?;
    IdempotencyKey::parse(text).map_err(|error| ApiError::IdempotencyKeyInvalid(error.to_string()))
}

/// Parses a registration body for `event` (whose categories are known).
pub fn registration(body: &[u8], event: &EventConfig) -> Result<RegistrationRequest, ApiError> {
    let object = json_object(body)?;
    let mut fields = Fields::default();
    fields.unknown(&object, &["category", "email", "full_name", "phone", "attributes", "waitlist"]);
    let category =
        fields.string(&object, "category", true).and_then(|code| match CategoryCode::parse(code) {
            Ok(code) if event.category_index(&code).is_some() => Some(code),
            Ok(_) => fields.fail("category", "is not a category of this event"),
            Err(error) => fields.fail("category", error.to_string()),
        });
    let email = fields.string(&object, "email", true).and_then(|text| match Email::parse(text) {
        Ok(email) => Some(email),
        Err(error) => fields.fail("email", error.to_string()),
    });
    let full_name = fields.bounded_string(&object, "full_name", true, FULL_NAME_LENGTH_MAX);
    let phone = fields.bounded_string(&object, "phone", false, PHONE_LENGTH_MAX);
    let attributes = match object.get("attributes") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => {
            // Serializing a parsed JSON value cannot fail.
            let text = serde_json::to_string(value).expect("JSON values serialize");
            if text.len() > ATTRIBUTES_SERIALIZED_BYTES_MAX {
                fields.fail("attributes", "must be at most 4 KiB when serialized")
            } else {
                Some(text)
            }
        }
        Some(_) => fields.fail("attributes", "must be an object"),
    };
    let waitlist = fields.boolean(&object, "waitlist");
    let parsed = match (category, email, full_name) {
        (Some(category), Some(email), Some(full_name)) => Some((category, email, full_name)),
        _ => None,
    };
    let (category, registrant, full_name) = fields.finish(parsed)?;
    Ok(RegistrationRequest { category, registrant, waitlist, full_name, phone, attributes_json: attributes })
}

/// Parses `POST /v1/events`; `generated_id` is used when the body names none.
pub fn new_event(body: &[u8], generated_id: &str, retention_seconds: u32) -> Result<EventConfig, ApiError> {
    let object = json_object(body)?;
    let mut fields = Fields::default();
    fields.unknown(&object, &["id", "name", "opens_at", "closes_at", "hold_ttl_seconds", "categories"]);
    let id = match fields.string(&object, "id", false) {
        Some(text) => EventId::parse(text).map_err(|error| fields.fail::<()>("id", error.to_string())).ok(),
        None => EventId::parse(generated_id).ok(),
    };
    let name = fields.bounded_string(&object, "name", true, EVENT_NAME_LENGTH_MAX);
    let opens_at = fields.time(&object, "opens_at");
    let closes_at = fields.time(&object, "closes_at");
    if let (Some(opens_at), Some(closes_at)) = (opens_at, closes_at)
        && closes_at <= opens_at
    {
        fields.fail::<()>("closes_at", "must be after opens_at");
    }
    let hold_ttl_seconds =
        fields.unsigned(&object, "hold_ttl_seconds", HOLD_TTL_SECONDS_MAX).unwrap_or(0) as u32;
    let categories = categories(&mut fields, object.get("categories"));
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
        }),
        _ => None,
    };
    fields.finish(parsed)
}

fn categories(fields: &mut Fields, value: Option<&Value>) -> Option<Vec<CategoryConfig>> {
    let Some(Value::Array(items)) = value else {
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
    for (index, item) in items.iter().enumerate() {
        let Value::Object(object) = item else {
            fields.fail::<()>(&format!("categories[{index}]"), "must be an object");
            continue;
        };
        let code_field = format!("categories[{index}].code");
        let code = match object.get("code") {
            Some(Value::String(text)) => CategoryCode::parse(text)
                .map_err(|error| fields.fail::<()>(&code_field, error.to_string()))
                .ok(),
            _ => fields.fail(&code_field, "is required and must be a string"),
        };
        let name = match object.get("name") {
            Some(Value::String(text))
                if !text.trim().is_empty() && text.chars().count() <= EVENT_NAME_LENGTH_MAX =>
            {
                Some(text.trim().to_string())
            }
            _ => fields.fail(&format!("categories[{index}].name"), "is required, 1 to 200 characters"),
        };
        let capacity_field = format!("categories[{index}].capacity");
        let capacity = match object.get("capacity").and_then(Value::as_i64) {
            Some(capacity) if capacity < 0 => fields.fail(&capacity_field, "must not be negative"),
            Some(capacity) if capacity > i64::from(limits::CATEGORY_CAPACITY_MAX) => {
                fields.fail(&capacity_field, format!("must be at most {}", limits::CATEGORY_CAPACITY_MAX))
            }
            Some(capacity) => Some(capacity as u32),
            None => fields.fail(&capacity_field, "is required and must be a whole number"),
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

/// Parses `PATCH .../categories/{code}`: `{capacity}`.
pub fn capacity(body: &[u8]) -> Result<u32, ApiError> {
    let object = json_object(body)?;
    let mut fields = Fields::default();
    fields.unknown(&object, &["capacity"]);
    let capacity = match object.get("capacity") {
        Some(Value::Number(number)) => match number.as_i64() {
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
