//! The agenda: timed events, earliest first; events due at the same microsecond run in the
//! order they were scheduled, so that a run never depends on how the agenda happens to break
//! ties. It is a calendar queue (see `Agenda`), which the simulation's clock allows: it never
//! goes back.

use std::collections::BinaryHeap;

use crate::distribution::Micros;
use crate::metrics::AnswerClass;

/// What a registrant asks of the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Register,
    Confirm,
    Cancel,
}

/// Something that happens at a point of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The next registrant presses "register" for the first time.
    Arrival,
    /// A registrant sends a request (a retry, a payment callback, a cancel).
    Send { registrant: u32, action: Action, attempt: u32 },
    /// A request reaches its node.
    NodeIngress { request: u32 },
    /// A node's HTTP worker has finished with a request (`life`: the node's, see `Life`).
    WorkerDone { node: NodeId, request: u32, life: u32 },
    /// A restarted node's HTTP workers start serving (`life`: the node's, see `Life`).
    WorkersStart { node: NodeId, life: u32 },
    /// A forwarded request reaches `node`, which the forwarding node took for the owner.
    ActorReceive { request: u32, node: u32 },
    /// The event actor `incarnation` has finished its current command. An incarnation is one
    /// life of the actor, from one load of the event to the next.
    ActorDone { incarnation: Incarnation },
    /// The hold-expiry timer of the actor `incarnation`.
    HoldTick { incarnation: Incarnation },
    /// The flush interval of writer `writer` may have run out for its oldest submission. A
    /// writer is replaced when a batch fails or ownership moves; a replaced one's timers and
    /// commits are ignored.
    FlushDue { writer: Incarnation },
    /// A commit attempt of a batch of `writer` has ended (committed or timed out).
    CommitDone { writer: Incarnation, batch: u32 },
    /// A batch of `writer` tries its transaction again after a pause.
    CommitRetry { writer: Incarnation, batch: u32 },
    /// The earliest request deadline of `node` has come (see `Deadlines`).
    Deadlines { node: NodeId },
    /// A refusal that took time to make (a Redis timeout, a forward timeout) is answered.
    LateRefusal { request: u32, serial: Serial, class: AnswerClass },
    /// A claim of `node` that waited for Redis gets its answer (Redis came back within the
    /// command's timeout): the request is routed again.
    ClaimAgain { request: u32, serial: Serial, node: NodeId, forwarded: bool },
    /// The shared rate-limit check of a registration on `node` ended (see `serve_here`).
    LimitChecked { request: u32, serial: Serial, node: NodeId },
    /// The renewal task of the lease kept under this number.
    LeaseRenew { lease: LeaseId },
    /// The holder of lease `lease` checks whether it is still valid (before its safety margin).
    LeaseCheck { lease: LeaseId },
    /// The load of the event for actor `incarnation` (a claim or a rollback) tries the store.
    LoadAttempt { incarnation: Incarnation },
    /// The load for actor `incarnation` waited its store timeout for the writer to find the
    /// store answering.
    LoadWaitOver { incarnation: Incarnation },
    /// The load for actor `incarnation` has read the store.
    Loaded { incarnation: Incarnation },
    /// The writer probes the store (breaker open or store failing).
    StoreProbe,
    /// The suite's next `/readyz` poll after fault number `fault` leaves (see `suite`).
    SuitePoll { fault: u32 },
    /// That poll reaches its node.
    SuiteReady { fault: u32 },
    /// The suite sends its next registration after fault number `fault`.
    SuiteSend { fault: u32 },
    /// Fault number `fault` of the scenario starts.
    FaultStart { fault: u32 },
    /// Fault number `fault` ends (a frozen node goes on, a crashed one restarts).
    FaultEnd { fault: u32 },
    /// An answer reaches its registrant.
    ClientAnswer { request: u32 },
    /// The earliest patience of an impatient registrant has run out (see `Simulation::patience`).
    PatienceOver,
}

