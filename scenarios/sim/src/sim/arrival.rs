//! Random draws of the simulation: arrival processes (Poisson, diurnal, flash crowds),
//! Zipf popularity and lognormal execution times.
//!
//! Every draw takes the run's seeded RNG, so a run is reproducible from its seed. Nothing
//! here allocates per draw; the Zipf table is built once per run.

use rand::Rng;

/// Popularity by rank: rank `k` (0-based) is drawn with probability proportional to
/// `1 / (k + 1)^s`. Sampling is a binary search of the cumulative table.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
    /// `guide[j]` is the first rank whose cumulative probability reaches `j / K`, for
    /// `K = guide.len() - 1`: a draw `u` only searches between two neighbouring entries,
    /// a few ranks, instead of the whole table (same answer as the full search).
    guide: Vec<u32>,
}

impl Zipf {
    /// A table over `n >= 1` ranks with exponent `s >= 0` (0 is uniform).
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let k = n.clamp(1, 1 << 12);
        let guide = (0..=k)
            .map(|j| cdf.partition_point(|&c| c < j as f64 / k as f64) as u32)
            .collect();
        Self { cdf, guide }
    }

    /// Draws a rank.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        let k = self.guide.len() - 1;
        let j = ((u * k as f64) as usize).min(k - 1);
        let (lo, hi) = (self.guide[j] as usize, self.guide[j + 1] as usize);
        let hi = hi.min(self.cdf.len());
        let rank = lo + self.cdf[lo..hi].partition_point(|&c| c < u);
        rank.min(self.cdf.len().saturating_sub(1))
    }

    /// The probability of rank `k`.
    pub fn probability(&self, k: usize) -> f64 {
        let hi = self.cdf.get(k).copied().unwrap_or(0.0);
        let lo = if k == 0 { 0.0 } else { self.cdf[k - 1] };
        hi - lo
    }
}

/// A standard normal draw (Box–Muller; one of the pair is enough at these rates).
pub fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A lognormal draw with the given median and shape `sigma`.
pub fn lognormal<R: Rng>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    median * (sigma * standard_normal(rng)).exp()
}

/// An exponential gap for a Poisson process of `rate` events per second, in seconds.
pub fn exponential_gap<R: Rng>(rng: &mut R, rate: f64) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    -u.ln() / rate
}

/// A window during which one POP sees `factor` times its normal rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlashCrowd {
    /// The POP that sees the crowd.
    pub pop: usize,
    /// Window start, seconds since the start of the run.
    pub start: f64,
    /// Window end, seconds since the start of the run.
    pub end: f64,
    /// Rate multiplier inside the window (>= 1).
    pub factor: f64,
    /// When set, the extra load all goes to this function (a viral function); otherwise
    /// it follows the usual popularity.
    pub function: Option<usize>,
}

/// The arrival rate at each POP over time: a base rate, an optional sinusoidal (diurnal)
/// modulation, and flash crowds. Arrivals are drawn by thinning a Poisson process at the
/// POP's peak rate, which is exact for any rate curve bounded by that peak.
#[derive(Debug, Clone)]
pub struct RateProfile {
    /// Requests per second per POP at the mean of the curve.
    pub base: f64,
    /// Relative amplitude of the diurnal curve in [0, 1); 0 is a plain Poisson process.
    pub amplitude: f64,
    /// Period of the diurnal curve in seconds.
    pub period: f64,
    /// Flash crowds.
    pub flashes: Vec<FlashCrowd>,
}

/// One arrival drawn from a [`RateProfile`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds since the start of the run.
    pub at: f64,
    /// The function this arrival must invoke, when a flash crowd decides it.
    pub function: Option<usize>,
}

impl RateProfile {
    fn diurnal(&self, t: f64) -> f64 {
        if self.amplitude == 0.0 {
            return self.base;
        }
        self.base * (1.0 + self.amplitude * (std::f64::consts::TAU * t / self.period).sin())
    }

    fn flash_at(&self, pop: usize, t: f64) -> Option<&FlashCrowd> {
        self.flashes
            .iter()
            .find(|f| f.pop == pop && t >= f.start && t < f.end)
    }

    /// The rate at `pop` at time `t`, in requests per second.
    pub fn rate(&self, pop: usize, t: f64) -> f64 {
        let r = self.diurnal(t);
        self.flash_at(pop, t).map_or(r, |f| r * f.factor)
    }

    /// The highest rate `pop` ever sees.
    pub fn peak(&self, pop: usize) -> f64 {
        let factor = self
            .flashes
            .iter()
            .filter(|f| f.pop == pop)
            .map(|f| f.factor)
            .fold(1.0, f64::max);
        self.base * (1.0 + self.amplitude) * factor
    }

