//! An event's configuration: its categories, its registration window and its hold policy.

use crate::clock::Timestamp;
use crate::ids::{CategoryCode, EventId};
use crate::limits::{CATEGORIES_MAX, CATEGORY_CAPACITY_MAX, QuotaLimits};
use crate::queue::{QueueConfig, QueueConfigError};

/// One category of an event, such as the 10K run, with its number of seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryConfig {
    pub code: CategoryCode,
    pub name: String,
    pub capacity: u32,
}

/// Everything the core needs to know about an event that is not a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventConfig {
    pub id: EventId,
    pub name: String,
    pub opens_at: Option<Timestamp>,
    pub closes_at: Option<Timestamp>,
    /// 0: a registration is confirmed at once. More: it is held this long, until confirmed.
    pub hold_ttl_seconds: u32,
    pub categories: Vec<CategoryConfig>,
    pub limits: QuotaLimits,
    /// A queue in front of the opening; registrations then need a pass from it.
    pub queue: Option<QueueConfig>,
}

/// Why an event configuration cannot be used; each names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventConfigError {
    #[error("an event has at least one category")]
    NoCategory,
    #[error("an event has at most {CATEGORIES_MAX} categories")]
    TooManyCategories,
    #[error("category code {0} appears twice")]
    DuplicateCategory(CategoryCode),
    #[error("category {0} has a capacity above {CATEGORY_CAPACITY_MAX}")]
    CapacityTooLarge(CategoryCode),
    #[error("closes_at must be after opens_at")]
    ClosesBeforeOpening,
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
}

/// Which of the event's categories, by position; at most `CATEGORIES_MAX` of them.
pub type CategoryIndex = u16;

impl EventConfig {
    pub fn validate(&self) -> Result<(), EventConfigError> {
        if self.categories.is_empty() {
            return Err(EventConfigError::NoCategory);
        }
        if self.categories.len() > CATEGORIES_MAX {
            return Err(EventConfigError::TooManyCategories);
        }
        for (position, category) in self.categories.iter().enumerate() {
            if self.categories[..position].iter().any(|earlier| earlier.code == category.code) {
                return Err(EventConfigError::DuplicateCategory(category.code.clone()));
            }
            if category.capacity > CATEGORY_CAPACITY_MAX {
                return Err(EventConfigError::CapacityTooLarge(category.code.clone()));
            }
        }
        if let (Some(opens_at), Some(closes_at)) = (self.opens_at, self.closes_at)
            && closes_at <= opens_at
        {
            return Err(EventConfigError::ClosesBeforeOpening);
        }
        if let Some(queue) = &self.queue {
            queue.validate(self.opens_at)?;
        }
        Ok(())
    }

    pub fn category_index(&self, code: &CategoryCode) -> Option<CategoryIndex> {
        self.categories
            .iter()
            .position(|category| &category.code == code)
            // validate() bounds the count by CATEGORIES_MAX (64), so the position fits in a u16.
            .map(|position| position as CategoryIndex)
    }
}