/// Names one life of the actor or of the writer in their timers (a run has a few).
pub type Incarnation = u32;
/// A request's number, unique in a run (`Requests::insert` refuses to wrap it).
pub type Serial = u32;
/// Names one holding of the lease in its timers.
pub type LeaseId = u32;
/// A node's number in an event (`scenario::NODES_MAX` fits).
pub type NodeId = u16;

/// `node` as events carry it.
pub fn node_id(node: u32) -> NodeId {
    NodeId::try_from(node).expect("scenario validation keeps node numbers below NODES_MAX")
}

/// An event waiting in the calendar's ring: 16 bytes, four to a cache line. Its time is kept as
/// the microseconds into its bucket (the bucket says the rest), and it needs no scheduling
/// number, since a bucket holds its events in the order they were scheduled (see `Agenda`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scheduled {
    offset: u32,
    kind: EventKind,
}

// Pushing an event into a bucket seconds ahead writes to memory that left the cache long ago:
// the smaller the event, the fewer lines that costs. With a `u64` time, a `u64` scheduling
// number and `u64` ids an event was 40 bytes.
const _: () = assert!(std::mem::size_of::<Scheduled>() == 16);

/// An event of the bucket being served, in the list of its microsecond: 16 bytes too.
#[derive(Clone, Copy, Debug)]
struct Link {
    kind: EventKind,
    /// The next event due at the same microsecond (an index into `Agenda::links`), or `NONE`.
    next: u32,
}

const _: () = assert!(std::mem::size_of::<Link>() == 16);

/// No next event in a microsecond's list.
const NONE: u32 = u32::MAX;

/// An event due beyond the ring, in the heap with its scheduling number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Far {
    at: Micros,
    order: u64,
    kind: EventKind,
}

/// The width of one calendar bucket, as a power of two of microseconds (2,048 µs): a few events
/// each while a crowd is in.
const BUCKET_WIDTH_SHIFT: u32 = 11;
/// Microseconds in a bucket: the bucket being served keeps a list for each.
const BUCKET_MICROS: usize = 1 << BUCKET_WIDTH_SHIFT;
/// Words of the bits that say which microseconds of the bucket being served hold events.
const MICRO_WORDS: usize = BUCKET_MICROS / 64;
/// Buckets in the calendar's ring (about 4.2 s of virtual time): longer than the delays the
/// model schedules most (round trips, deadlines, retries, patience); events further ahead wait
/// in a heap until the ring reaches them.
const RING_BUCKETS: usize = 2_048;
/// Words of the ring's occupancy bits.
const RING_WORDS: usize = RING_BUCKETS / 64;
/// Events' room a ring bucket keeps from one run to the next (a thread's runs reuse the agenda).
/// Each of the `RING_BUCKETS` buckets would otherwise keep the room of the fullest bucket that
/// ever went through it, and over many swarm seeds nearly every one meets a crowd's burst: the
/// resident memory grew with the seeds (100,000 seeds: 875 MB).
const RING_BUCKET_KEPT_MAX: usize = 64;

fn bucket_of(at: Micros) -> u64 {
    at >> BUCKET_WIDTH_SHIFT
}

/// The microseconds of `at` into its bucket.
fn offset_of(at: Micros) -> u32 {
    (at & (BUCKET_MICROS as u64 - 1)) as u32
}

impl Far {
    fn key(&self) -> (Micros, u64) {
        (self.at, self.order)
    }
}

