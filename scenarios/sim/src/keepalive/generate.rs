//! A seeded workload of the published shape of the Azure Functions 2019 dataset
//! (Shahrad et al., USENIX ATC 2020, §3), at the dataset's resolution: invocations per
//! function per minute.
//!
//! What is reproduced, and from which of the paper's observations:
//! - **Functions per app** (Fig. 1): 54% of apps have one function, 95% at most 10; the
//!   rest draw `2 + geometric(0.218)` (capped at 64).
//! - **Invocation rate** (Fig. 5): an app's average daily invocations are lognormal in
//!   log10 with mean 1.6 and deviation 1.77, clamped to [1, 10^8] per day, which puts 45%
//!   of apps at once an hour or less and 81% at once a minute or less, and spans the
//!   eight orders of magnitude; the rate is split among its functions by lognormal weights
//!   (σ = 2), so functions spread wider still.
//! - **Idle-time patterns** (Fig. 6, triggers in Fig. 3): a `timer_share` (15.6%, the
//!   timer triggers) of functions fire periodically (CV 0) at the standard period nearest
//!   their rate; a `bursty_share` come in on/off bursts (on for ~10 minutes, off for ~90;
//!   CV > 1); the rest are Poisson (CV 1).
//! - **Diurnal pattern** (Fig. 4): non-timer rates follow `1 + diurnal_amplitude ×
//!   sin(2π t / 1 day)`, trough at night, each app's phase jittered by up to an hour.
//! - **Execution time** (Fig. 7): per function, lognormal with log-mean −0.38 and σ 2.36
//!   (seconds), clamped to [1 ms, 600 s].
//! - **Memory** (Fig. 8): per app, Burr XII with c = 11.652, k = 0.221, λ = 107.083 MB,
//!   clamped to [16, 1536] MB.

use super::{AppActivity, Workload, blocks_from_minutes};
use crate::sim::arrival::{lognormal, standard_normal};
use rand::{Rng, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// Tunables of the generator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateSpec {
    /// Applications. Default 500.
    pub apps: usize,
    /// Days of workload. Default 7.
    pub days: f64,
    /// Share of periodic (timer) functions. Default 0.156.
    pub timer_share: f64,
    /// Share of bursty (on/off) functions. Default 0.25.
    pub bursty_share: f64,
    /// Relative amplitude of the daily cycle, in [0, 1). Default 0.5.
    pub diurnal_amplitude: f64,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self {
            apps: 500,
            days: 7.0,
            timer_share: 0.156,
            bursty_share: 0.25,
            diurnal_amplitude: 0.5,
        }
    }
}

impl GenerateSpec {
    /// Checks ranges.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.apps == 0 || self.apps > 1_000_000 {
            return Err("keepalive.source.apps must be in 1..=1000000".into());
        }
        if !(self.days > 0.0 && self.days <= 28.0) {
            return Err("keepalive.source.days must be in (0, 28]".into());
        }
        let share = 0.0..=1.0;
        if !share.contains(&self.timer_share)
            || !share.contains(&self.bursty_share)
            || self.timer_share + self.bursty_share > 1.0
        {
            return Err(
                "keepalive.source: timer_share and bursty_share must be in [0, 1], summing to at most 1"
                    .into(),
            );
        }
        if !(0.0..1.0).contains(&self.diurnal_amplitude) {
            return Err("keepalive.source.diurnal_amplitude must be in [0, 1)".into());
        }
        Ok(())
    }
}

/// Minutes in a day.
const DAY_MIN: f64 = 1440.0;
/// Timer periods offered, minutes.
const PERIODS: [u32; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440];
/// Mean minutes of a burst, and of the quiet between bursts.
const BURST_ON_MIN: f64 = 10.0;
const BURST_OFF_MIN: f64 = 90.0;

/// One app's memory, MB, from the paper's Burr XII fit.
pub fn memory_mb<R: Rng>(rng: &mut R) -> f64 {
    let (c, k, lambda) = (11.652, 0.221, 107.083);
    let u: f64 = rng.random::<f64>().min(1.0 - 1e-12);
    // Inverse of F(x) = 1 - (1 + (x/λ)^c)^-k.
    let x = lambda * ((1.0 - u).powf(-1.0 / k) - 1.0).powf(1.0 / c);
    x.clamp(16.0, 1536.0)
}

/// One function's mean execution time, seconds, from the paper's lognormal fit.
pub fn exec_seconds<R: Rng>(rng: &mut R) -> f64 {
    lognormal(rng, (-0.38f64).exp(), 2.36).clamp(0.001, 600.0)
}

/// A Poisson count of mean `mean` (exact below 30, normal beyond).
fn poisson<R: Rng>(rng: &mut R, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let mut product: f64 = rng.random();
        let mut n = 0;
        while product > limit {
            product *= rng.random::<f64>();
            n += 1;
        }
        return n;
    }
    (mean + mean.sqrt() * standard_normal(rng)).round().max(0.0) as u64
}

#[derive(Debug, Clone, Copy)]
enum Pattern {
    Timer { period: u32, phase: u32 },
    Poisson,
    Bursty,
}

