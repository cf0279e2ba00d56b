//! Announces `event.sold_out`: a watcher of the events this node runs, which looks at their
//! published figures every `SOLD_OUT_CHECK_INTERVAL_MS` and, when one turns sold out, records it
//! with its announcement (`SqlStore::announce_sold_out`: one transaction, once per sell-out
//! whichever node sees it, an outbox entry the fan-out then delivers). When seats come back
//! the record is cleared, so that the next sell-out is announced too.
//!
//! The engine decides registrations and knows nothing of sell-outs as such; the write-behind
//! writes what the engine decided. Watching from here keeps both as they are, and keeps the
//! sell-out out of the registrations' transactions (whose rows per registration are counted).
//! A sell-out shorter than the interval can go unseen; a node that dies between the last seat
//! and the next check leaves it to the event's next owner, which finds it unrecorded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kuota_engine::actor::EventHandle;
use kuota_engine::{Clock, EventId};
use kuota_persist::store::SqlStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::routes::events::{event_status, event_view};

/// How often the watcher looks at the figures, in ms.
pub const SOLD_OUT_CHECK_INTERVAL_MS: u64 = 250;

/// The events running on this node.
pub type RunningEvents = Arc<dyn Fn() -> Vec<EventHandle> + Send + Sync>;

#[derive(Debug)]
pub struct SoldOutWatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SoldOutWatcher {
    pub fn start(running_events: RunningEvents, store: SqlStore, clock: Arc<dyn Clock>) -> SoldOutWatcher {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            // What the store holds for each event, as far as this node last wrote or saw it.
            let mut recorded: HashMap<EventId, bool> = HashMap::new();
            while !*stopped.borrow() {
                let now = clock.now();
                let running = running_events();
                let running_ids: HashSet<&EventId> = running.iter().map(|event| &event.config().id).collect();
                recorded.retain(|id, _| running_ids.contains(id));
                for event in running {
                    let figures = event.counters().snapshot();
                    let sold_out = event_status(event.config(), &figures, now) == "sold_out";
                    let id = event.config().id.clone();
                    if recorded.get(&id) == Some(&sold_out) {
                        continue;
                    }
                    let stored = if sold_out {
                        let data = event_view(&event, &figures, now);
                        // A struct of strings and numbers; serializing it cannot fail.
                        let payload = serde_json::to_string(&data).expect("an event view serializes");
                        store.announce_sold_out(&id, &payload, now).await.map(|announced| {
                            if announced {
                                tracing::info!(event_id = %id, "event sold out; announced");
                            }
                        })
                    } else {
                        store.clear_sold_out(&id).await
                    };
                    match stored {
                        Ok(()) => {
                            recorded.insert(id, sold_out);
                        }
                        Err(error) => {
                            tracing::warn!(%error, event_id = %id, "sold-out state not stored; next check retries")
                        }
                    }
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(SOLD_OUT_CHECK_INTERVAL_MS)) => {}
                }
            }
        });
        SoldOutWatcher { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