/// Reversed on the key (a `BinaryHeap` pops its greatest).
impl Ord for Far {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Far {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A calendar queue: virtual time never goes back, so the agenda only ever takes events out of
/// the earliest bucket of time that holds any. Events go into a ring of buckets of
/// `1 << BUCKET_WIDTH_SHIFT` µs in the order they are scheduled. When a bucket comes due, its
/// events are dealt, in that order, to one list per microsecond of the bucket (a timing wheel's
/// finest level); events scheduled into it after that join the end of their microsecond's list.
/// Each list is thus in scheduling order, and the agenda takes events out microsecond by
/// microsecond, each list from its front: events due together come out in the order they were
/// scheduled, with no sort and no scheduling numbers. A binary heap, which this replaced,
/// compared and moved every event through a dozen levels on each push and pop (a fifth of a
/// run's instructions); a bucket sorted as it came due, then, cost a tenth of them, and an event
/// scheduled into it (an actor's 10 µs of work) moved the events due after it.
///
/// A bucket's events are always in scheduling order when it comes due, so the ring keeps no
/// scheduling numbers: an event goes into the ring only when its bucket is within the ring of
/// the current one, and events beyond it wait in the heap; a heap event moves into the ring at
/// the first advance that brings its bucket within reach, when every event scheduled for that
/// bucket so far is in the heap too (the previous advance left it out of reach), so the bucket
/// receives them in the heap's order (time, then scheduling number), and every later event after
/// them.
#[derive(Debug)]
pub struct Agenda {
    /// The events of the bucket being served, not yet taken out: per microsecond of it, the
    /// first and the last of its list in `links` (meaningful while its bit in `due` is set).
    first: Box<[u32; BUCKET_MICROS]>,
    last: Box<[u32; BUCKET_MICROS]>,
    /// Bit `offset` set while that microsecond's list holds an event: the lowest is the
    /// earliest event's, since the model never schedules into the past.
    due: [u64; MICRO_WORDS],
    /// Bit `word` set while `due[word]` has a bit set.
    due_words: u32,
    /// The lists' events, in the order they joined the bucket; emptied when the next bucket
    /// comes due.
    links: Vec<Link>,
    /// The absolute number of that bucket (`at >> BUCKET_WIDTH_SHIFT`).
    current_bucket: u64,
    /// Events of the `RING_BUCKETS - 1` buckets after the current one, in scheduling order, at
    /// `bucket % RING_BUCKETS`.
    ring: Vec<Vec<Scheduled>>,
    /// Emptied bucket vectors, with their room, for the next bucket that gets an event, the
    /// last emptied first. A bucket's own vector would be the one it used a whole ring's time
    /// (seconds of a crowd) ago, out of the cache since; the vector just dealt is in it. Every
    /// vector here came out of a bucket, and a bucket takes one only while it has none, so
    /// there are never more than `RING_BUCKETS` of them.
    spare: Vec<Vec<Scheduled>>,
    /// Bit `slot` set while `ring[slot]` holds an event.
    occupied: [u64; RING_WORDS],
    in_ring: usize,
    /// Events due beyond the ring.
    far: BinaryHeap<Far>,
    next_order: u64,
}

/// A clone keeps the room of each bucket and spare, not only the events: a forked run
/// (`simulate_forked`) goes on pushing into them, and growing some 2,000 vectors again from
/// nothing took 2.6 % of a forked seed's time.
impl Clone for Agenda {
    fn clone(&self) -> Self {
        use super::with_room;
        Agenda {
            first: self.first.clone(),
            last: self.last.clone(),
            due: self.due,
            due_words: self.due_words,
            links: with_room(&self.links),
            current_bucket: self.current_bucket,
            ring: self.ring.iter().map(with_room).collect(),
            spare: self.spare.iter().map(with_room).collect(),
            occupied: self.occupied,
            in_ring: self.in_ring,
            far: self.far.clone(),
            next_order: self.next_order,
        }
    }

