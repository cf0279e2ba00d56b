//! A small seeded generator, written here so that a run depends on nothing but its seed:
//! SplitMix64 expands the seed into state, xoshiro256** draws from it.
//!
//! Each part of the model draws from its own stream (`Stream`), so that changing, say, the
//! number of nodes changes service times but not who arrives when or who pays.

use std::f64::consts::TAU;
use std::sync::OnceLock;

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
    /// The round trips of the requests that measure recovery as the live fault suite does
    /// (`model::suite`), apart so that the rest of a run draws what it would without them.
    Suite = 6,
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

    /// A standard normal draw by Marsaglia and Tsang's ziggurat (128 layers): the same
    /// distribution as `standard_normal`, but other numbers. Nearly every draw is one `u64`, a
    /// table look-up and a multiplication, where Box–Muller takes a logarithm, a square root and
    /// a cosine; the swarm's seeds draw this way (see `distribution::NormalDraw`). That usual
    /// draw is inlined; the rest (one in a hundred) is not.
    #[inline]
    pub fn standard_normal_ziggurat(&mut self) -> f64 {
        let table = ziggurat();
        let bits = self.next_u64();
        let (layer, signed, x) = ziggurat_point(table, bits);
        if signed.unsigned_abs() < table.inner[layer] {
            return x;
        }
        self.standard_normal_ziggurat_beyond(table, bits)
    }

    /// `standard_normal_ziggurat` on from a draw of `bits` outside its layer's rectangle.
    #[cold]
    #[inline(never)]
    fn standard_normal_ziggurat_beyond(&mut self, table: &Ziggurat, mut bits: u64) -> f64 {
        loop {
            let (layer, signed, x) = ziggurat_point(table, bits);
            // Inside its layer's rectangle: never so for the caller's draw, which it tested.
            if signed.unsigned_abs() < table.inner[layer] {
                return x;
            }
            if layer == 0 {
                // The tail beyond `ZIGGURAT_TAIL_START` (Marsaglia's method for it).
                loop {
                    let beyond = -(1.0 - self.unit()).ln() / ZIGGURAT_TAIL_START;
                    let height = -(1.0 - self.unit()).ln();
                    if height + height >= beyond * beyond {
                        let tail = ZIGGURAT_TAIL_START + beyond;
                        return if signed > 0 { tail } else { -tail };
                    }
                }
            }
            // The sliver of the layer outside the rectangle below it: under the curve or not.
            let below = table.height[layer] + self.unit() * (table.height[layer - 1] - table.height[layer]);
            if below < (-0.5 * x * x).exp() {
                return x;
            }
            bits = self.next_u64();
        }
    }

    /// An exponential draw with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// Layers of the ziggurat (a power of two: the layer is drawn from the low bits).
const ZIGGURAT_LAYERS: usize = 128;
/// Where the base layer's tail starts, and the area of each layer, for 128 layers (Marsaglia and
/// Tsang, "The Ziggurat Method for Generating Random Variables", 2000).
const ZIGGURAT_TAIL_START: f64 = 3.442_619_855_899;
const ZIGGURAT_LAYER_AREA: f64 = 9.912_563_035_262_17e-3;
/// Scale of the signed 32-bit abscissa.
const ZIGGURAT_SCALE: f64 = 2_147_483_648.0;

/// The ziggurat's tables (Marsaglia and Tsang's `zigset`): per layer, the abscissa below which a
/// draw is inside the layer's rectangle at once (`inner`, scaled to 32 bits), the width of one
/// unit of the scaled abscissa (`width`) and the density at the layer's right edge (`height`).
#[derive(Debug)]
struct Ziggurat {
    inner: [u32; ZIGGURAT_LAYERS],
    width: [f64; ZIGGURAT_LAYERS],
    height: [f64; ZIGGURAT_LAYERS],
}

