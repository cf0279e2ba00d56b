//! The queue in front of a queued event's opening: tickets (one per registrant), the lobby, the
//! draw at `opens_at`, admission bounded by the live inventory, passes and their expiry.
//!
//! `Queue` is owned by `EventQuota` and changed only through its `apply`, which hands it the
//! seat figures it needs; it never reads a clock or draws randomness. The draw's order is a pure
//! function of the seed (supplied from outside, committed before the lobby opens) and the
//! tickets' ids: `HMAC-SHA256(key = seed, message = ticket id text)` as a big-endian number,
//! ascending. Tickets that join after the draw follow in the order they were decided, which is
//! the order the write-behind commits them in.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::ids::{EventId, InvalidId};
use crate::limits::{
    ADMISSION_BURST_MS, ADMISSION_RATE_WINDOW_SECONDS_MAX, ADMISSION_RATE_WINDOW_SECONDS_MIN,
    OVERBOOK_PERMILLE_MAX, OVERBOOK_PERMILLE_MIN, PASS_TTL_SECONDS_MAX, PASS_TTL_SECONDS_MIN,
    QUEUE_MAX_LIMIT, REFRESH_AFTER_SECONDS_MAX, REFRESH_AFTER_SECONDS_MIN, REFRESH_TICKETS_AHEAD_PER_SECOND,
};
use crate::quota::{KeyDigest, Map};

/// A queue ticket, numbered from 1 within its event. Its text (`TicketId::text`) is what the
/// API shows and what the draw hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct TicketId(pub u64);

impl TicketId {
    /// The ticket's public id: `<event id>.q<number>`. Event ids never contain '.', so the last
    /// '.' splits the two.
    pub fn text(self, event: &EventId) -> String {
        format!("{event}.q{}", self.0)
    }

    /// Reads a ticket id text back into its event and number.
    pub fn parse(text: &str) -> Result<(EventId, TicketId), InvalidId> {
        let invalid = InvalidId("a ticket id has the shape <event>.q<number>");
        let (event, number) = text.rsplit_once('.').ok_or(invalid.clone())?;
        let number = number.strip_prefix('q').ok_or(invalid.clone())?;
        if number.is_empty() || number.starts_with('0') || !number.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid);
        }
        let number: u64 = number.parse().map_err(|_| invalid.clone())?;
        Ok((EventId::parse(event)?, TicketId(number)))
    }
}

/// The 32 random bytes the draw is keyed with. Chosen outside the core (which draws no
/// randomness), kept secret until the draw, published after it. `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DrawSeed(pub [u8; 32]);

impl fmt::Debug for DrawSeed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("DrawSeed(..)")
    }
}