    /// Into the vectors `self` has, with their room: each of the source's buckets that holds
    /// events is copied into `self`'s bucket, given one of `self`'s spares when it has no vector
    /// (as `put_in_ring` does). `self` keeps its own spares, all empty, whatever the source's
    /// are, so that it allocates a vector only when it has none left, and never holds more than
    /// `RING_BUCKETS` of them (see `spare`).
    fn clone_from(&mut self, source: &Self) {
        let Agenda {
            first,
            last,
            due,
            due_words,
            links,
            current_bucket,
            ring,
            spare: _,
            occupied,
            in_ring,
            far,
            next_order,
        } = source;
        self.first.clone_from(first);
        self.last.clone_from(last);
        self.due = *due;
        self.due_words = *due_words;
        self.links.clone_from(links);
        self.current_bucket = *current_bucket;
        for (bucket, events) in self.ring.iter_mut().zip(ring) {
            if bucket.capacity() == 0
                && !events.is_empty()
                && let Some(spare) = self.spare.pop()
            {
                *bucket = spare;
            }
            bucket.clone_from(events);
        }
        self.occupied = *occupied;
        self.in_ring = *in_ring;
        self.far.clone_from(far);
        self.next_order = *next_order;
    }
}

impl Default for Agenda {
    fn default() -> Self {
        Agenda {
            first: Box::new([NONE; BUCKET_MICROS]),
            last: Box::new([NONE; BUCKET_MICROS]),
            due: [0; MICRO_WORDS],
            due_words: 0,
            links: Vec::new(),
            current_bucket: 0,
            ring: (0..RING_BUCKETS).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            occupied: [0; RING_WORDS],
            in_ring: 0,
            far: BinaryHeap::new(),
            next_order: 0,
        }
    }
}

impl Agenda {
    /// Empties the agenda for another run, keeping what its buckets allocated (a swarm runs
    /// thousands of seeds on one thread).
    pub fn clear(&mut self) {
        self.due = [0; MICRO_WORDS];
        self.due_words = 0;
        self.links.clear();
        self.current_bucket = 0;
        for bucket in self.ring.iter_mut().chain(&mut self.spare) {
            bucket.clear();
            bucket.shrink_to(RING_BUCKET_KEPT_MAX);
        }
        self.occupied = [0; RING_WORDS];
        self.in_ring = 0;
        self.far.clear();
        self.next_order = 0;
    }

    /// Schedules `kind` at `at`, which is never in a bucket already served: the model never
    /// schedules into the past. Inlined for the usual case, a bucket of the ring; the others
    /// are out of line (a call that saved and restored registers for all of them cost a tenth
    /// of the agenda's instructions).
    #[inline]
    pub fn schedule(&mut self, at: Micros, kind: EventKind) {
        let bucket = bucket_of(at);
        let ahead = bucket.wrapping_sub(self.current_bucket);
        if ahead.wrapping_sub(1) < RING_BUCKETS as u64 - 1 {
            // 1 to RING_BUCKETS - 1 buckets ahead.
            self.put_in_ring(bucket, Scheduled { offset: offset_of(at), kind });
        } else {
            self.schedule_elsewhere(at, kind);
        }
    }

    /// `schedule` into the current bucket or beyond the ring.
    #[inline(never)]
    fn schedule_elsewhere(&mut self, at: Micros, kind: EventKind) {
        let bucket = bucket_of(at);
        assert!(
            bucket >= self.current_bucket,
            "an event scheduled at {at} µs, before the agenda's bucket of {} µs",
            self.current_bucket << BUCKET_WIDTH_SHIFT
        );
        if bucket == self.current_bucket {
            // After every event due with it, since it was scheduled last.
            self.join_list(offset_of(at), kind);
        } else if bucket - self.current_bucket < RING_BUCKETS as u64 {
            self.put_in_ring(bucket, Scheduled { offset: offset_of(at), kind });
        } else {
            self.far.push(Far { at, order: self.next_order, kind });
            self.next_order += 1;
        }
    }

    #[inline]
    fn put_in_ring(&mut self, bucket: u64, scheduled: Scheduled) {
        let slot = (bucket % RING_BUCKETS as u64) as usize;
        let events = &mut self.ring[slot];
        if events.capacity() == 0
            && let Some(spare) = self.spare.pop()
        {
            *events = spare;
        }
        events.push(scheduled);
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.in_ring += 1;
    }