/// Generates the workload of `spec` from `seed`.
pub fn workload(spec: &GenerateSpec, seed: u64) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let minutes = (spec.days * DAY_MIN).ceil().max(1.0) as u32;
    let mut apps = Vec::with_capacity(spec.apps);
    let mut function_daily = Vec::new();
    let mut counts = vec![0u64; minutes as usize];
    let mut busy = vec![0f64; minutes as usize];
    for _ in 0..spec.apps {
        let functions = if rng.random::<f64>() < 0.54 {
            1
        } else {
            let mut n = 2;
            while n < 64 && rng.random::<f64>() > 0.218 {
                n += 1;
            }
            n
        };
        let log_daily = (1.6 + 1.77 * standard_normal(&mut rng)).clamp(0.0, 8.0);
        let app_daily = 10f64.powf(log_daily);
        let weights: Vec<f64> = (0..functions)
            .map(|_| lognormal(&mut rng, 1.0, 2.0))
            .collect();
        let total: f64 = weights.iter().sum();
        let memory = memory_mb(&mut rng);
        // Trough at night: the sine's minimum a quarter period before t = 0, ± 1 hour.
        let phase = -std::f64::consts::FRAC_PI_2
            + (rng.random::<f64>() - 0.5) * std::f64::consts::TAU / 12.0;
        counts.fill(0);
        busy.fill(0.0);
        for w in weights {
            let daily = app_daily * w / total;
            let exec = exec_seconds(&mut rng);
            let roll: f64 = rng.random();
            let pattern = if roll < spec.timer_share {
                let target = DAY_MIN / daily.max(1.0);
                let period = PERIODS
                    .iter()
                    .copied()
                    .min_by(|a, b| {
                        (f64::from(*a).ln() - target.ln())
                            .abs()
                            .total_cmp(&(f64::from(*b).ln() - target.ln()).abs())
                    })
                    .unwrap_or(60);
                Pattern::Timer {
                    period,
                    phase: rng.random_range(0..period),
                }
            } else if roll < spec.timer_share + spec.bursty_share {
                Pattern::Bursty
            } else {
                Pattern::Poisson
            };
            let per_minute = daily / DAY_MIN;
            let duty = BURST_ON_MIN / (BURST_ON_MIN + BURST_OFF_MIN);
            let mut on = rng.random::<f64>() < duty;
            let mut fired = 0u64;
            for m in 0..minutes {
                let cycle = 1.0
                    + spec.diurnal_amplitude
                        * (std::f64::consts::TAU * f64::from(m) / DAY_MIN + phase).sin();
                let n = match pattern {
                    Pattern::Timer { period, phase } => u64::from(m % period == phase),
                    Pattern::Poisson => poisson(&mut rng, per_minute * cycle),
                    Pattern::Bursty => {
                        let flip = if on {
                            1.0 / BURST_ON_MIN
                        } else {
                            1.0 / BURST_OFF_MIN
                        };
                        if rng.random::<f64>() < flip {
                            on = !on;
                        }
                        if on {
                            poisson(&mut rng, per_minute / duty * cycle)
                        } else {
                            0
                        }
                    }
                };
                if n > 0 {
                    counts[m as usize] += n;
                    busy[m as usize] += n as f64 * exec;
                    fired += n;
                }
            }
            if fired > 0 {
                function_daily.push(fired as f64 * DAY_MIN / f64::from(minutes));
            }
        }
        let active: Vec<(u32, u64, f64)> = (0..minutes)
            .filter(|&m| counts[m as usize] > 0)
            .map(|m| (m, counts[m as usize], busy[m as usize]))
            .collect();
        if !active.is_empty() {
            apps.push(AppActivity {
                memory_mb: memory,
                blocks: blocks_from_minutes(active),
            });
        }
    }
    Workload {
        apps,
        function_daily_invocations: function_daily,
        span_s: f64::from(minutes) * 60.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    }

    #[test]
    fn the_generated_workload_has_the_published_shape() {
        let spec = GenerateSpec {
            apps: 2000,
            days: 1.0,
            ..GenerateSpec::default()
        };
        let w = workload(&spec, 7);
        assert_eq!(w, workload(&spec, 7), "seeded");
        let daily = &w.function_daily_invocations;
        let (lo, hi) = daily
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let orders = (hi / lo).log10();
        assert!(
            orders >= 6.0,
            "invocations per function span {orders:.1} orders"
        );
        // Apps: 45% at most hourly, 81% at most once a minute (on average over the day).
        // Apps that drew no invocation at all are left out of the workload: count them in.
        let silent = 2000 - w.apps.len();
        let app_daily: Vec<f64> = w.apps.iter().map(|a| a.invocations() as f64).collect();
        let at_most =
            |d: f64| (app_daily.iter().filter(|&&x| x <= d).count() + silent) as f64 / 2000.0;
        let (hourly, minutely) = (at_most(24.0), at_most(1440.0));
        assert!((0.35..0.55).contains(&hourly), "{hourly}");
        assert!((0.72..0.90).contains(&minutely), "{minutely}");
        let memory: Vec<f64> = w.apps.iter().map(|a| a.memory_mb).collect();
        let median = quantile(memory, 0.5);
        assert!(
            (110.0..190.0).contains(&median),
            "median memory {median} MB"
        );
    }

    #[test]
    fn the_day_has_a_diurnal_swing() {
        let spec = GenerateSpec {
            apps: 300,
            days: 1.0,
            timer_share: 0.0,
            bursty_share: 0.0,
            ..GenerateSpec::default()
        };
        let w = workload(&spec, 3);
        // Invocations per hour, over the blocks of one minute (a heavy app's busy minutes
        // merge into long blocks that start once).
        let mut hours = [0u64; 24];
        for b in w.apps.iter().flat_map(|a| &a.blocks) {
            if b.end - b.start < 60.0 {
                hours[(b.start / 3600.0) as usize % 24] += b.invocations;
            }
        }
        let night = hours[0] + hours[1] + hours[23];
        let noon = hours[11] + hours[12] + hours[13];
        assert!(2 * noon > 3 * night, "noon {noon} vs night {night}");
    }
}
