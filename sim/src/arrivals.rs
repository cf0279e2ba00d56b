//! When registrants first press "register": a spike at opening (its share of registrants over
//! its window, shaped as the scenario says) and a tail at a constant rate after it.
//!
//! Given the number of arrivals, the arrival times of a Poisson process over a window are
//! independent and uniform on it, so drawing uniform times and sorting them is exact; the
//! ramps draw through the inverse of their cumulative distribution.

use crate::distribution::{MICROS_PER_SECOND, Micros};
use crate::random::Rng;
use crate::scenario::{Arrivals, SpikeShape};

/// First-arrival times of every registrant, in microseconds after opening, sorted.
pub fn arrival_times(arrivals: &Arrivals, rng: &mut Rng) -> Vec<Micros> {
    let registrants = u64::from(arrivals.registrants);
    let in_spike = ((registrants as f64) * arrivals.spike_share).round() as u64;
    let in_spike = in_spike.min(registrants);
    let spike_us = arrivals.spike_seconds * MICROS_PER_SECOND as f64;
    let tail_us = arrivals.tail_seconds * MICROS_PER_SECOND as f64;
    let mut times = Vec::with_capacity(registrants as usize);
    for _ in 0..in_spike {
        times.push((spike_us * shaped(arrivals.shape, rng.unit())) as Micros);
    }
    for _ in in_spike..registrants {
        times.push((spike_us + tail_us * rng.unit()) as Micros);
    }
    times.sort_unstable();
    times
}

/// Maps a uniform draw on `[0, 1)` to a position in the spike window with the shape's density.
fn shaped(shape: SpikeShape, uniform: f64) -> f64 {
    match shape {
        SpikeShape::Poisson => uniform,
        // Density 2x: the cumulative distribution is x², inverted by the square root.
        SpikeShape::RampUp => uniform.sqrt(),
        // Density 2(1 - x): the cumulative distribution is 1 - (1 - x)².
        SpikeShape::RampDown => 1.0 - (1.0 - uniform).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Stream;

    fn arrivals(shape: SpikeShape) -> Arrivals {
        Arrivals { registrants: 10_000, spike_share: 0.8, spike_seconds: 60.0, shape, tail_seconds: 540.0 }
    }

    fn share_before(times: &[Micros], seconds: u64) -> f64 {
        times.iter().filter(|time| **time < seconds * MICROS_PER_SECOND).count() as f64 / times.len() as f64
    }

    #[test]
    fn eighty_percent_arrive_in_the_first_minute_when_the_spike_says_so() {
        let times = arrival_times(&arrivals(SpikeShape::Poisson), &mut Rng::new(5, Stream::Arrivals));
        assert_eq!(times.len(), 10_000);
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!((share_before(&times, 60) - 0.8).abs() < 1e-9);
        assert!(*times.last().unwrap() < 600 * MICROS_PER_SECOND);
    }

    #[test]
    fn a_ramp_down_spike_front_loads_its_arrivals() {
        let times = arrival_times(&arrivals(SpikeShape::RampDown), &mut Rng::new(5, Stream::Arrivals));
        // Three quarters of a ramp-down spike arrive in its first half: 0.75 × 0.8 = 0.6.
        assert!((share_before(&times, 30) - 0.6).abs() < 0.02);
    }
}