    /// Puts `kind` at the end of the list of microsecond `offset` of the current bucket.
    #[inline]
    fn join_list(&mut self, offset: u32, kind: EventKind) {
        let offset = offset as usize % BUCKET_MICROS;
        let index = self.links.len() as u32;
        self.links.push(Link { kind, next: NONE });
        let (word, bit) = (offset / 64, 1u64 << (offset % 64));
        if self.due[word] & bit == 0 {
            self.due[word] |= bit;
            self.due_words |= 1 << word;
            self.first[offset] = index;
        } else {
            let last = self.last[offset] as usize;
            self.links[last].next = index;
        }
        self.last[offset] = index;
    }

    /// The earliest event; inlined for the usual case, one more of the current bucket.
    #[inline]
    pub fn pop(&mut self) -> Option<(Micros, EventKind)> {
        if self.due_words == 0 && !self.advance() {
            return None;
        }
        let word_index = self.due_words.trailing_zeros() as usize % MICRO_WORDS;
        let word = self.due[word_index];
        let offset = (word_index * 64 + word.trailing_zeros() as usize) % BUCKET_MICROS;
        let link = self.links[self.first[offset] as usize];
        if link.next == NONE {
            // The list is empty now: its bit, the lowest set, goes.
            let rest = word & (word - 1);
            self.due[word_index] = rest;
            if rest == 0 {
                self.due_words &= self.due_words - 1;
            }
        } else {
            self.first[offset] = link.next;
        }
        Some(((self.current_bucket << BUCKET_WIDTH_SHIFT) + offset as Micros, link.kind))
    }

    /// The earliest event if it is due before `until`. The agenda moves on to no bucket that
    /// starts at or after `until`, so that events can still be scheduled from `until` on (the
    /// faults that join a forked run, see `simulate_forked`).
    #[inline]
    pub fn pop_before(&mut self, until: Micros) -> Option<(Micros, EventKind)> {
        if self.due_words == 0 {
            let next = self.next_bucket()?;
            if next << BUCKET_WIDTH_SHIFT >= until {
                return None;
            }
        }
        if self.due_words == 0 && !self.advance() {
            return None;
        }
        let word_index = self.due_words.trailing_zeros() as usize % MICRO_WORDS;
        let offset = word_index * 64 + self.due[word_index].trailing_zeros() as usize;
        if (self.current_bucket << BUCKET_WIDTH_SHIFT) + offset as Micros >= until {
            return None;
        }
        self.pop()
    }

    /// The next bucket after the current one that holds events, if any.
    fn next_bucket(&self) -> Option<u64> {
        if self.in_ring > 0 {
            Some(self.next_occupied_bucket())
        } else {
            self.far.peek().map(|earliest| bucket_of(earliest.at))
        }
    }

    /// Makes the next bucket holding events the current one (the current one has none left);
    /// false when none does.
    #[inline(never)]
    fn advance(&mut self) -> bool {
        let Some(next) = self.next_bucket() else { return false };
        self.current_bucket = next;
        // Far events the ring now reaches move into it (the ring's events are all due before
        // any of them, so none of them is due before `next`).
        while let Some(earliest) = self.far.peek() {
            let bucket = bucket_of(earliest.at);
            if bucket - next >= RING_BUCKETS as u64 {
                break;
            }
            let Some(Far { at, kind, .. }) = self.far.pop() else { break };
            self.put_in_ring(bucket, Scheduled { offset: offset_of(at), kind });
        }
        let slot = (next % RING_BUCKETS as u64) as usize;
        self.occupied[slot / 64] &= !(1 << (slot % 64));
        // The bucket's events, in scheduling order, to their microseconds' lists; its vector
        // goes to the spares empty, with its room, and the bucket keeps none.
        let mut events = std::mem::take(&mut self.ring[slot]);
        self.in_ring -= events.len();
        self.links.clear();
        for scheduled in &events {
            self.join_list(scheduled.offset, scheduled.kind);
        }
        events.clear();
        self.spare.push(events);
        true
    }