impl DrawSeed {
    /// The commitment published when the lobby opens: SHA-256 of the seed's raw bytes.
    pub fn commitment(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// The ticket's draw key: `HMAC-SHA256(seed, ticket id text)`; the lobby is drawn in
    /// ascending order of these, compared as big-endian numbers (which is byte order).
    pub fn draw_key(&self, ticket_id_text: &str) -> [u8; 32] {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(ticket_id_text.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The queue settings of an event (`queue` in `POST /v1/events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// From here until `opens_at`, joiners wait in the lobby and are drawn at `opens_at`.
    pub lobby_opens_at: Timestamp,
    pub pass_ttl_seconds: u32,
    /// Passes outstanding may reach ⌊overbook × seats available⌋; in thousandths (1.0 = 1000).
    pub overbook_permille: u32,
    /// Admissions per 1000 seconds (admit_per_second × 1000); `None` for no pacing.
    pub admit_per_kilosecond: Option<u64>,
    /// Tickets the event may hand out.
    pub queue_max: u32,
    pub draw_seed: DrawSeed,
}

/// Why queue settings cannot be used; each names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    #[error("a queued event needs opens_at")]
    WithoutOpening,
    #[error("queue.lobby_opens_at must be before opens_at")]
    LobbyNotBeforeOpening,
    #[error("queue.pass_ttl_seconds must be between {PASS_TTL_SECONDS_MIN} and {PASS_TTL_SECONDS_MAX}")]
    PassTtl,
    #[error("queue.overbook must be between 1.0 and 10.0")]
    Overbook,
    #[error("queue.admit_per_second must be above 0")]
    AdmitPerSecond,
    #[error("queue.queue_max must be between 1 and {QUEUE_MAX_LIMIT}")]
    QueueMax,
}

impl QueueConfig {
    pub fn validate(&self, opens_at: Option<Timestamp>) -> Result<(), QueueConfigError> {
        let opens_at = opens_at.ok_or(QueueConfigError::WithoutOpening)?;
        if self.lobby_opens_at >= opens_at {
            return Err(QueueConfigError::LobbyNotBeforeOpening);
        }
        if !(PASS_TTL_SECONDS_MIN..=PASS_TTL_SECONDS_MAX).contains(&self.pass_ttl_seconds) {
            return Err(QueueConfigError::PassTtl);
        }
        if !(OVERBOOK_PERMILLE_MIN..=OVERBOOK_PERMILLE_MAX).contains(&self.overbook_permille) {
            return Err(QueueConfigError::Overbook);
        }
        if self.admit_per_kilosecond == Some(0) {
            return Err(QueueConfigError::AdmitPerSecond);
        }
        if !(1..=QUEUE_MAX_LIMIT).contains(&self.queue_max) {
            return Err(QueueConfigError::QueueMax);
        }
        Ok(())
    }
}

/// Where a ticket stands, as the registrant reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Lobby,
    Waiting,
    Admitted,
    Used,
    Expired,
    SoldOut,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Lobby => "lobby",
            TicketStatus::Waiting => "waiting",
            TicketStatus::Admitted => "admitted",
            TicketStatus::Used => "used",
            TicketStatus::Expired => "expired",
            TicketStatus::SoldOut => "sold_out",
        }
    }
}

/// A ticket as it reads at one moment: what `GET /v1/queue/{ticket_id}` shows (the API adds
/// the pass texts, which it derives from the ticket id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketView {
    pub ticket: TicketId,
    pub status: TicketStatus,
    /// 1-based place in the whole queue order; `None` before the draw.
    pub position: Option<u32>,
    /// Tickets before this one that still wait; `None` before the draw.
    pub ahead: Option<u32>,
    pub eta_seconds: Option<u64>,
    pub refresh_after_seconds: u32,
    /// With `admitted`: when the pass lapses.
    pub pass_expires_at: Option<Timestamp>,
}

/// Which pass a registration presents (the API has checked its signature and found the ticket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePass {
    pub ticket: TicketId,
    /// A sold-out ticket's `waitlist_pass`, good only for joining a waitlist.
    pub waitlist: bool,
}

/// What the store keeps of a ticket, as recovery hands it to `QuotaBuilder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketRecord {
    pub ticket: TicketId,
    pub registrant: crate::ids::Email,
    /// Joined before `opens_at`: placed by the draw.
    pub lobby: bool,
    pub state: StoredTicketState,
    /// When the ticket's pass was granted and, once used or lapsed, when it ended; `None` for a
    /// ticket never admitted (or stored without them). Recovery rebuilds the measured admission
    /// rate from them, so that a restarted queue's ETA does not wait for the next pass to end.
    pub pass: Option<PassTimes>,
}

/// When a ticket's pass was granted, and when it ended (used or lapsed; `None` while it is
/// outstanding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassTimes {
    pub granted_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

/// A ticket's stored state; `lobby` and `sold_out` are readings of `Waiting`, never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredTicketState {
    Waiting,
    Admitted { pass_expires_at: Timestamp },
    Used,
    Expired,
}

impl StoredTicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredTicketState::Waiting => "waiting",
            StoredTicketState::Admitted { .. } => "admitted",
            StoredTicketState::Used => "used",
            StoredTicketState::Expired => "expired",
        }
    }
}

/// One ticket, indexed by number in `Queue::tickets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) registrant: KeyDigest,
    pub(crate) state: StoredTicketState,
    pub(crate) lobby: bool,
    /// Index in `Queue::order` plus one; 0 while the ticket waits in the lobby for the draw.
    pub(crate) place: u32,
}

