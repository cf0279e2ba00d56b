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
    radix_sort(&mut times);
    times
}

/// Bits of the digit `radix_sort` sorts on in one pass: 2,048 counters, which stay in the cache.
const RADIX_BITS: u32 = 11;

/// Sorts `times` as `sort_unstable` does (equal times are indistinguishable), in a few linear
/// passes over the digits the largest time has (three for a spike of up to 2.4 hours), where a
/// comparison sort of a swarm seed's 15,000 arrivals took a twentieth of the seed's instructions.
fn radix_sort(times: &mut Vec<Micros>) {
    let largest = times.iter().copied().max().unwrap_or(0);
    let mut spare = vec![0; times.len()];
    let mut shift = 0;
    while shift < Micros::BITS && largest >> shift > 0 {
        let digit = |time: Micros| ((time >> shift) & ((1 << RADIX_BITS) - 1)) as usize;
        let mut starts = [0usize; 1 << RADIX_BITS];
        for time in times.iter() {
            starts[digit(*time)] += 1;
        }
        let mut start = 0;
        for count in &mut starts {
            (*count, start) = (start, start + *count);
        }
        // Stable within a digit, so that the earlier passes' order holds among equal digits.
        for time in times.iter() {
            let position = &mut starts[digit(*time)];
            spare[*position] = *time;
            *position += 1;
        }
        std::mem::swap(times, &mut spare);
        shift += RADIX_BITS;
    }
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
    fn the_radix_sort_sorts_as_a_comparison_sort_does() {
        let mut rng = Rng::new(8, Stream::Arrivals);
        for (count, bound) in
            [(0, 1), (1, 1), (2, 1), (5_000, 2_000), (15_000, 30_000_000), (3_000, u64::MAX)]
        {
            let mut times: Vec<Micros> = (0..count).map(|_| rng.below(bound)).collect();
            if count > 2 {
                times[0] = u64::MAX;
                times[1] = 0;
            }
            let mut expected = times.clone();
            expected.sort_unstable();
            radix_sort(&mut times);
            assert_eq!(times, expected, "{count} times below {bound}");
        }
    }

    #[test]
    fn a_ramp_down_spike_front_loads_its_arrivals() {
        let times = arrival_times(&arrivals(SpikeShape::RampDown), &mut Rng::new(5, Stream::Arrivals));
        // Three quarters of a ramp-down spike arrive in its first half: 0.75 × 0.8 = 0.6.
        assert!((share_before(&times, 30) - 0.6).abs() < 0.02);
    }
}
