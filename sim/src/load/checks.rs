//! What `load` checks from the client's side, on every answer it gets: what the server
//! promised must add up. A violated check makes `load` exit non-zero.
//!
//! - no more admissions (distinct registration ids answered with 201) per category than the
//!   seats that were free when the run started;
//! - no registrant (e-mail) told two different registration ids;
//! - a replay (the same `Idempotency-Key` again, after a decided answer) gets the same status
//!   and the same body, byte for byte;
//! - every 201 or 202 names its registration;
//! - at the end, for an event `load` created, the server counts at least the admissions the
//!   client was told of (an acknowledged registration was stored).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::http::Response;
use crate::invariants::Violations;

pub const CHECK_SEATS: &str = "no more admissions (201) than seats";
pub const CHECK_REGISTRANT: &str = "no registrant told two different registration ids";
pub const CHECK_REPLAYS: &str = "replays identical (status and body)";
pub const CHECK_NAMED: &str = "every 201 and 202 names its registration";
pub const CHECK_SERVER_COUNTS: &str = "every acknowledged admission counted by the server at the end";

/// Every check, in the order the report lists them.
pub const CHECKS: [&str; 5] =
    [CHECK_SEATS, CHECK_REGISTRANT, CHECK_REPLAYS, CHECK_NAMED, CHECK_SERVER_COUNTS];

/// Codes of 409 answers that the event decided, which the API stores with the key and replays.
const DECIDED_CONFLICT_CODES: [&str; 4] = ["sold_out", "already_registered", "not_open", "closed"];

/// Bytes of a body quoted in a violation's details, at most.
const QUOTED_BODY_BYTES_MAX: usize = 200;

/// The first decided answer to one key: its status and a hash of its body.
#[derive(Clone, Copy, Debug)]
struct Decided {
    status: u16,
    body_hash: u64,
}

/// Everything the checks remember about a run's answers.
#[derive(Debug)]
pub struct Ledger {
    /// Seats free per category when the run started.
    seats: BTreeMap<String, u64>,
    /// Distinct registration ids answered with 201, per category.
    admitted: BTreeMap<String, u64>,
    /// Registration ids seen in a 201, and their category.
    admission_ids: HashMap<String, String>,
    /// The first registration id each e-mail was told of (201 or 202).
    registrant_ids: HashMap<String, String>,
    decided: HashMap<String, Decided>,
    pub replays_compared: u64,
    pub violations: Violations,
}

/// What an answer's body says, for the checks.
#[derive(Debug, Default)]
struct BodyFacts {
    id: Option<String>,
    category: Option<String>,
    code: Option<String>,
}

fn body_facts(body: &[u8]) -> BodyFacts {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return BodyFacts::default();
    };
    let text = |name: &str| object.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
    BodyFacts { id: text("id"), category: text("category"), code: text("code") }
}

/// The `code` of a problem document, if the body is one.
pub fn problem_code(body: &[u8]) -> Option<String> {
    body_facts(body).code
}

fn quote(body: &[u8]) -> String {
    let end = body.len().min(QUOTED_BODY_BYTES_MAX);
    let mut text = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > end {
        text.push('…');
    }
    text
}

impl Ledger {
    pub fn new(seats: BTreeMap<String, u64>) -> Self {
        Ledger {
            admitted: seats.keys().map(|category| (category.clone(), 0)).collect(),
            seats,
            admission_ids: HashMap::new(),
            registrant_ids: HashMap::new(),
            decided: HashMap::new(),
            replays_compared: 0,
            violations: Violations::default(),
        }
    }

    /// Seats free at the start, per category.
    pub fn seats(&self) -> &BTreeMap<String, u64> {
        &self.seats
    }

    /// Distinct admissions (201) per category.
    pub fn admitted(&self) -> &BTreeMap<String, u64> {
        &self.admitted
    }

    /// Checks one answer to a registration request for `key`, `email` and `category`.
    pub fn observe(&mut self, key: &str, email: &str, category: &str, response: &Response) {
        let status = response.status;
        let facts = body_facts(&response.body);
        let decided = match status {
            201 | 202 => true,
            409 => facts.code.as_deref().is_some_and(|code| DECIDED_CONFLICT_CODES.contains(&code)),
            _ => false,
        };
        if decided {
            self.compare_replay(key, status, &response.body);
        }
        if status != 201 && status != 202 {
            return;
        }
        let Some(id) = facts.id else {
            let detail = format!("key {key}: a {status} without an id: {}", quote(&response.body));
            return self.violations.add(CHECK_NAMED, detail);
        };
        match self.registrant_ids.get(email) {
            Some(first) if *first != id => {
                let detail = format!("{email}: told registration {first}, then {id} (key {key})");
                self.violations.add(CHECK_REGISTRANT, detail);
            }
            Some(_) => {}
            None => {
                self.registrant_ids.insert(email.to_string(), id.clone());
            }
        }
        if status == 201 && !self.admission_ids.contains_key(&id) {
            let category = facts.category.unwrap_or_else(|| category.to_string());
            self.admit(&id, category);
        }
    }