/// The seat figures admission and sold-out readings depend on, summed over categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seats {
    pub(crate) available: u64,
    pub(crate) held: u64,
}

/// One event's queue. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Queue {
    pub(crate) config: QueueConfig,
    /// Ticket number `n` is at index `n - 1`.
    pub(crate) tickets: Vec<Ticket>,
    pub(crate) by_registrant: Map<KeyDigest, TicketId>,
    /// Tickets waiting for the draw, in joining order; empty once drawn.
    pub(crate) lobby: Vec<TicketId>,
    pub(crate) drawn: bool,
    /// The queue order: the drawn lobby, then later joins in decision order.
    pub(crate) order: Vec<TicketId>,
    /// `order[..cursor]` holds no waiting ticket; `order[cursor]`, if any, waits.
    pub(crate) cursor: usize,
    /// Indexes at or beyond `cursor` whose ticket no longer waits (a waitlist pass was used):
    /// only these break "everything from the cursor on waits".
    pub(crate) left_early: BTreeSet<usize>,
    /// Outstanding passes by expiry.
    pub(crate) passes: BTreeSet<(Timestamp, TicketId)>,
    /// Pacing for `admit_per_kilosecond`: the next admission may happen at this time, in µs
    /// (0 before the first).
    pub(crate) admission_allowed_at_micros: u64,
    /// The seconds of the rate window (`rate_window_seconds`) that saw admissions, oldest
    /// first, each with the admissions counted from `rate_from_seconds` through it (a running
    /// total, so that a ticket read, on the actor, finds the window's count by a binary search
    /// instead of adding up a pass lifetime of seconds); bounded by the window.
    pub(crate) recent_admissions: VecDeque<(u64, u64)>,
    /// The running total of the last second dropped from `recent_admissions` (0 before any).
    pub(crate) admissions_forgotten: u64,
    /// The second the first pass ended (used or lapsed); `None` before. Until then admission
    /// is the opening's burst (every pass the seats allow at once), which says nothing about
    /// how fast the line moves after it, so it is not counted. A paced queue (`admit_per_second`)
    /// has no such burst: its count starts with its first admission. Recovery rebuilds it from
    /// the tickets' stored pass times (`restore_admission_rate`).
    pub(crate) rate_from_seconds: Option<u64>,
}

impl Queue {
    pub(crate) fn new(config: QueueConfig) -> Self {
        Queue {
            config,
            tickets: Vec::new(),
            by_registrant: Map::default(),
            lobby: Vec::new(),
            drawn: false,
            order: Vec::new(),
            cursor: 0,
            left_early: BTreeSet::new(),
            passes: BTreeSet::new(),
            admission_allowed_at_micros: 0,
            recent_admissions: VecDeque::new(),
            admissions_forgotten: 0,
            rate_from_seconds: None,
        }
    }

    pub(crate) fn ticket(&self, ticket: TicketId) -> Option<&Ticket> {
        let index = usize::try_from(ticket.0.checked_sub(1)?).ok()?;
        self.tickets.get(index)
    }

    pub(crate) fn ticket_mut(&mut self, ticket: TicketId) -> &mut Ticket {
        &mut self.tickets[ticket.0 as usize - 1]
    }

    pub(crate) fn next_ticket(&self) -> TicketId {
        TicketId(self.tickets.len() as u64 + 1)
    }

    /// Adds a new ticket: to the lobby before `opens_at`, else to the tail of the order.
    pub(crate) fn add(&mut self, registrant: KeyDigest, lobby: bool) -> TicketId {
        let id = self.next_ticket();
        let place = if lobby {
            self.lobby.push(id);
            0
        } else {
            self.order.push(id);
            self.order.len() as u32
        };
        self.tickets.push(Ticket { registrant, state: StoredTicketState::Waiting, lobby, place });
        let previous = self.by_registrant.insert(registrant, id);
        assert!(previous.is_none(), "a registrant got a second ticket");
        id
    }