/// The layer a ziggurat draw of `bits` picks (from the low bits), its signed 32-bit abscissa
/// (the high bits) and that abscissa scaled to the layer.
#[inline]
fn ziggurat_point(table: &Ziggurat, bits: u64) -> (usize, i32, f64) {
    let layer = (bits & (ZIGGURAT_LAYERS as u64 - 1)) as usize;
    let signed = (bits >> 32) as u32 as i32;
    (layer, signed, f64::from(signed) * table.width[layer])
}

fn ziggurat() -> &'static Ziggurat {
    static TABLES: OnceLock<Ziggurat> = OnceLock::new();
    TABLES.get_or_init(|| {
        let density = |x: f64| (-0.5 * x * x).exp();
        let mut table = Ziggurat {
            inner: [0; ZIGGURAT_LAYERS],
            width: [0.0; ZIGGURAT_LAYERS],
            height: [0.0; ZIGGURAT_LAYERS],
        };
        let last = ZIGGURAT_LAYERS - 1;
        let mut edge = ZIGGURAT_TAIL_START;
        let base = ZIGGURAT_LAYER_AREA / density(edge);
        table.inner[0] = (edge / base * ZIGGURAT_SCALE) as u32;
        table.inner[1] = 0;
        table.width[0] = base / ZIGGURAT_SCALE;
        table.width[last] = edge / ZIGGURAT_SCALE;
        table.height[0] = 1.0;
        table.height[last] = density(edge);
        for layer in (1..last).rev() {
            let previous = edge;
            edge = (-2.0 * (ZIGGURAT_LAYER_AREA / edge + density(edge)).ln()).sqrt();
            table.inner[layer + 1] = (edge / previous * ZIGGURAT_SCALE) as u32;
            table.height[layer] = density(edge);
            table.width[layer] = edge / ZIGGURAT_SCALE;
        }
        table
    })
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
    fn the_ziggurat_draws_the_standard_normal_that_box_muller_draws() {
        // Quantiles of 400,000 draws each, against each other and against the normal's own.
        let mut rng = Rng::new(21, Stream::System);
        let draws = 400_000;
        let mut ziggurat: Vec<f64> = (0..draws).map(|_| rng.standard_normal_ziggurat()).collect();
        let mut box_muller: Vec<f64> = (0..draws).map(|_| rng.standard_normal()).collect();
        ziggurat.sort_unstable_by(f64::total_cmp);
        box_muller.sort_unstable_by(f64::total_cmp);
        let quantile = |sorted: &[f64], p: f64| sorted[(p * sorted.len() as f64) as usize];
        let known = [
            (0.001, -3.090),
            (0.01, -2.326),
            (0.1, -1.282),
            (0.5, 0.0),
            (0.9, 1.282),
            (0.99, 2.326),
            (0.999, 3.090),
        ];
        for (p, expected) in known {
            let (fast, slow) = (quantile(&ziggurat, p), quantile(&box_muller, p));
            let tolerance = if (0.01..=0.99).contains(&p) { 0.02 } else { 0.05 };
            assert!((fast - expected).abs() < tolerance, "ziggurat quantile {p}: {fast} (normal {expected})");
            assert!((fast - slow).abs() < tolerance, "quantile {p}: ziggurat {fast}, Box–Muller {slow}");
        }
        let mean = ziggurat.iter().sum::<f64>() / draws as f64;
        let variance = ziggurat.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / draws as f64;
        assert!(mean.abs() < 0.01 && (variance - 1.0).abs() < 0.01, "mean {mean}, variance {variance}");
        // The tail beyond the base layer is drawn too, on both sides.
        assert!(ziggurat.first().is_some_and(|x| *x < -ZIGGURAT_TAIL_START));
        assert!(ziggurat.last().is_some_and(|x| *x > ZIGGURAT_TAIL_START));
    }

    #[test]
    fn below_never_reaches_its_bound() {
        let mut rng = Rng::new(3, Stream::Behaviour);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
        assert_eq!(rng.below(0), 0);
    }
}
