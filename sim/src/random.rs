//! A small seeded generator, written here so that a run depends on nothing but its seed:
//! SplitMix64 expands the seed into state, xoshiro256** draws from it.
//!
//! Each part of the model draws from its own stream (`Stream`), so that changing, say, the
//! number of nodes changes service times but not who arrives when or who pays.

use std::f64::consts::TAU;

/// The independent random streams of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// When registrants arrive.
    Arrivals = 1,
    /// What registrants choose and how long they take (categories, payments, cancels, jitter).
    Behaviour = 2,
    /// Service times, commit latencies and network round trips.
    System = 3,
    /// The swarm's fault schedule of a seed (`swarm::random_faults`).
    Faults = 4,
    /// A queued run's draw seed and the swarm's queue settings of a seed (`model::queue`).
    Queue = 5,
}

/// SplitMix64: good enough to turn one `u64` into well-mixed state words.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64, stream: Stream) -> Self {
        // Mixing the stream number in before expansion gives unrelated states per stream.
        let mut expander = SplitMix64::new(seed ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let state = [expander.next_u64(), expander.next_u64(), expander.next_u64(), expander.next_u64()];
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let shifted = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= shifted;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, with the 53 bits a `f64` can hold.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `probability`.
    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Uniform in `[0, bound)`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    pub fn standard_normal(&mut self) -> f64 {
        // `1 - unit()` lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        radius * (TAU * self.unit()).cos()
    }

    /// An exponential draw with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_draw_the_same_numbers() {
        let mut first = Rng::new(7, Stream::System);
        let mut second = Rng::new(7, Stream::System);
        for _ in 0..100 {
            assert_eq!(first.next_u64(), second.next_u64());
        }
    }

    #[test]
    fn streams_of_one_seed_differ() {
        let mut arrivals = Rng::new(7, Stream::Arrivals);
        let mut system = Rng::new(7, Stream::System);
        assert_ne!(arrivals.next_u64(), system.next_u64());
    }

    #[test]
    fn unit_draws_stay_in_range_and_average_one_half() {
        let mut rng = Rng::new(1, Stream::Behaviour);
        let draws: Vec<f64> = (0..100_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|draw| (0.0..1.0).contains(draw)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn below_never_reaches_its_bound() {
        let mut rng = Rng::new(3, Stream::Behaviour);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
        assert_eq!(rng.below(0), 0);
    }
}