    /// The draw: the lobby, ordered by its draw keys, goes before every later join.
    pub(crate) fn draw(&mut self, event: &EventId) {
        assert!(!self.drawn, "the draw ran twice");
        let seed = self.config.draw_seed;
        let mut drawn: Vec<([u8; 32], TicketId)> =
            self.lobby.drain(..).map(|ticket| (seed.draw_key(&ticket.text(event)), ticket)).collect();
        drawn.sort_unstable();
        let later = std::mem::take(&mut self.order);
        self.order = drawn.into_iter().map(|(_, ticket)| ticket).chain(later).collect();
        for index in 0..self.order.len() {
            let ticket = self.order[index];
            self.ticket_mut(ticket).place = index as u32 + 1;
        }
        self.drawn = true;
        self.cursor = 0;
        self.left_early.clear();
        self.settle_cursor();
    }

    /// Moves the cursor past tickets that no longer wait; indexes it passes leave `left_early`.
    pub(crate) fn settle_cursor(&mut self) {
        while let Some(ticket) = self.order.get(self.cursor).copied() {
            if self.tickets[ticket.0 as usize - 1].state == StoredTicketState::Waiting {
                break;
            }
            self.left_early.remove(&self.cursor);
            self.cursor += 1;
        }
    }

    /// The most passes that may be outstanding with these seats: ⌊overbook × available⌋.
    pub(crate) fn pass_budget(&self, seats: Seats) -> u64 {
        seats.available * u64::from(self.config.overbook_permille) / 1_000
    }

    /// No seat can reach a waiting ticket: nothing available, nothing held, no pass out.
    pub(crate) fn exhausted(&self, seats: Seats) -> bool {
        seats.available == 0 && seats.held == 0 && self.passes.is_empty()
    }

    /// Whether pacing lets one more ticket in at `now`.
    fn pace_allows(&self, now: Timestamp) -> bool {
        self.config.admit_per_kilosecond.is_none()
            || self.admission_allowed_at_micros <= now.as_millis().saturating_mul(1_000)
    }

    /// Whether the next waiting ticket could be admitted at `now` (for the actor's timer).
    pub(crate) fn can_admit(&self, seats: Seats, now: Timestamp) -> bool {
        self.drawn
            && self.cursor < self.order.len()
            && (self.passes.len() as u64) < self.pass_budget(seats)
            && self.pace_allows(now)
    }

    /// Admits the next waiting ticket (the caller checked `can_admit`); returns it and when
    /// its pass lapses.
    pub(crate) fn admit_next(&mut self, now: Timestamp) -> (TicketId, Timestamp) {
        let ticket = self.order[self.cursor];
        let expires_at = now.plus_seconds(u64::from(self.config.pass_ttl_seconds));
        let entry = self.ticket_mut(ticket);
        assert_eq!(
            entry.state,
            StoredTicketState::Waiting,
            "the cursor pointed at a ticket that does not wait"
        );
        entry.state = StoredTicketState::Admitted { pass_expires_at: expires_at };
        self.passes.insert((expires_at, ticket));
        self.cursor += 1;
        self.settle_cursor();
        if let Some(per_kilosecond) = self.config.admit_per_kilosecond {
            // Pacing may catch up on at most `ADMISSION_BURST_MS` of idle time, so that a tick
            // admits what the rate allowed since the last one but an idle queue cannot save up.
            // The first admission starts the clock (0: none yet).
            let now_micros = now.as_millis().saturating_mul(1_000);
            let base = match self.admission_allowed_at_micros {
                0 => now_micros,
                allowed_at => allowed_at.max(now_micros.saturating_sub(ADMISSION_BURST_MS * 1_000)),
            };
            let interval_micros = 1_000_000_000 / per_kilosecond;
            self.admission_allowed_at_micros = base.saturating_add(interval_micros.max(1));
            // A paced queue has no opening burst for the rate to leave out: its count starts
            // with its first admission, not a pass lifetime later.
            self.rate_from_seconds.get_or_insert(now.as_millis() / 1_000);
        }
        self.count_admission(now);
        (ticket, expires_at)
    }

    /// The window the admission rate is measured over: a pass lifetime, within bounds.
    pub(crate) fn rate_window_seconds(&self) -> u64 {
        u64::from(self.config.pass_ttl_seconds)
            .clamp(ADMISSION_RATE_WINDOW_SECONDS_MIN, ADMISSION_RATE_WINDOW_SECONDS_MAX)
    }

