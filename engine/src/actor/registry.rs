//! `Registry`: finds the actor of an event, starting it on first use (loading the event from
//! the store), never on a web worker's thread: on dedicated arbiters (the default), or on the
//! thread that built the registry (`arbiters: 0`; the server's main thread, where the
//! write-behind writer runs). An actor starts only once `Ownership` granted the event to this
//! node; otherwise `locate` names the owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::dev::channel;
use actix::{Actor, Addr, Arbiter, ArbiterHandle, Context, Handler, Message};
use dashmap::DashMap;
use tokio::sync::{OnceCell, oneshot};

use crate::actor::event_actor::{EventActor, EventActorParts, EventShared};
use crate::actor::messages::{
    ActorError, CancelMessage, ConfirmMessage, DrawMessage, JoinQueueMessage, RegisterMessage,
    SetCapacityMessage, StatusMessage, StopMessage, TicketMessage,
};
use crate::clock::{Clock, Timestamp};
use crate::command::{JoinQueue, Register};
use crate::counters::PublishedCounters;
use crate::event::EventConfig;
use crate::ids::{CategoryCode, EventId, RegistrationId};
use crate::limits::MAILBOX_CAPACITY_MAX;
use crate::outcome::{ActiveStatus, Outcome};
use crate::ownership::{Claim, Owner, Ownership, SoleOwner};
use crate::queue::{TicketId, TicketView};
use crate::store::{EventLoader, SubmissionSender};

#[derive(Clone, Copy, Debug)]
pub struct RegistryConfig {
    /// Dedicated threads that run event actors; 0 runs them on the arbiter of the thread that
    /// builds the registry (see `Placement`).
    pub arbiters: usize,
    /// Messages one event actor may have waiting.
    pub mailbox_capacity_max: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { arbiters: 1, mailbox_capacity_max: MAILBOX_CAPACITY_MAX }
    }
}

/// A running event: where to send its commands and where to read its figures. Its parts are
/// behind one `Arc`: a request clones its event's handle more than once (the lookup, the
/// owner-routing layer), and each clone of the parts wrote an atomic counter for the actor's
/// address, its figures and its configuration, again when each was dropped.
#[derive(Clone, Debug)]
pub struct EventHandle(Arc<HandleParts>);

#[derive(Debug)]
struct HandleParts {
    address: Addr<EventActor>,
    shared: Arc<EventShared>,
    config: Arc<EventConfig>,
    mailbox_capacity_max: usize,
}

impl EventHandle {
    /// The event as loaded (capacities change later; the counters have the current ones).
    pub fn config(&self) -> &EventConfig {
        &self.0.config
    }

    pub fn counters(&self) -> &PublishedCounters {
        &self.0.shared.published
    }

    /// Messages waiting in the actor's mailbox.
    pub fn mailbox_depth(&self) -> usize {
        self.0.shared.mailbox_depth.load(Ordering::Acquire)
    }

    pub fn is_running(&self) -> bool {
        self.0.address.connected()
    }

    pub async fn register(&self, request: Register) -> Result<Outcome, ActorError> {
        Ok(self.register_timed(request).await?.0)
    }

    /// Like `register`, with the time the decision was taken (its effects carry the same).
    pub async fn register_timed(&self, request: Register) -> Result<(Outcome, Timestamp), ActorError> {
        self.request(|reply| RegisterMessage { request, reply }).await?
    }

    /// The current status and waitlist position of an active registration (`None` otherwise),
    /// as the actor sees it now (decisions not yet durable included).
    pub async fn status(
        &self,
        registration: RegistrationId,
    ) -> Result<Option<(ActiveStatus, Option<u32>)>, ActorError> {
        self.request(|reply| StatusMessage { registration, reply }).await
    }

    pub async fn confirm(&self, registration: RegistrationId) -> Result<Outcome, ActorError> {
        Ok(self.request(|reply| ConfirmMessage { registration, reply }).await??.0)
    }

    pub async fn cancel(&self, registration: RegistrationId) -> Result<Outcome, ActorError> {
        Ok(self.request(|reply| CancelMessage { registration, reply }).await??.0)
    }

    pub async fn set_capacity(&self, category: CategoryCode, capacity: u32) -> Result<Outcome, ActorError> {
        Ok(self.request(|reply| SetCapacityMessage { category, capacity, reply }).await??.0)
    }

    /// Asks for a ticket in the event's queue.
    pub async fn join_queue(&self, request: JoinQueue) -> Result<(Outcome, Timestamp), ActorError> {
        self.request(|reply| JoinQueueMessage { request, reply }).await?
    }

