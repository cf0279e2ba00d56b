//! The end of a run: every registrant's final state, and the checks that need the whole run.

use kuota_engine::RegistrationId;

use super::actor::ActorState;
use super::client::{ClientState, Registrant};
use super::{RunResult, Simulation};
use crate::invariants::{
    CHECK_ACKNOWLEDGED, CHECK_ANSWERED, CHECK_CLIENT_CAPACITY, CHECK_RELOAD, StoreView, StoredStatus,
};
use crate::metrics::{FinalState, Metrics};

/// Where a registrant's story ended: the store's status of the registration the engine gave
/// them when there is one (whether or not they heard of it), else what they last heard.
fn final_state(index: u32, registrant: &Registrant, store: &StoreView) -> FinalState {
    let registration = RegistrationId(registrant.engine_registration);
    // After a rollback the number may have gone to someone else; it is theirs then.
    if registrant.engine_registration != 0
        && store.registrant_of(registration) == Some(index)
        && let Some(status) = store.status_of(registration)
    {
        return match status {
            StoredStatus::Confirmed => FinalState::Confirmed,
            StoredStatus::Held => FinalState::Held,
            StoredStatus::Waitlisted => FinalState::Waitlisted,
            StoredStatus::Expired => FinalState::Expired,
            StoredStatus::Cancelled => FinalState::Cancelled,
        };
    }
    match registrant.state {
        ClientState::SoldOut => FinalState::SoldOut,
        ClientState::AlreadyRegistered => FinalState::AlreadyRegistered,
        ClientState::GaveUp => FinalState::GaveUp,
        _ => FinalState::Other,
    }
}

impl Simulation<'_> {
    /// `conclude`, then what the run allocated is kept for the thread's next run.
    pub(super) fn finish(mut self) -> RunResult {
        let result = self.conclude();
        self.keep_spares();
        result
    }

    /// The run's result, with the checks that need the whole run. What the run allocated stays
    /// in `self` (for `keep_spares`, or to be copied into by `clone_from`); its figures and
    /// violations move into the result.
    pub(super) fn conclude(&mut self) -> RunResult {
        let mut final_states = [0u64; FinalState::ALL.len()];
        for (index, registrant) in self.registrants.iter().enumerate() {
            if registrant.suite_probe {
                // Probes of the live fault suite (`suite`): not the crowd's stories.
                continue;
            }
            let state = final_state(index as u32, registrant, &self.store);
            final_states[FinalState::ALL.iter().position(|known| *known == state).unwrap_or(0)] += 1;
        }
        self.suite_record();
        self.check_client_view();
        self.check_every_request_answered();
        self.check_acknowledged_stored();
        // Whether an engine holds the event at the end. When nobody serves it and the store does
        // not load, the actor holds a placeholder (`placeholder_quota`: a quota left over from
        // an earlier run of the thread), which must not be read: comparing with it made a seed's
        // report depend on the seeds its thread ran before.
        let mut engine_at_end = true;
        if self.actor.state != ActorState::Serving {
            // Nobody serves the event at the end: check what the next owner would load.
            match self.store.rebuild(self.scenario.event_config(), super::take_spare_quota()) {
                Ok(quota) => super::keep_spare_quota(std::mem::replace(&mut self.actor.quota, quota)),
                Err(reason) => {
                    self.store.violations.add(CHECK_RELOAD, reason);
                    engine_at_end = false;
                }
            }
        }
        if engine_at_end {
            self.store.check_against_engine(&self.actor.quota);
        }
        let empty = Metrics::counts_only(self.metrics.window);
        let metrics = std::mem::replace(&mut self.metrics, empty);
        RunResult {
            seed: self.seed,
            availability: if engine_at_end { self.actor.quota.availability() } else { Vec::new() },
            final_states,
            promoted_registrants: metrics.effects.promoted,
            violations: std::mem::take(&mut self.store.violations),
            end_at: self.now,
            metrics,
            fenced_batches: self.fenced_batches,
            reloads: self.reloads,
        }
    }

    /// Keeps what the run allocated for the thread's next run (see `Spare`).
    pub(super) fn keep_spares(self) {
        let Simulation { mut agenda, store, actor, registrants, requests, .. } = self;
        agenda.clear();
        let store_buffers = store.into_buffers();
        super::SPARE.with_borrow_mut(|spare| {
            spare.agenda = Some(agenda);
            spare.registrants = registrants;
            spare.requests = requests.into_slots();
            spare.store = store_buffers;
        });
        super::keep_spare_quota(actor.quota);
    }

    /// Every registrant who heard a 201 or 202 finds that registration stored, as theirs.
    fn check_acknowledged_stored(&mut self) {
        for (index, registrant) in self.registrants.iter().enumerate() {
            let told = RegistrationId(registrant.told_registration);
            if registrant.told_registration != 0 && self.store.registrant_of(told) != Some(index as u32) {
                let detail = format!(
                    "registrant {index} was told registration {told}, which the store has {}",
                    match self.store.registrant_of(told) {
                        Some(other) => format!("for registrant {other}"),
                        None => "not at all".to_string(),
                    }
                );
                self.store.violations.add(CHECK_ACKNOWLEDGED, detail);
            }
        }
    }

    /// Registrants who hold a "confirmed" answer, per category, never outnumber its seats.
    fn check_client_view(&mut self) {
        let mut confirmed = vec![0u64; self.codes.len()];
        for registrant in &self.registrants {
            if registrant.state == ClientState::Confirmed {
                confirmed[usize::from(registrant.category)] += 1;
            }
        }
        for (index, category) in self.scenario.event.categories.iter().enumerate() {
            if confirmed[index] > u64::from(category.capacity) {
                let detail = format!(
                    "category {}: {} registrants hold a 'confirmed' answer for {} seats",
                    category.code, confirmed[index], category.capacity
                );
                self.store.violations.add(CHECK_CLIENT_CAPACITY, detail);
            }
        }
    }

    fn check_every_request_answered(&mut self) {
        let answered = self.metrics.answers_total();
        let sent = self.metrics.requests_sent;
        if answered != sent || self.requests.in_flight != 0 {
            let detail = format!(
                "{sent} requests sent, {answered} answered, {} still in flight",
                self.requests.in_flight
            );
            self.store.violations.add(CHECK_ANSWERED, detail);
        }
    }
}