    fn count_admission(&mut self, now: Timestamp) {
        if self.rate_from_seconds.is_none() {
            return;
        }
        let second = now.as_millis() / 1_000;
        self.forget_old_admissions(second);
        let through =
            self.recent_admissions.back().map_or(self.admissions_forgotten, |(_, through)| *through) + 1;
        match self.recent_admissions.back_mut() {
            Some((last, last_through)) if *last == second => *last_through = through,
            _ => self.recent_admissions.push_back((second, through)),
        }
    }

    fn forget_old_admissions(&mut self, second: u64) {
        let window = self.rate_window_seconds();
        while let Some(&(oldest, through)) = self.recent_admissions.front()
            && oldest + window <= second
        {
            self.recent_admissions.pop_front();
            self.admissions_forgotten = through;
        }
    }

    /// Rebuilds the admission count from stored pass times, as it stood after the last of
    /// them: the count starts where it did live (the first pass's end, or a paced queue's first
    /// admission) and holds the grants from then on, within the window of the latest.
    pub(crate) fn restore_admission_rate(&mut self, passes: &[PassTimes]) {
        let from = if self.config.admit_per_kilosecond.is_some() {
            passes.iter().map(|pass| pass.granted_at).min()
        } else {
            passes.iter().filter_map(|pass| pass.ended_at).min()
        };
        let Some(from) = from else { return };
        self.rate_from_seconds = Some(from.as_millis() / 1_000);
        let mut granted: Vec<Timestamp> =
            passes.iter().map(|pass| pass.granted_at).filter(|granted_at| *granted_at >= from).collect();
        granted.sort_unstable();
        for granted_at in granted {
            self.count_admission(granted_at);
        }
    }

    /// A pass ended (used or lapsed) at `now`: the first one starts the rate's count.
    fn pass_ended(&mut self, now: Timestamp) {
        self.rate_from_seconds.get_or_insert(now.as_millis() / 1_000);
    }

    /// Admissions per second over the rate window, counted from the end of the first pass
    /// (over the time since then, if that is within the window); `None` before a pass ended
    /// or while the window holds no admission.
    pub(crate) fn admission_rate(&self, now: Timestamp) -> Option<f64> {
        let second = now.as_millis() / 1_000;
        let from = self.rate_from_seconds?;
        let window_start = (second + 1).saturating_sub(self.rate_window_seconds());
        let &(_, latest) = self.recent_admissions.back()?;
        // Seconds older than the window are dropped only by the next admission: skip them.
        let stale = self.recent_admissions.partition_point(|(at, _)| *at < window_start);
        let before = match stale {
            0 => self.admissions_forgotten,
            stale => self.recent_admissions[stale - 1].1,
        };
        let admitted = latest - before;
        if admitted == 0 {
            return None;
        }
        let seconds = (second + 1).saturating_sub(from.max(window_start)).max(1);
        Some(admitted as f64 / seconds as f64)
    }

    /// Lets every pass due at `now` lapse; returns the tickets whose pass expired.
    pub(crate) fn expire_due_passes(&mut self, now: Timestamp) -> Vec<TicketId> {
        let mut expired = Vec::new();
        while let Some(&(expires_at, ticket)) = self.passes.first()
            && expires_at <= now
        {
            self.passes.pop_first();
            self.ticket_mut(ticket).state = StoredTicketState::Expired;
            expired.push(ticket);
        }
        if !expired.is_empty() {
            self.pass_ended(now);
        }
        expired
    }

    /// A pass was used for a registration at `now`: its ticket is done.
    pub(crate) fn use_pass(&mut self, pass: QueuePass, now: Timestamp) {
        let ticket = *self.ticket(pass.ticket).expect("a checked pass names a ticket");
        match ticket.state {
            StoredTicketState::Admitted { pass_expires_at } => {
                assert!(self.passes.remove(&(pass_expires_at, pass.ticket)), "a pass was not indexed");
                self.pass_ended(now);
            }
            StoredTicketState::Waiting => {
                // A waitlist pass: the ticket leaves the line where it stands.
                let index = ticket.place as usize - 1;
                if index > self.cursor {
                    self.left_early.insert(index);
                }
            }
            other => panic!("using the pass of ticket {:?} in state {other:?}", pass.ticket),
        }
        self.ticket_mut(pass.ticket).state = StoredTicketState::Used;
        self.settle_cursor();
    }