    /// A queue ticket as the actor sees it now (`None`: no such ticket or no queue).
    pub async fn ticket(&self, ticket: TicketId) -> Result<Option<TicketView>, ActorError> {
        self.request(|reply| TicketMessage { ticket, reply }).await
    }

    /// The lobby's tickets in drawn order (`None` before the draw or without a queue).
    pub async fn draw(&self) -> Result<Option<Vec<TicketId>>, ActorError> {
        self.request(|reply| DrawMessage { reply }).await
    }

    /// Sends without waiting for room: a full mailbox is `Overloaded` at once.
    async fn request<M, R>(&self, message: impl FnOnce(oneshot::Sender<R>) -> M) -> Result<R, ActorError>
    where
        M: Message<Result = ()> + Send + 'static,
        EventActor: Handler<M>,
    {
        let parts = &*self.0;
        let depth = &parts.shared.mailbox_depth;
        if depth.fetch_add(1, Ordering::AcqRel) >= parts.mailbox_capacity_max {
            depth.fetch_sub(1, Ordering::AcqRel);
            return Err(ActorError::Overloaded);
        }
        let (reply, answered) = oneshot::channel();
        if let Err(error) = parts.address.try_send(message(reply)) {
            depth.fetch_sub(1, Ordering::AcqRel);
            return Err(match error {
                actix::prelude::SendError::Full(_) => ActorError::Overloaded,
                actix::prelude::SendError::Closed(_) => ActorError::Stopped,
            });
        }
        answered.await.map_err(|_| ActorError::Stopped)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Registry {
    events: DashMap<EventId, Arc<OnceCell<EventHandle>>>,
    placement: Placement,
    next_arbiter: AtomicUsize,
    loader: Arc<dyn EventLoader>,
    /// `None` once shut down: no actor may start, and the writer can see its senders go.
    submissions: std::sync::Mutex<Option<SubmissionSender>>,
    clock: Arc<dyn Clock>,
    config: RegistryConfig,
    ownership: Arc<dyn Ownership>,
}

/// Where an event runs, as `Registry::locate` found it.
#[derive(Debug)]
pub enum Located {
    /// On this node (started now if it was not running).
    Here(EventHandle),
    /// On another node; this one may not run it.
    Elsewhere(Owner),
    /// Nowhere: the store has no such event.
    Missing,
}

/// Where event actors run.
///
/// The server builds the registry on the thread whose runtime runs the write-behind writer
/// (`Application::build`): with `arbiters: 0` the actors run there too, and a decision's
/// submission reaches the writer, and the commit's completion the actor, without waking another
/// thread. *Decision — dedicated arbiters stay the default:* measured side by side, that saved
/// about a tenth of the wake-ups per admission and no server CPU that the machine's noise let
/// show (docs/architecture.md, "Where an admission's hand-offs go").
#[derive(Debug)]
enum Placement {
    /// The arbiter of the thread that built the registry; it outlives the registry, so actors
    /// are stopped one by one (`StopMessage`).
    Current(ArbiterHandle),
    /// Threads of their own, stopped with the registry.
    Dedicated(Vec<Arbiter>),
}

impl Registry {
    /// Starts the arbiters (none when `config.arbiters` is 0); call from within an actix system,
    /// on the thread that should run the actors when `config.arbiters` is 0.
    pub fn new(
        config: RegistryConfig,
        loader: Arc<dyn EventLoader>,
        submissions: SubmissionSender,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let placement = match config.arbiters {
            0 => Placement::Current(Arbiter::current()),
            arbiters => Placement::Dedicated((0..arbiters).map(|_| Arbiter::new()).collect()),
        };
        Registry {
            events: DashMap::new(),
            placement,
            next_arbiter: AtomicUsize::new(0),
            loader,
            submissions: std::sync::Mutex::new(Some(submissions)),
            clock,
            config,
            ownership: Arc::new(SoleOwner),
        }
    }

    /// Starts actors only for events `ownership` grants (by default, `SoleOwner`: all of them).
    pub fn with_ownership(mut self, ownership: Arc<dyn Ownership>) -> Self {
        self.ownership = ownership;
        self
    }

    /// Events with a running actor on this node.
    pub fn owned_events(&self) -> usize {
        self.events.iter().filter(|entry| entry.value().get().is_some_and(EventHandle::is_running)).count()
    }

    /// The handles of the events running on this node, e.g. for a watcher of their figures.
    pub fn running_events(&self) -> Vec<EventHandle> {
        self.events
            .iter()
            .filter_map(|entry| entry.value().get().filter(|handle| handle.is_running()).cloned())
            .collect()
    }

    /// Mailbox depth of every running event, for metrics.
    pub fn mailbox_depths(&self) -> Vec<(EventId, usize)> {
        self.events
            .iter()
            .filter_map(|entry| {
                entry.value().get().map(|handle| (entry.key().clone(), handle.mailbox_depth()))
            })
            .collect()
    }

    /// The running event, loading and starting it on first use; `Ok(None)` when the store has
    /// no such event. Concurrent first uses share one load.
    /// Another node's ownership is `ActorError::OwnedElsewhere`.
    pub async fn event(&self, id: &EventId) -> Result<Option<EventHandle>, ActorError> {
        match self.locate(id).await? {
            Located::Here(handle) => Ok(Some(handle)),
            Located::Elsewhere(_) => Err(ActorError::OwnedElsewhere),
            Located::Missing => Ok(None),
        }
    }

    /// The event whose id is `id`, if it runs here now; starts nothing. Looked up by the id's
    /// text (`EventId: Borrow<str>`): the owner-routing layer asks with the text of every
    /// request's path, and making an id of it first allocated a copy per request.
    pub fn running_event(&self, id: &str) -> Option<EventHandle> {
        let cell = self.events.get(id)?;
        cell.get().filter(|handle| handle.is_running()).cloned()
    }

    /// The running event, started on first use when this node can own it; else its owner.
    /// Concurrent first uses share one claim and one load.
    pub async fn locate(&self, id: &EventId) -> Result<Located, ActorError> {
        loop {
            // A shared lock and no key copy for the common case, a running event: every
            // request looks its event up (the ownership middleware, then the handler).
            let existing = self.events.get(id).map(|cell| cell.clone());
            let cell = match existing {
                Some(cell) => cell,
                None => self.events.entry(id.clone()).or_default().clone(),
            };
            let started = cell.get_or_try_init(|| self.start(id)).await;
            match started {
                Ok(handle) if handle.is_running() => return Ok(Located::Here(handle.clone())),
                // It stepped down or stopped: forget it and start it anew.
                Ok(_) => {
                    self.events.remove_if(id, |_, current| Arc::ptr_eq(current, &cell));
                }
                Err(StartError::NotFound) => {
                    // Unknown ids must not fill the map.
                    self.events.remove_if(id, |_, current| Arc::ptr_eq(current, &cell));
                    return Ok(Located::Missing);
                }
                Err(StartError::Elsewhere(owner)) => {
                    // Asked again on the next use: the owner may change.
                    self.events.remove_if(id, |_, current| Arc::ptr_eq(current, &cell));
                    return Ok(Located::Elsewhere(owner));
                }
                Err(StartError::Load(error)) => {
                    self.events.remove_if(id, |_, current| Arc::ptr_eq(current, &cell));
                    return Err(error);
                }
            }
        }
    }

    async fn start(&self, id: &EventId) -> Result<EventHandle, StartError> {
        let Some(submissions) = self.submission_sender() else {
            return Err(StartError::Load(ActorError::Stopped));
        };
        // Ownership first: loading takes a new epoch, which would fence the rightful owner.
        let tenure = match self.ownership.claim(id).await {
            Ok(Claim::Owned(tenure)) => tenure,
            Ok(Claim::Elsewhere(owner)) => return Err(StartError::Elsewhere(owner)),
            Err(error) => return Err(StartError::Load(ActorError::Ownership(error))),
        };
        let loaded =
            self.loader.load(id).await.map_err(|error| StartError::Load(ActorError::LoadFailed(error)))?;
        let Some(loaded) = loaded else {
            self.ownership.disclaim(id).await;
            return Err(StartError::NotFound);
        };
        let config = Arc::new(loaded.quota.config().clone());
        let shared = Arc::new(EventShared {
            published: PublishedCounters::new(&config),
            mailbox_depth: AtomicUsize::new(0),
        });
        let parts = EventActorParts {
            quota: loaded.quota,
            epoch: loaded.epoch,
            shared: shared.clone(),
            submissions,
            loader: self.loader.clone(),
            clock: self.clock.clone(),
            tenure,
        };
        let address = start_without_mailbox_bound(&self.next_arbiter_handle(), EventActor::new(parts));
        if self.submission_sender().is_none() {
            // Shut down while it loaded: on the current arbiter nothing else would stop it, and
            // its copy of the writer's queue would keep the writer from finishing. Bounded: the
            // one message this actor ever gets, past the mailbox count that `EventHandle`
            // keeps, and nobody else holds its address yet.
            address.do_send(StopMessage);
            return Err(StartError::Load(ActorError::Stopped));
        }
        tracing::info!(event_id = %id, epoch = loaded.epoch, "event actor started");
        let mailbox_capacity_max = self.config.mailbox_capacity_max;
        Ok(EventHandle(Arc::new(HandleParts { address, shared, config, mailbox_capacity_max })))
    }

    fn submission_sender(&self) -> Option<SubmissionSender> {
        // A panic while holding this lock would be in `shutdown`, which cannot panic.
        self.submissions.lock().expect("registry lock poisoned").clone()
    }

    /// Stops every event actor and lets go of the writer's channel, so that the writer can
    /// commit what it accepted and finish (graceful shutdown). Later uses answer `Stopped`.
    pub fn shutdown(&self) {
        self.submissions.lock().expect("registry lock poisoned").take();
        self.stop_actors();
    }

    fn stop_actors(&self) {
        match &self.placement {
            Placement::Current(_) => {
                for entry in self.events.iter() {
                    if let Some(handle) = entry.value().get() {
                        // A stopped actor's mailbox is closed; nothing is left to stop then.
                        // Bounded: one message per running actor, once (the map is cleared
                        // below, so a second `stop_actors` sends nothing); it must not be
                        // refused by a full mailbox the way requests are, or the actor would
                        // keep the writer from draining.
                        handle.0.address.do_send(StopMessage);
                    }
                }
            }
            Placement::Dedicated(arbiters) => {
                for arbiter in arbiters {
                    arbiter.stop();
                }
            }
        }
        self.events.clear();
    }

    fn next_arbiter_handle(&self) -> ArbiterHandle {
        match &self.placement {
            Placement::Current(arbiter) => arbiter.clone(),
            Placement::Dedicated(arbiters) => {
                let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % arbiters.len();
                arbiters[index].handle()
            }
        }
    }
}

/// Starts `actor` on `arbiter` with actix's own mailbox bound switched off from its first
/// message: the mailbox is bounded by `mailbox_depth` at the sender (`EventHandle::request`), and
/// actix's bound refuses a `try_send` past 16 messages. `Actor::start_in_arbiter` hands out the
/// address at once but runs its set-up, where the bound could be switched off, only when the
/// arbiter's thread gets to it: a burst sent in between was refused (`Overloaded`) while the
/// actor had not even started. Here the channel is made unbounded before the address exists.
fn start_without_mailbox_bound<A>(arbiter: &ArbiterHandle, actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Send,
{
    // 0: no bound (`actix::dev::channel::channel`).
    let (sender, receiver) = channel::channel(0);
    arbiter.spawn_fn(move || {
        actix::spawn(Context::with_receiver(receiver).into_future(actor));
    });
    Addr::new(sender)
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop_actors();
    }
}

enum StartError {
    NotFound,
    Elsewhere(Owner),
    Load(ActorError),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Counts the messages it gets.
    struct Counter(Arc<AtomicUsize>);

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    struct Count;

    impl Message for Count {
        type Result = usize;
    }

    impl Handler<Count> for Counter {
        type Result = usize;

        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    /// A burst sent before the arbiter's thread got to start the actor is taken, not refused:
    /// with actix's own bound still on, the 17th `try_send` was refused as if the mailbox were
    /// full (what `EventHandle::request` answers `Overloaded`).
    #[actix_rt::test]
    async fn an_actor_takes_a_burst_sent_before_its_arbiter_started_it() {
        let arbiter = Arbiter::new();
        // The arbiter's thread is kept busy until the burst is sent (or the test ends).
        let (release, released) = std::sync::mpsc::channel::<()>();
        assert!(arbiter.spawn_fn(move || {
            let _ = released.recv();
        }));
        let counted = Arc::new(AtomicUsize::new(0));
        let address = start_without_mailbox_bound(&arbiter.handle(), Counter(counted.clone()));
        for sent in 1..=100 {
            assert!(address.try_send(Count).is_ok(), "message {sent} of the burst was refused");
        }
        release.send(()).expect("the arbiter waits for the release");
        let last = tokio::time::timeout(Duration::from_secs(10), address.send(Count)).await;
        assert_eq!(last.expect("the actor answers").expect("the actor runs"), 101);
        assert_eq!(counted.load(Ordering::SeqCst), 101);
        arbiter.stop();
    }
}