    /// The next arrival at `pop` after time `after` (seconds), or `None` when the POP
    /// never receives traffic.
    pub fn next<R: Rng>(&self, rng: &mut R, pop: usize, after: f64) -> Option<Arrival> {
        let peak = self.peak(pop);
        if peak <= 0.0 {
            return None;
        }
        let mut t = after;
        loop {
            t += exponential_gap(rng, peak);
            let base = self.diurnal(t);
            let flash = self.flash_at(pop, t);
            let rate = flash.map_or(base, |f| base * f.factor);
            let u: f64 = rng.random();
            if u * peak >= rate {
                continue;
            }
            // Of an accepted arrival inside a crowd, the share (factor-1)/factor is the
            // crowd's extra load.
            let function = flash.and_then(|f| {
                let extra = u * peak >= base;
                f.function.filter(|_| extra)
            });
            return Some(Arrival { at: t, function });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn count(profile: &RateProfile, pop: usize, from: f64, to: f64) -> usize {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut t = 0.0;
        let mut n = 0;
        while let Some(a) = profile.next(&mut rng, pop, t) {
            if a.at >= to {
                break;
            }
            if a.at >= from {
                n += 1;
            }
            t = a.at;
        }
        n
    }

    fn poisson(rate: f64) -> RateProfile {
        RateProfile {
            base: rate,
            amplitude: 0.0,
            period: 1.0,
            flashes: Vec::new(),
        }
    }

    #[test]
    fn poisson_arrivals_come_at_the_configured_rate() {
        // 100/s for 1000 s: 100 000 expected, standard deviation ~316.
        let n = count(&poisson(100.0), 0, 0.0, 1000.0);
        assert!((98_500..=101_500).contains(&n), "{n}");
    }

    #[test]
    fn diurnal_arrivals_peak_and_trough_with_the_curve() {
        let p = RateProfile {
            base: 100.0,
            amplitude: 0.5,
            period: 400.0,
            flashes: Vec::new(),
        };
        // Around the peak (t = 100 s) the rate is ~150/s, around the trough (300 s) ~50/s.
        let peak = count(&p, 0, 80.0, 120.0) as f64 / 40.0;
        let trough = count(&p, 0, 280.0, 320.0) as f64 / 40.0;
        assert!((135.0..=160.0).contains(&peak), "{peak}");
        assert!((40.0..=60.0).contains(&trough), "{trough}");
    }

    #[test]
    fn a_flash_crowd_multiplies_the_rate_at_one_pop_only() {
        let mut p = poisson(50.0);
        p.flashes.push(FlashCrowd {
            pop: 1,
            start: 100.0,
            end: 200.0,
            factor: 10.0,
            function: Some(7),
        });
        let inside = count(&p, 1, 100.0, 200.0) as f64 / 100.0;
        let outside = count(&p, 1, 0.0, 100.0) as f64 / 100.0;
        let other = count(&p, 0, 100.0, 200.0) as f64 / 100.0;
        assert!((470.0..=530.0).contains(&inside), "{inside}");
        assert!((45.0..=55.0).contains(&outside), "{outside}");
        assert!((45.0..=55.0).contains(&other), "{other}");
    }

    #[test]
    fn a_viral_flash_crowd_sends_its_extra_load_to_its_function() {
        let mut p = poisson(10.0);
        p.flashes.push(FlashCrowd {
            pop: 0,
            start: 0.0,
            end: 100.0,
            factor: 5.0,
            function: Some(3),
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut t, mut viral, mut total) = (0.0, 0, 0);
        while let Some(a) = p.next(&mut rng, 0, t) {
            if a.at >= 100.0 {
                break;
            }
            total += 1;
            viral += usize::from(a.function == Some(3));
            t = a.at;
        }
        let share = viral as f64 / total as f64;
        assert!((0.76..=0.84).contains(&share), "{share}");
    }

    #[test]
    fn the_guided_zipf_draw_is_the_full_inverse_cdf_search() {
        for (n, exponent) in [(1, 1.0), (7, 0.0), (1000, 1.1), (70_000, 0.9)] {
            let z = Zipf::new(n, exponent);
            let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
            for _ in 0..20_000 {
                let mut a = rng.clone();
                let u: f64 = rng.random();
                let full = z.cdf.partition_point(|&c| c < u).min(n - 1);
                assert_eq!(z.sample(&mut a), full, "n {n} u {u}");
            }
        }
    }

    #[test]
    fn zipf_ranks_follow_the_power_law() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut hits = vec![0u32; 1000];
        let n = 200_000;
        for _ in 0..n {
            hits[z.sample(&mut rng)] += 1;
        }
        // P(rank 0) = 1/H(1000) ~ 0.1336; rank 1 half of that.
        let p0 = f64::from(hits[0]) / f64::from(n);
        let p1 = f64::from(hits[1]) / f64::from(n);
        assert!((p0 - z.probability(0)).abs() < 0.005, "{p0}");
        assert!((p1 / p0 - 0.5).abs() < 0.03, "{}", p1 / p0);
        assert!(hits[999] < hits[0] / 100);
    }

    #[test]
    fn zipf_with_exponent_zero_is_uniform() {
        let z = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((z.probability(k) - 0.25).abs() < 1e-12);
        }
    }

    #[test]
    fn lognormal_draws_have_the_requested_median() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut v: Vec<f64> = (0..20_001)
            .map(|_| lognormal(&mut rng, 20.0, 0.7))
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((19.0..=21.0).contains(&median), "{median}");
    }
}
