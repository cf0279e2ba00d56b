//! Service times, delays and latencies as scenario files describe them, and how to draw them.
//!
//! Scenario files write them in milliseconds (fractions allowed); the simulator draws whole
//! microseconds, its unit of virtual time.

use serde::Deserialize;

use crate::random::Rng;

/// Microseconds of virtual time since the event opened.
pub type Micros = u64;

/// Microseconds in one millisecond.
pub const MICROS_PER_MILLI: u64 = 1_000;
/// Microseconds in one second.
pub const MICROS_PER_SECOND: u64 = 1_000_000;

/// Longest value one draw may give, in microseconds (a day). Lognormal tails are unbounded;
/// a draw beyond this says more about the parameters than about the system.
pub const SAMPLE_MAX_US: Micros = 24 * 60 * 60 * MICROS_PER_SECOND;

/// The standard normal quantile of 0.99: a lognormal with median `m` and 99th percentile `q`
/// has `sigma = ln(q / m) / Z_99`.
const STANDARD_NORMAL_P99: f64 = 2.326_347_874_040_841;

/// A distribution of durations, in milliseconds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Constant {
        value_ms: f64,
    },
    Uniform {
        min_ms: f64,
        max_ms: f64,
    },
    Exponential {
        mean_ms: f64,
    },
    /// Given by its median and 99th percentile, the two figures people usually know.
    Lognormal {
        median_ms: f64,
        p99_ms: f64,
    },
}

impl Distribution {
    /// Why the parameters cannot be used, naming the parameter; `None` when they can.
    pub fn problem(&self) -> Option<String> {
        let finite_non_negative = |name: &str, value: f64| {
            (!value.is_finite() || value < 0.0).then(|| format!("{name} must be a number >= 0 (got {value})"))
        };
        match *self {
            Distribution::Constant { value_ms } => finite_non_negative("value_ms", value_ms),
            Distribution::Uniform { min_ms, max_ms } => finite_non_negative("min_ms", min_ms)
                .or_else(|| finite_non_negative("max_ms", max_ms))
                .or_else(|| {
                    (max_ms < min_ms).then(|| format!("max_ms ({max_ms}) is below min_ms ({min_ms})"))
                }),
            Distribution::Exponential { mean_ms } => finite_non_negative("mean_ms", mean_ms),
            Distribution::Lognormal { median_ms, p99_ms } => {
                let median_positive = (!median_ms.is_finite() || median_ms <= 0.0)
                    .then(|| format!("median_ms must be a number > 0 (got {median_ms})"));
                median_positive.or_else(|| finite_non_negative("p99_ms", p99_ms)).or_else(|| {
                    (p99_ms < median_ms)
                        .then(|| format!("p99_ms ({p99_ms}) is below median_ms ({median_ms})"))
                })
            }
        }
    }

    /// One draw, in whole microseconds, at most `SAMPLE_MAX_US`.
    pub fn sample_micros(&self, rng: &mut Rng) -> Micros {
        self.sampler().sample_micros(rng)
    }

    /// The distribution ready for many draws (a lognormal's sigma worked out once).
    pub fn sampler(&self) -> Sampler {
        self.sampler_drawing(NormalDraw::BoxMuller)
    }

    /// `sampler`, drawing a lognormal's normal with `normal`.
    pub fn sampler_drawing(&self, normal: NormalDraw) -> Sampler {
        let shape = match *self {
            Distribution::Constant { value_ms } => Shape::Constant { value_ms },
            Distribution::Uniform { min_ms, max_ms } => Shape::Uniform { min_ms, max_ms },
            Distribution::Exponential { mean_ms } => Shape::Exponential { mean_ms },
            Distribution::Lognormal { median_ms, p99_ms } => {
                Shape::Lognormal { median_ms, sigma: (p99_ms / median_ms).ln() / STANDARD_NORMAL_P99 }
            }
        };
        Sampler(shape, normal)
    }

    /// The mean, in milliseconds, for summaries.
    pub fn mean_ms(&self) -> f64 {
        match *self {
            Distribution::Constant { value_ms } => value_ms,
            Distribution::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Distribution::Exponential { mean_ms } => mean_ms,
            Distribution::Lognormal { median_ms, p99_ms } => {
                let sigma = (p99_ms / median_ms).ln() / STANDARD_NORMAL_P99;
                median_ms * (sigma * sigma / 2.0).exp()
            }
        }
    }

    /// A short description for reports, such as `lognormal(median 0.4 ms, p99 3 ms)`.
    pub fn describe(&self) -> String {
        match *self {
            Distribution::Constant { value_ms } => format!("{value_ms} ms"),
            Distribution::Uniform { min_ms, max_ms } => format!("uniform({min_ms}–{max_ms} ms)"),
            Distribution::Exponential { mean_ms } => format!("exponential(mean {mean_ms} ms)"),
            Distribution::Lognormal { median_ms, p99_ms } => {
                format!("lognormal(median {median_ms} ms, p99 {p99_ms} ms)")
            }
        }
    }
}

/// How a lognormal's underlying normal is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalDraw {
    /// Box–Muller (`Rng::standard_normal`): what `kuota-sim run` draws, and what every figure
    /// in docs/capacity-planning.md was drawn with.
    #[default]
    BoxMuller,
    /// The ziggurat (`Rng::standard_normal_ziggurat`): the same distribution, other numbers,
    /// about a fifth of the instructions. The swarm's seeds draw this way, and so does
    /// `run --random-faults`, which replays them.
    Ziggurat,
}