    /// Waiting tickets before order index `index`.
    fn waiting_before(&self, index: usize) -> u32 {
        if index <= self.cursor {
            return 0;
        }
        let gone = self.left_early.range(self.cursor..index).count();
        (index - self.cursor - gone) as u32
    }

    /// Tickets that wait (in the lobby or in line), for `GET /v1/events/{id}`.
    pub(crate) fn waiting(&self) -> u64 {
        let in_line = (self.order.len() - self.cursor - self.left_early.len()) as u64;
        self.lobby.len() as u64 + in_line
    }

    pub(crate) fn view(
        &self,
        id: TicketId,
        seats: Seats,
        opens_at: Timestamp,
        now: Timestamp,
    ) -> Option<TicketView> {
        let ticket = self.ticket(id)?;
        let ahead = match ticket.place {
            0 => 0,
            place => self.waiting_before(place as usize - 1),
        };
        let facts = TicketFacts { place: ticket.place, state: ticket.state, ahead };
        Some(reading(id, facts, self.exhausted(seats), self.admission_rate(now), opens_at, now))
    }

    /// The cheap invariants, after every apply.
    pub(crate) fn check_invariants(&self) {
        assert!(self.tickets.len() as u64 <= u64::from(self.config.queue_max), "more tickets than queue_max");
        assert_eq!(self.by_registrant.len(), self.tickets.len(), "tickets and registrants disagree");
        assert!(!self.drawn || self.lobby.is_empty(), "a ticket waits in the lobby after the draw");
        assert_eq!(
            self.order.len() + self.lobby.len(),
            self.tickets.len(),
            "a ticket is neither placed nor in the lobby"
        );
        assert!(self.cursor <= self.order.len());
        if let Some(ticket) = self.order.get(self.cursor) {
            let state = self.tickets[ticket.0 as usize - 1].state;
            assert_eq!(state, StoredTicketState::Waiting, "the cursor rests on a ticket that does not wait");
        }
        assert!(
            self.left_early.first().is_none_or(|first| *first > self.cursor),
            "left_early behind the cursor"
        );
        assert!(self.left_early.last().is_none_or(|last| *last < self.order.len()));
        assert!(self.recent_admissions.len() as u64 <= self.rate_window_seconds());
        assert!(
            self.rate_from_seconds.is_some() || self.recent_admissions.is_empty(),
            "admissions counted before a pass ended"
        );
        assert!(
            self.recent_admissions.front().is_none_or(|(_, through)| *through > self.admissions_forgotten),
            "recent admissions' running total went back"
        );
        assert!(
            self.recent_admissions.front().is_none_or(|(first, _)| self.rate_from_seconds <= Some(*first)),
            "an admission counted from before the first pass ended"
        );
    }

