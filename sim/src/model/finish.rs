//! The end of a run: every registrant's final state, and the checks that need the whole run.

use kuota_engine::RegistrationId;

use super::client::{ClientState, Registrant};
use super::{RunResult, Simulation};
use crate::invariants::{CHECK_ANSWERED, CHECK_CLIENT_CAPACITY, StoreView, StoredStatus};
use crate::metrics::FinalState;

/// Where a registrant's story ended: the store's status of the registration the engine gave
/// them when there is one (whether or not they heard of it), else what they last heard.
fn final_state(registrant: &Registrant, store: &StoreView) -> FinalState {
    if registrant.engine_registration != 0
        && let Some(status) = store.status_of(RegistrationId(registrant.engine_registration))
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
    pub(super) fn finish(mut self) -> RunResult {
        let mut final_states = [0u64; FinalState::ALL.len()];
        for registrant in &self.registrants {
            let state = final_state(registrant, &self.store);
            final_states[FinalState::ALL.iter().position(|known| *known == state).unwrap_or(0)] += 1;
        }
        self.check_client_view();
        self.check_every_request_answered();
        self.store.check_against_engine(&self.actor.quota);
        let Simulation { seed, metrics, store, actor, now, .. } = self;
        RunResult {
            seed,
            availability: actor.quota.availability(),
            final_states,
            promoted_registrants: metrics.effects.promoted,
            violations: store.violations,
            end_at: now,
            metrics,
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
