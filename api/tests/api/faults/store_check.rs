//! What the store holds after a fault, against what the registrants were told: 0 lost
//! acknowledgements, 0 oversold, 0 duplicates.

use std::collections::HashMap;

use super::Goals;
use super::load::Sample;

#[derive(Debug)]
struct Row {
    number: i64,
    email: String,
    status: String,
    key: Option<String>,
}

impl Row {
    fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "held" | "confirmed" | "waitlisted")
    }
}

/// Reads the event's registrations and categories and checks every promise about data;
/// returns the number of registrations stored.
pub async fn check_store(database_url: &str, event: &str, samples: &[Sample], goals: &mut Goals) -> usize {
    let mut connection = <sqlx::MySqlConnection as sqlx::Connection>::connect(database_url)
        .await
        .expect("the store answers once the fault is over");
    let rows: Vec<(i64, String, String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT number, email, status, idempotency_key FROM registrations WHERE event_id = ? ORDER BY number",
    )
    .bind(event)
    .fetch_all(&mut connection)
    .await
    .expect("the registrations are read");
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(number, email, status, key)| Row {
            number,
            email,
            status,
            key: key.map(|key| String::from_utf8_lossy(&key).into_owned()),
        })
        .collect();
    let capacities: Vec<(String, i64)> =
        sqlx::query_as("SELECT code, capacity FROM categories WHERE event_id = ?")
            .bind(event)
            .fetch_all(&mut connection)
            .await
            .expect("the categories are read");
    let sold: Vec<(String, i64)> = sqlx::query_as(
        "SELECT category_code, COUNT(*) FROM registrations \
         WHERE event_id = ? AND status IN ('held', 'confirmed') GROUP BY category_code",
    )
    .bind(event)
    .fetch_all(&mut connection)
    .await
    .expect("the seats taken are counted");

    let by_number: HashMap<i64, &Row> = rows.iter().map(|row| (row.number, row)).collect();
    let prefix = format!("{event}.");
    // 0 lost acknowledgements: every 201 names a stored, active registration of that e-mail.
    for sample in samples {
        let Some(id) = sample.answer.as_ref().ok().and_then(|answer| answer.id.as_ref()) else { continue };
        let number = id.strip_prefix(&prefix).and_then(|number| number.parse::<i64>().ok());
        let stored = number.and_then(|number| by_number.get(&number));
        goals.check(
            stored.is_some_and(|row| row.is_active() && row.email == sample.email),
            "0 lost acknowledgements",
            || format!("lost acknowledgement: {} was told 201 {id}, the store has {stored:?}", sample.key),
        );
    }
    // 0 oversold.
    for (code, capacity) in &capacities {
        let taken = sold.iter().find(|(sold_code, _)| sold_code == code).map_or(0, |(_, count)| *count);
        goals.check(taken <= *capacity, "0 oversold", || {
            format!("oversold: {code} has {taken} held or confirmed for {capacity} seats")
        });
    }
    // 0 duplicates: one active registration per e-mail, one registration per key, and no
    // registrant told 201 for two different registrations.
    let mut active_by_email: HashMap<&str, usize> = HashMap::new();
    let mut rows_by_key: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in &rows {
        if row.is_active() {
            *active_by_email.entry(row.email.as_str()).or_default() += 1;
        }
        if let Some(key) = &row.key {
            rows_by_key.entry(key.as_str()).or_default().push(row);
        }
    }
    for (email, count) in &active_by_email {
        goals.check(*count <= 1, "0 duplicates (one active registration per e-mail)", || {
            format!("duplicate: {email} has {count} active registrations")
        });
    }
    for (key, rows) in &rows_by_key {
        goals.check(rows.len() <= 1, "0 duplicates (one registration per idempotency key)", || {
            format!("duplicate: key {key} made {} registrations", rows.len())
        });
    }
    let mut acknowledged_ids_by_email: HashMap<&str, Vec<&str>> = HashMap::new();
    for sample in samples {
        if let Some(id) = sample.answer.as_ref().ok().and_then(|answer| answer.id.as_deref()) {
            let ids = acknowledged_ids_by_email.entry(sample.email.as_str()).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    for (email, ids) in &acknowledged_ids_by_email {
        goals.check(ids.len() <= 1, "0 duplicates (no registrant told 201 twice)", || {
            format!("duplicate: {email} was told 201 for {ids:?}")
        });
    }
    // A decided answer to a key that registered is that registration (a replay), never
    // "already registered" nor a 201 for another one.
    for sample in samples.iter().filter(|sample| sample.is_decided()) {
        if let Some(rows) = rows_by_key.get(sample.key.as_str()) {
            let expected = format!("{event}.{}", rows[0].number);
            let id = sample.answer.as_ref().ok().and_then(|answer| answer.id.clone());
            goals.check(
                id.as_deref() == Some(expected.as_str()),
                "a decided key replays its registration",
                || format!("{} registered as {expected} but was answered: {}", sample.key, sample.describe()),
            );
        }
    }
    rows.len()
}

#[cfg(test)]
mod checks {
    use super::super::super::support::{Backend, race, spawn_app};
    use super::super::load::register;
    use super::*;

    #[actix_rt::test]
    async fn the_store_check_finds_an_acknowledgement_the_store_does_not_hold() {
        let app = spawn_app(Backend::MariaDb).await;
        app.create_event(race("race", 5, 0)).await;
        let real = register(app.port, "race", "k1", "ana@example.org", false).await;
        assert_eq!(real.status(), Some(201), "{}", real.describe());
        let mut honest = Goals::new("the store check of a true answer", 0);
        check_store(&app.database_url, "race", std::slice::from_ref(&real), &mut honest).await;
        assert_eq!(honest.missed_goals(), Vec::<&str>::new());
        // As if a node had told another key of the same registrant 201 for a seat never stored.
        let mut invented = real.clone();
        invented.key = "k2".into();
        invented.answer.as_mut().unwrap().id = Some("race.999".into());
        let mut goals = Goals::new("the store check of an invented answer", 0);
        check_store(&app.database_url, "race", &[real, invented], &mut goals).await;
        assert_eq!(
            goals.missed_goals(),
            vec!["0 lost acknowledgements", "0 duplicates (no registrant told 201 twice)"]
        );
    }
}