    fn admit(&mut self, id: &str, category: String) {
        let admitted = self.admitted.entry(category.clone()).or_insert(0);
        *admitted += 1;
        let admitted = *admitted;
        let seats = self.seats.get(&category).copied().unwrap_or(0);
        if admitted > seats {
            let detail = format!("category {category}: admission number {admitted} ({id}) for {seats} seats");
            self.violations.add(CHECK_SEATS, detail);
        }
        self.admission_ids.insert(id.to_string(), category);
    }

    fn compare_replay(&mut self, key: &str, status: u16, body: &[u8]) {
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let answer = Decided { status, body_hash: hasher.finish() };
        match self.decided.get(key) {
            None => {
                self.decided.insert(key.to_string(), answer);
            }
            Some(first) => {
                self.replays_compared += 1;
                if first.status != answer.status || first.body_hash != answer.body_hash {
                    let detail = format!(
                        "key {key}: first decided {}, then {status} with another body: {}",
                        first.status,
                        quote(body)
                    );
                    self.violations.add(CHECK_REPLAYS, detail);
                }
            }
        }
    }

    /// Compares the server's count of taken seats (confirmed + held) per category at the end
    /// with the admissions the client was told of: a 201 means stored, so the server's count
    /// may be higher (answers lost to timeouts) but never lower.
    pub fn check_server_counts(&mut self, taken: &BTreeMap<String, u64>) {
        let rows: Vec<(String, u64)> =
            self.admitted.iter().map(|(category, count)| (category.clone(), *count)).collect();
        for (category, admitted) in rows {
            let counted = taken.get(&category).copied().unwrap_or(0);
            if counted < admitted {
                let detail = format!(
                    "category {category}: {admitted} admissions acknowledged, {counted} taken on the server"
                );
                self.violations.add(CHECK_SERVER_COUNTS, detail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }

    fn ledger(seats: u64) -> Ledger {
        Ledger::new(BTreeMap::from([("A".to_string(), seats)]))
    }

    #[test]
    fn an_admission_beyond_the_seats_is_a_violation() {
        let mut ledger = ledger(1);
        ledger.observe("k1", "a@x", "A", &answer(201, r#"{"id":"e.1","category":"A"}"#));
        ledger.observe("k1", "a@x", "A", &answer(201, r#"{"id":"e.1","category":"A"}"#));
        assert_eq!(ledger.violations.total, 0, "a replay is not a second admission");
        ledger.observe("k2", "b@x", "A", &answer(201, r#"{"id":"e.2","category":"A"}"#));
        assert_eq!(ledger.violations.of(CHECK_SEATS).map(|found| found.count), Some(1));
    }

    #[test]
    fn two_ids_for_one_email_is_a_violation() {
        let mut ledger = ledger(10);
        ledger.observe("k1", "a@x", "A", &answer(201, r#"{"id":"e.1"}"#));
        ledger.observe("k2", "a@x", "A", &answer(202, r#"{"id":"e.2"}"#));
        assert!(ledger.violations.of(CHECK_REGISTRANT).is_some());
    }

    #[test]
    fn a_replay_with_another_body_is_a_violation_but_undecided_answers_are_not_compared() {
        let mut ledger = ledger(10);
        ledger.observe("k1", "a@x", "A", &answer(503, r#"{"code":"overloaded"}"#));
        ledger.observe("k1", "a@x", "A", &answer(409, r#"{"code":"idempotency_key_in_flight"}"#));
        ledger.observe("k1", "a@x", "A", &answer(409, r#"{"code":"sold_out"}"#));
        assert_eq!((ledger.replays_compared, ledger.violations.total), (0, 0));
        ledger.observe("k1", "a@x", "A", &answer(409, r#"{"code":"sold_out","detail":"x"}"#));
        assert_eq!(ledger.replays_compared, 1);
        assert!(ledger.violations.of(CHECK_REPLAYS).is_some());
    }

    #[test]
    fn a_server_that_counts_fewer_than_it_acknowledged_is_a_violation() {
        let mut ledger = ledger(10);
        ledger.observe("k1", "a@x", "A", &answer(201, r#"{"id":"e.1"}"#));
        ledger.check_server_counts(&BTreeMap::from([("A".to_string(), 1)]));
        assert_eq!(ledger.violations.total, 0);
        ledger.check_server_counts(&BTreeMap::from([("A".to_string(), 0)]));
        assert!(ledger.violations.of(CHECK_SERVER_COUNTS).is_some());
    }
}
