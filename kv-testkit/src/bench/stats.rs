//! The statistics of a row: [`Rounds`], the samples of [`alternate`](super::alternate).

use std::time::Duration;

use super::Sample;

/// The samples of [`alternate`](super::alternate): one kv and one raw per round.
#[derive(Clone, Debug, Default)]
pub struct Rounds {
    /// kv's samples, in round order.
    pub kv: Vec<Sample>,
    /// raw's samples, in round order.
    pub raw: Vec<Sample>,
}

impl Rounds {
    /// The best round's rate of each side: `(kv, raw)` ops/s.
    pub fn best_rates(&self) -> (f64, f64) {
        let best = |s: &[Sample]| {
            s.iter()
                .map(Sample::rate)
                .fold(f64::NAN, |a, b| if a >= b { a } else { b })
        };
        (best(&self.kv), best(&self.raw))
    }

    /// Each side's rate over all its rounds taken as one run of equal-length parts (rounds
    /// divided by the sum of per-round seconds per operation): `(kv, raw)` ops/s.
    pub fn overall_rates(&self) -> (f64, f64) {
        let overall = |s: &[Sample]| s.len() as f64 / s.iter().map(|x| 1.0 / x.rate()).sum::<f64>();
        (overall(&self.kv), overall(&self.raw))
    }

    /// kv's rate ÷ raw's rate in each round, in round order (empty when a side did not run).
    pub fn ratios(&self) -> Vec<f64> {
        self.kv
            .iter()
            .zip(&self.raw)
            .map(|(k, w)| k.rate() / w.rate())
            .collect()
    }

    /// The median over rounds of kv's rate ÷ raw's rate (the upper one of an even count;
    /// `NaN` when a side did not run).
    pub fn median_ratio(&self) -> f64 {
        median(self.ratios())
    }

    /// Requests the server counted per operation over all rounds of each side (`NaN` when a
    /// side was not [`counted`](super::counted)): `(kv, raw)`.
    pub fn requests_per_op(&self) -> (f64, f64) {
        let per_op = |s: &[Sample]| {
            let requests: Option<u64> = s.iter().map(|x| x.requests).sum();
            let ops: usize = s.iter().map(|x| x.ops).sum();
            requests.map_or(f64::NAN, |r| r as f64 / ops as f64)
        };
        (per_op(&self.kv), per_op(&self.raw))
    }

    /// Process CPU time per operation over all rounds of each side: `(kv, raw)` µs/op.
    pub fn cpu_us_per_op(&self) -> (f64, f64) {
        let per_op = |s: &[Sample]| {
            let cpu: Duration = s.iter().map(|x| x.cpu).sum();
            let ops: usize = s.iter().map(|x| x.ops).sum();
            cpu.as_secs_f64() * 1e6 / ops as f64
        };
        (per_op(&self.kv), per_op(&self.raw))
    }
}

/// The median of `values` (the upper one of an even count); `NaN` when empty.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
