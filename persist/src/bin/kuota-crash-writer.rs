//! A process for the crash test: it loads one event from the store (taking ownership), decides
//! registrations with the engine's real `EventQuota`, writes them through the real
//! `WriteBehind`, and prints `ACK <registration> <email>` for each registration the moment it
//! is acknowledged (committed). The test kills it with SIGKILL at random moments and then
//! checks that every acknowledged registration is stored and no category is oversold.
//!
//! Usage: `kuota-crash-writer <database-url> <event-id> <email-prefix> <registrations>`.
//! It exits 0 after `DONE`, 2 on a usage error, 3 when the store fails.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use kuota_engine::store::{EventLoader, Submission};
use kuota_engine::{
    CategoryCode, Clock, Command, Decision, Email, EventId, Outcome, Register, RegistrationDetails,
    RegistrationId, Seq, SystemClock,
};
use kuota_persist::store::SqlStore;
use kuota_persist::write_behind::{WriteBehind, WriteBehindConfig};
use tokio::sync::oneshot;

/// Decisions waiting for their commit at once, as an event actor keeps several in flight.
const IN_FLIGHT_MAX: usize = 64;

struct Pending {
    registration: RegistrationId,
    email: String,
    last_seq: Seq,
    committed: oneshot::Receiver<Result<(), kuota_engine::store::StoreError>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let [_, url, event, prefix, count] = arguments.as_slice() else {
        eprintln!("usage: kuota-crash-writer <database-url> <event-id> <email-prefix> <registrations>");
        std::process::exit(2);
    };
    let (Ok(event), Ok(count)) = (EventId::parse(event), count.parse::<usize>()) else {
        eprintln!("the event id or the number of registrations is not valid");
        std::process::exit(2);
    };
    if let Err(error) = run(url, &event, prefix, count).await {
        eprintln!("crash writer failed: {error}");
        std::process::exit(3);
    }
}

async fn run(url: &str, event: &EventId, prefix: &str, count: usize) -> Result<(), String> {
    let store = SqlStore::connect(url).await.map_err(|error| error.chain())?;
    let loaded =
        store.load(event).await.map_err(|error| error.to_string())?.ok_or("the event is not stored")?;
    let (mut quota, epoch) = (loaded.quota, loaded.epoch);
    let codes: Vec<CategoryCode> =
        quota.config().categories.iter().map(|category| category.code.clone()).collect();
    let (sender, writer) = WriteBehind::start(store, WriteBehindConfig::default(), None);
    let clock = SystemClock;
    let mut pending = VecDeque::new();
    let mut stdout = std::io::stdout().lock();
    for n in 0..count {
        let email = format!("{prefix}-{n}@crash.example");
        let request = Register {
            category: codes[n % codes.len()].clone(),
            registrant: Email::parse(&email).map_err(|error| error.to_string())?,
            idempotency: None,
            waitlist: false,
            details: Arc::new(RegistrationDetails { full_name: "Crash Test".into(), ..Default::default() }),
            queue_pass: None,
        };
        let (outcome, effects) = quota.apply(&Command::Register(request), clock.now());
        let registration = match outcome {
            Outcome::Decided(Decision::Confirmed { registration }) => registration,
            Outcome::Decided(Decision::SoldOut) => continue,
            other => return Err(format!("unexpected outcome {other:?}")),
        };
        let (done, committed) = oneshot::channel();
        let submission = Submission { event: event.clone(), epoch, effects, done };
        sender.send(submission).await.map_err(|_| "the writer stopped")?;
        pending.push_back(Pending { registration, email, last_seq: quota.last_seq(), committed });
        while pending.len() >= IN_FLIGHT_MAX {
            acknowledge(&mut pending, &mut quota, &mut stdout).await?;
        }
    }
    while !pending.is_empty() {
        acknowledge(&mut pending, &mut quota, &mut stdout).await?;
    }
    drop(sender);
    writer.closed().await;
    writeln!(stdout, "DONE").map_err(|error| error.to_string())?;
    Ok(())
}

/// Waits for the oldest decision's commit and prints it; answers go out in decision order, as
/// an event actor's do.
async fn acknowledge(
    pending: &mut VecDeque<Pending>,
    quota: &mut kuota_engine::EventQuota,
    stdout: &mut impl Write,
) -> Result<(), String> {
    let Some(oldest) = pending.pop_front() else { return Ok(()) };
    match oldest.committed.await {
        Ok(Ok(())) => {
            quota.mark_durable(oldest.last_seq);
            // One line per write, flushed at once: the test reads it the moment it is printed.
            writeln!(stdout, "ACK {} {}", oldest.registration.0, oldest.email)
                .map_err(|error| error.to_string())?;
            stdout.flush().map_err(|error| error.to_string())
        }
        Ok(Err(error)) => Err(format!("the store failed a write: {error}")),
        Err(_) => Err("the writer dropped a submission".into()),
    }
}
