//! The retry schedule (`KUOTA_WEBHOOK_RETRY_SCHEDULE`): the pauses after each failed attempt,
//! each spread by ±10 % so that an endpoint that was down is not hit by every retry at once.

use std::time::Duration;

/// The contract's default, in seconds.
pub const RETRY_SCHEDULE_DEFAULT: &str = "5,300,1800,7200,18000,36000,50400,72000,86400";

/// Pauses a schedule may have.
pub const RETRY_SCHEDULE_STEPS_MAX: usize = 50;

/// The longest pause of a schedule, and the longest `Retry-After` honoured, in seconds.
pub const RETRY_DELAY_SECONDS_MAX: u64 = 7 * 24 * 3_600;

/// How far a pause is spread either way, in percent.
pub const RETRY_JITTER_PERCENT: u64 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Seconds, comma-separated; fractions are allowed (tests compress the schedule with them).
    pub fn parse(text: &str) -> Result<RetrySchedule, String> {
        let delays = text
            .split(',')
            .map(str::trim)
            .map(|step| {
                let seconds: f64 =
                    step.parse().map_err(|_| format!("{step:?} is not a number of seconds"))?;
                if !(0.0..=RETRY_DELAY_SECONDS_MAX as f64).contains(&seconds) {
                    return Err(format!("{step} is not 0 to {RETRY_DELAY_SECONDS_MAX} seconds"));
                }
                Ok(Duration::from_secs_f64(seconds))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if delays.len() > RETRY_SCHEDULE_STEPS_MAX {
            return Err(format!("has more than {RETRY_SCHEDULE_STEPS_MAX} steps"));
        }
        Ok(RetrySchedule(delays))
    }

    /// The pause after failed attempt number `attempts` (1 = the first), spread by `jitter`
    /// (−1.0 to 1.0 of `RETRY_JITTER_PERCENT`); `None` when the schedule is over: the message
    /// is dead.
    pub fn delay_after(&self, attempts: u32, jitter: f64) -> Option<Duration> {
        let base = *self.0.get(attempts.checked_sub(1)? as usize)?;
        let factor = 1.0 + jitter.clamp(-1.0, 1.0) * RETRY_JITTER_PERCENT as f64 / 100.0;
        Some(base.mul_f64(factor))
    }
}

/// A jitter from the operating system's random source, evenly spread over −1.0 to 1.0.
pub fn random_jitter() -> f64 {
    let bits = u64::from_le_bytes(kuota_persist::random::random_bytes::<8>());
    (bits >> 11) as f64 / (1_u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_gives_nine_retries_then_the_message_is_dead() {
        let schedule = RetrySchedule::parse(RETRY_SCHEDULE_DEFAULT).unwrap();
        assert_eq!(schedule.delay_after(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(schedule.delay_after(9, 0.0), Some(Duration::from_secs(86_400)));
        assert_eq!(schedule.delay_after(10, 0.0), None);
        assert_eq!(schedule.delay_after(0, 0.0), None);
    }

    #[test]
    fn jitter_spreads_a_pause_by_ten_percent_at_most() {
        let schedule = RetrySchedule::parse("100").unwrap();
        assert_eq!(schedule.delay_after(1, -1.0), Some(Duration::from_secs(90)));
        assert_eq!(schedule.delay_after(1, 5.0), Some(Duration::from_secs(110)));
        for _ in 0..1_000 {
            let jitter = random_jitter();
            assert!((-1.0..=1.0).contains(&jitter));
        }
    }

    #[test]
    fn bad_schedules_are_refused() {
        for text in ["", "5,,6", "-1", "five", "1e9", &"1,".repeat(60)] {
            assert!(RetrySchedule::parse(text).is_err(), "{text:?} is accepted");
        }
        assert_eq!(
            RetrySchedule::parse("0.2, 0.5").unwrap().delay_after(2, 0.0),
            Some(Duration::from_millis(500))
        );
    }
}