    /// The earliest bucket after the current one that holds events (there is one).
    fn next_occupied_bucket(&self) -> u64 {
        let start = ((self.current_bucket + 1) % RING_BUCKETS as u64) as usize;
        // Scans the occupancy words from the start's, wrapping around once.
        for step in 0..=RING_WORDS {
            let word_index = (start / 64 + step) % RING_WORDS;
            let mut word = self.occupied[word_index];
            if step == 0 {
                word &= u64::MAX << (start % 64);
            }
            if word != 0 {
                let slot = word_index * 64 + word.trailing_zeros() as usize;
                let distance = (slot + RING_BUCKETS - start) % RING_BUCKETS;
                return self.current_bucket + 1 + distance as u64;
            }
        }
        unreachable!("the ring holds events but no bucket is marked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleared_agenda_keeps_a_bounded_room_in_each_bucket() {
        // A crowd's burst through every bucket of the ring, as many swarm seeds make in turn.
        let mut agenda = Agenda::default();
        let per_bucket = RING_BUCKET_KEPT_MAX as u64 * 8;
        for bucket in 1..RING_BUCKETS as u64 {
            for event in 0..per_bucket {
                agenda.schedule((bucket << BUCKET_WIDTH_SHIFT) + event % 100, EventKind::Arrival);
            }
        }
        // Half the buckets come due, their vectors going to the spares.
        let mut taken = 0;
        while agenda.current_bucket < RING_BUCKETS as u64 / 2 {
            agenda.pop().expect("scheduled above");
            taken += 1;
        }
        assert!(taken > 0 && !agenda.spare.is_empty());
        assert!(
            agenda.ring.iter().chain(&agenda.spare).any(|bucket| bucket.capacity() > RING_BUCKET_KEPT_MAX)
        );
        agenda.clear();
        assert!(
            agenda
                .ring
                .iter()
                .chain(&agenda.spare)
                .all(|bucket| bucket.is_empty() && bucket.capacity() <= RING_BUCKET_KEPT_MAX)
        );
        assert!(agenda.spare.len() <= RING_BUCKETS);
        assert_eq!(agenda.pop(), None);
    }

    #[test]
    fn events_come_out_by_time_then_by_the_order_they_were_scheduled() {
        let mut agenda = Agenda::default();
        agenda.schedule(5, EventKind::FlushDue { writer: 1 });
        agenda.schedule(3, EventKind::ActorDone { incarnation: 1 });
        agenda.schedule(5, EventKind::StoreProbe);
        agenda.schedule(3, EventKind::Arrival);
        let order: Vec<_> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(
            order,
            vec![
                (3, EventKind::ActorDone { incarnation: 1 }),
                (3, EventKind::Arrival),
                (5, EventKind::FlushDue { writer: 1 }),
                (5, EventKind::StoreProbe)
            ]
        );
    }

    #[test]
    fn events_come_out_as_from_a_sort_by_time_and_scheduling_order_while_more_are_scheduled() {
        // Times spread over many bits and often equal, scheduled from the time just taken out,
        // as the simulation does; the reference is a plain sort of what was scheduled.
        let mut rng = crate::random::Rng::new(5, crate::random::Stream::System);
        let mut agenda = Agenda::default();
        let mut scheduled: Vec<(Micros, u64, u32)> = Vec::new();
        let mut taken: Vec<(Micros, u32)> = Vec::new();
        let mut now = 0;
        let mut next_request = 0u32;
        for _ in 0..50_000 {
            for _ in 0..rng.below(3) {
                // Now, within the bucket, a few buckets on, across the ring, beyond it.
                let delay = match rng.below(5) {
                    0 => 0,
                    1 => rng.below(8),
                    2 => rng.below(5_000),
                    3 => rng.below(3_000_000),
                    _ => rng.below(30_000_000),
                };
                scheduled.push((now + delay, scheduled.len() as u64, next_request));
                agenda.schedule(now + delay, EventKind::NodeIngress { request: next_request });
                next_request += 1;
            }
            let Some((at, EventKind::NodeIngress { request })) = agenda.pop() else { continue };
            assert!(at >= now);
            now = at;
            taken.push((at, request));
        }
        while let Some((at, EventKind::NodeIngress { request })) = agenda.pop() {
            taken.push((at, request));
        }
        scheduled.sort_unstable();
        let expected: Vec<(Micros, u32)> = scheduled.iter().map(|(at, _, request)| (*at, *request)).collect();
        assert_eq!(taken, expected);
    }

    #[test]
    fn a_crowded_bucket_comes_out_by_time_then_scheduling_order() {
        // Hundreds of events in one bucket, many due at the same microsecond: the lists of the
        // bucket's microseconds must keep them in scheduling order.
        let mut rng = crate::random::Rng::new(9, crate::random::Stream::System);
        for events in [1, 23, 24, 40, 700] {
            let mut agenda = Agenda::default();
            let bucket_start: Micros = 7 << BUCKET_WIDTH_SHIFT;
            let mut scheduled: Vec<(Micros, u32)> = Vec::new();
            for request in 0..events as u32 {
                let at =
                    bucket_start + rng.below(if request % 2 == 0 { 16 } else { 1 << BUCKET_WIDTH_SHIFT });
                scheduled.push((at, request));
                agenda.schedule(at, EventKind::NodeIngress { request });
            }
            // A stable sort by time alone: requests were numbered in scheduling order.
            scheduled.sort_by_key(|(at, _)| *at);
            let taken: Vec<(Micros, u32)> = std::iter::from_fn(|| agenda.pop())
                .map(|(at, kind)| match kind {
                    EventKind::NodeIngress { request } => (at, request),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(taken, scheduled, "{events} events");
        }
    }

    #[test]
    fn an_agenda_cloned_into_another_gives_the_sources_events_in_its_order() {
        // `clone_from` copies into the vectors the target has (`simulate_forked` copies its
        // trunk into one member after another): whatever the target held and however far it
        // had gone, it must give the source's events, and take new ones, as the source does.
        let mut rng = crate::random::Rng::new(9, crate::random::Stream::System);
        let mut source = Agenda::default();
        let mut target = Agenda::default();
        for agenda in [&mut source, &mut target] {
            for request in 0..5_000 {
                agenda.schedule(rng.below(20_000_000), EventKind::NodeIngress { request });
            }
        }
        // The target has gone further than the source: its buckets and spares differ.
        for _ in 0..3_000 {
            target.pop();
        }
        for _ in 0..1_000 {
            source.pop();
        }
        target.clone_from(&source);
        let mut now = 0;
        for step in 0..4_000u32 {
            let (Some(expected), Some(got)) = (source.pop(), target.pop()) else {
                panic!("the agendas ran out at step {step}");
            };
            assert_eq!(got, expected, "step {step}");
            now = expected.0;
            let later = now + rng.below(9_000_000);
            source.schedule(later, EventKind::ClientAnswer { request: step });
            target.schedule(later, EventKind::ClientAnswer { request: step });
        }
        assert!(now > 0);
        assert_eq!(
            std::iter::from_fn(|| source.pop()).collect::<Vec<_>>(),
            std::iter::from_fn(|| target.pop()).collect::<Vec<_>>()
        );
    }

    #[test]
    #[should_panic(expected = "before the agenda's")]
    fn an_event_scheduled_in_the_past_is_refused() {
        let mut agenda = Agenda::default();
        agenda.schedule(5_000, EventKind::Arrival);
        agenda.pop();
        agenda.schedule(10, EventKind::Arrival);
    }
}
