//! The event types an endpoint subscribes to, and the outbox kinds they come from.

/// See the contract's "Webhooks" section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    RegistrationCreated,
    RegistrationConfirmed,
    RegistrationCancelled,
    RegistrationExpired,
    RegistrationPromoted,
    EventSoldOut,
    /// A queue ticket admitted (queued events); written to the outbox by the queue.
    QueueAdmitted,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::RegistrationCreated,
        EventType::RegistrationConfirmed,
        EventType::RegistrationCancelled,
        EventType::RegistrationExpired,
        EventType::RegistrationPromoted,
        EventType::EventSoldOut,
        EventType::QueueAdmitted,
    ];

    /// As receivers see it, in `type` and in an endpoint's `event_types`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RegistrationCreated => "registration.created",
            EventType::RegistrationConfirmed => "registration.confirmed",
            EventType::RegistrationCancelled => "registration.cancelled",
            EventType::RegistrationExpired => "registration.expired",
            EventType::RegistrationPromoted => "registration.promoted",
            EventType::EventSoldOut => "event.sold_out",
            EventType::QueueAdmitted => "queue.admitted",
        }
    }

    /// The `kind` of the outbox entries of this type.
    pub fn outbox_kind(self) -> &'static str {
        match self {
            EventType::RegistrationCreated => "registration_created",
            EventType::RegistrationConfirmed => "registration_confirmed",
            EventType::RegistrationCancelled => "registration_cancelled",
            EventType::RegistrationExpired => "registration_expired",
            EventType::RegistrationPromoted => "registration_promoted",
            EventType::EventSoldOut => kuota_persist::store::SOLD_OUT_KIND,
            EventType::QueueAdmitted => "queue_admitted",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub fn of_outbox_kind(kind: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|event_type| event_type.outbox_kind() == kind)
    }

    /// Whether the payload's `data` is a registration (else the outbox entry's payload is).
    pub fn is_about_a_registration(self) -> bool {
        !matches!(self, EventType::EventSoldOut | EventType::QueueAdmitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_its_name_and_its_outbox_kind() {
        for event_type in EventType::ALL {
            assert_eq!(EventType::parse(event_type.as_str()), Some(event_type));
            assert_eq!(EventType::of_outbox_kind(event_type.outbox_kind()), Some(event_type));
        }
        assert_eq!(EventType::parse("registration_created"), None);
    }
}