/// A `Distribution` to draw from many times: what a draw needs, worked out once. With
/// `NormalDraw::BoxMuller` it draws exactly what the distribution's own `sample_micros` draws.
#[derive(Clone, Copy, Debug)]
pub struct Sampler(Shape, NormalDraw);

#[derive(Clone, Copy, Debug)]
enum Shape {
    Constant { value_ms: f64 },
    Uniform { min_ms: f64, max_ms: f64 },
    Exponential { mean_ms: f64 },
    Lognormal { median_ms: f64, sigma: f64 },
}

impl Sampler {
    /// One draw, in whole microseconds, at most `SAMPLE_MAX_US`.
    pub fn sample_micros(&self, rng: &mut Rng) -> Micros {
        let milliseconds = match self.0 {
            Shape::Constant { value_ms } => value_ms,
            Shape::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * rng.unit(),
            Shape::Exponential { mean_ms } => rng.exponential(mean_ms),
            Shape::Lognormal { median_ms, sigma } => {
                let normal = match self.1 {
                    NormalDraw::BoxMuller => rng.standard_normal(),
                    NormalDraw::Ziggurat => rng.standard_normal_ziggurat(),
                };
                median_ms * (sigma * normal).exp()
            }
        };
        round_micros(milliseconds * MICROS_PER_MILLI as f64)
    }
}

/// `micros` rounded half away from zero, at least 0 (NaN too) and at most `SAMPLE_MAX_US`:
/// what `(micros.round().max(0.0) as Micros).min(SAMPLE_MAX_US)` gives, without `f64::round`,
/// which this target computes in software (a swarm seed draws some 70,000 times). Below
/// `SAMPLE_MAX_US` (< 2^53) the truncation and the fraction it leaves are exact. The whole part
/// goes through `i64`, which the target converts to and from in one instruction each; `u64`
/// takes a dozen (values of 2^63 and above need their own path).
fn round_micros(micros: f64) -> Micros {
    if micros.is_nan() || micros <= 0.0 {
        return 0;
    }
    if micros >= SAMPLE_MAX_US as f64 {
        return SAMPLE_MAX_US;
    }
    let whole = micros as i64;
    let rounded = if micros - whole as f64 >= 0.5 { whole + 1 } else { whole };
    rounded as Micros
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Stream;

    /// The median and the 99th percentile of `draws`, in milliseconds.
    fn median_and_p99_ms(mut draws: Vec<Micros>) -> (f64, f64) {
        draws.sort_unstable();
        (draws[draws.len() / 2] as f64 / 1_000.0, draws[draws.len() * 99 / 100] as f64 / 1_000.0)
    }

    #[test]
    fn a_lognormal_draw_has_about_the_median_and_p99_it_was_given() {
        let distribution = Distribution::Lognormal { median_ms: 4.0, p99_ms: 20.0 };
        let mut rng = Rng::new(11, Stream::System);
        let (median, p99) =
            median_and_p99_ms((0..200_000).map(|_| distribution.sample_micros(&mut rng)).collect());
        assert!((median - 4.0).abs() < 0.1, "median {median}");
        assert!((p99 - 20.0).abs() < 1.0, "p99 {p99}");
    }

    #[test]
    fn a_lognormal_drawn_through_the_ziggurat_has_the_same_median_and_p99() {
        let distribution = Distribution::Lognormal { median_ms: 0.5, p99_ms: 4.0 };
        let sampler = distribution.sampler_drawing(NormalDraw::Ziggurat);
        let mut rng = Rng::new(12, Stream::System);
        let (median, p99) =
            median_and_p99_ms((0..200_000).map(|_| sampler.sample_micros(&mut rng)).collect());
        assert!((median - 0.5).abs() < 0.01, "median {median}");
        assert!((p99 - 4.0).abs() < 0.2, "p99 {p99}");
    }

    #[test]
    fn a_constant_draws_its_value_in_microseconds() {
        let mut rng = Rng::new(1, Stream::System);
        assert_eq!(Distribution::Constant { value_ms: 0.004 }.sample_micros(&mut rng), 4);
    }

    #[test]
    fn parameters_out_of_order_are_named() {
        let problem = Distribution::Uniform { min_ms: 5.0, max_ms: 1.0 }.problem().unwrap();
        assert!(problem.contains("max_ms"), "{problem}");
        let problem = Distribution::Lognormal { median_ms: 0.0, p99_ms: 1.0 }.problem().unwrap();
        assert!(problem.contains("median_ms"), "{problem}");
    }

    #[test]
    fn rounding_to_microseconds_is_what_f64_round_gives() {
        let reference = |micros: f64| (micros.round().max(0.0) as Micros).min(SAMPLE_MAX_US);
        let mut rng = Rng::new(9, crate::random::Stream::System);
        let edges = [
            0.0,
            -0.0,
            -0.4,
            -0.5,
            -7.5,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            4_503_599_627_370_495.5,
            SAMPLE_MAX_US as f64 - 0.5,
            SAMPLE_MAX_US as f64 - 0.50001,
            SAMPLE_MAX_US as f64,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for micros in edges.into_iter().chain((0..200_000).map(|_| rng.unit() * 1e7)) {
            assert_eq!(round_micros(micros), reference(micros), "{micros}");
        }
        for whole in 0..10_000u64 {
            let micros = whole as f64 + 0.5;
            assert_eq!(round_micros(micros), reference(micros), "{micros}");
        }
    }
}