    /// Recounts everything and compares with the indexes. O(tickets).
    pub(crate) fn check_invariants_fully(&self) {
        let mut outstanding = 0;
        for (index, ticket) in self.tickets.iter().enumerate() {
            let id = TicketId(index as u64 + 1);
            assert_eq!(self.by_registrant.get(&ticket.registrant), Some(&id), "registrant index is wrong");
            if let StoredTicketState::Admitted { pass_expires_at } = ticket.state {
                outstanding += 1;
                assert!(self.passes.contains(&(pass_expires_at, id)), "pass of {id:?} is not indexed");
            }
            if ticket.place == 0 {
                assert!(!self.drawn && ticket.lobby, "an unplaced ticket outside the lobby");
                assert_eq!(ticket.state, StoredTicketState::Waiting, "a lobby ticket moved before the draw");
            } else {
                assert_eq!(self.order[ticket.place as usize - 1], id, "a ticket's place is wrong");
            }
        }
        assert_eq!(outstanding, self.passes.len(), "outstanding passes differ from a recount");
        assert!(
            self.recent_admissions
                .iter()
                .zip(self.recent_admissions.iter().skip(1))
                .all(|((second, through), (next_second, next_through))| second < next_second
                    && through < next_through),
            "recent admissions are out of order"
        );
        for (index, ticket) in self.order.iter().enumerate() {
            let state = self.tickets[ticket.0 as usize - 1].state;
            let waits = state == StoredTicketState::Waiting;
            if index < self.cursor {
                assert!(!waits, "a ticket before the cursor still waits");
            } else {
                assert_eq!(!waits, self.left_early.contains(&index), "left_early disagrees at {index}");
                // Admission is strictly in order: nothing beyond the cursor was admitted.
                assert!(
                    matches!(state, StoredTicketState::Waiting | StoredTicketState::Used),
                    "a ticket beyond the cursor was admitted"
                );
            }
        }
        if self.drawn {
            // Lobby tickets first, in draw-key order; later joins after them, in number order.
            let lobby_count =
                self.order.iter().take_while(|ticket| self.tickets[ticket.0 as usize - 1].lobby).count();
            assert!(
                self.order[lobby_count..].iter().all(|ticket| !self.tickets[ticket.0 as usize - 1].lobby)
            );
            assert!(self.order[lobby_count..].is_sorted(), "later joins are out of commit order");
        }
    }
}

/// What a ticket's reading depends on besides the queue's figures, wherever it is read from: the
/// queue itself, or what its actor published (`PublishedCounters::ticket_view`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TicketFacts {
    /// As `Ticket::place`: 0 in the lobby.
    pub(crate) place: u32,
    pub(crate) state: StoredTicketState,
    /// Tickets before it that still wait (ignored in the lobby).
    pub(crate) ahead: u32,
}

/// A ticket as it reads at `now`, given its facts, whether any seat can still reach a waiting
/// ticket (`exhausted` says none can) and the admission rate.
pub(crate) fn reading(
    id: TicketId,
    facts: TicketFacts,
    exhausted: bool,
    admission_rate: Option<f64>,
    opens_at: Timestamp,
    now: Timestamp,
) -> TicketView {
    let mut view = TicketView {
        ticket: id,
        status: TicketStatus::Waiting,
        position: None,
        ahead: None,
        eta_seconds: None,
        refresh_after_seconds: REFRESH_AFTER_SECONDS_MAX,
        pass_expires_at: None,
    };
    if facts.place == 0 {
        view.status = TicketStatus::Lobby;
        let until_draw = opens_at.as_millis().saturating_sub(now.as_millis()).div_ceil(1_000);
        view.refresh_after_seconds = clamp_refresh(until_draw);
        return view;
    }
    view.position = Some(facts.place);
    view.ahead = Some(facts.ahead);
    match facts.state {
        StoredTicketState::Waiting if exhausted => view.status = TicketStatus::SoldOut,
        StoredTicketState::Waiting => {
            let ahead = u64::from(facts.ahead);
            view.eta_seconds = admission_rate.map(|rate| (ahead as f64 / rate).ceil() as u64);
            // Near the front a poll every few seconds; far back, a poll per minute at most,
            // so that the crowd's polling stays far below the rate anything changes at.
            let refresh = match view.eta_seconds {
                Some(eta) => eta / 2,
                None => ahead / REFRESH_TICKETS_AHEAD_PER_SECOND,
            };
            view.refresh_after_seconds = clamp_refresh(refresh);
        }
        StoredTicketState::Admitted { pass_expires_at } => {
            view.status = TicketStatus::Admitted;
            view.pass_expires_at = Some(pass_expires_at);
        }
        StoredTicketState::Used => view.status = TicketStatus::Used,
        StoredTicketState::Expired => view.status = TicketStatus::Expired,
    }
    view
}

fn clamp_refresh(seconds: u64) -> u32 {
    seconds.clamp(u64::from(REFRESH_AFTER_SECONDS_MIN), u64::from(REFRESH_AFTER_SECONDS_MAX)) as u32
}

/// Lower-case hex of bytes, as the API publishes seeds and commitments.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

/// Reads 64 hex characters back into 32 bytes.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |byte: u8| (byte as char).to_digit(16);
        bytes[index] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(bytes)
}
