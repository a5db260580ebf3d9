//! Latency recording: an HDR histogram per load worker, merged per run, and
//! reduced to the few figures the report prints.
//!
//! Values are microseconds. The histogram keeps three significant digits from
//! 1 µs to 60 s, so p99.9 of a millisecond-scale distribution is exact to
//! within 0.1 %; anything slower than 60 s is clamped to 60 s rather than lost.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency a histogram distinguishes: 60 s, in microseconds.
const HIGHEST_MICROS: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1,
        // high >= 2 * low, sigfig <= 5), so creation cannot fail.
        let histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
            .expect("constant histogram bounds are valid");
        Latencies { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, and saturating records keep
        // values inside them, so the addition cannot overflow the range.
        for value in other.histogram.iter_recorded() {
            self.histogram.saturating_record_n(
                value.value_iterated_to(),
                value.count_since_last_iteration(),
            );
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        let at = |quantile: f64| self.histogram.value_at_quantile(quantile);
        LatencySummary {
            samples: self.histogram.len(),
            mean_us: self.histogram.mean(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.histogram.max(),
        }
    }
}

/// The figures of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Microseconds as milliseconds with two decimals, the unit the report uses.
pub fn millis(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(values: impl IntoIterator<Item = u64>) -> Latencies {
        let mut latencies = Latencies::new();
        for micros in values {
            latencies.record(Duration::from_micros(micros));
        }
        latencies
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        // 1..=1000 µs, once each: the p-th quantile is p * 1000 µs.
        let summary = filled(1..=1000).summary();
        assert_eq!(summary.samples, 1000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1000);
        assert!((summary.mean_us - 500.5).abs() < 0.5, "{}", summary.mean_us);
    }

    #[test]
    fn merging_keeps_every_sample_of_both() {
        let mut fast = filled(std::iter::repeat_n(100, 990));
        let slow = filled(std::iter::repeat_n(20_000, 10));
        fast.merge(&slow);
        let summary = fast.summary();
        assert_eq!(summary.samples, 1000);
        assert_eq!(summary.p50_us, 100);
        // The slowest 1 % is exactly the merged-in samples.
        assert!(summary.p999_us >= 19_990, "{summary:?}");
        assert!(summary.p99_us <= 100, "{summary:?}");
    }

    #[test]
    fn empty_and_out_of_range_values_do_not_panic() {
        assert_eq!(Latencies::new().summary(), LatencySummary::default());
        let summary = filled([0, u64::MAX / 2]).summary();
        assert_eq!(summary.samples, 2);
        assert!(summary.max_us >= HIGHEST_MICROS, "{summary:?}");
    }

    #[test]
    fn millis_formatting() {
        assert_eq!(millis(1234), "1.23");
        assert_eq!(millis(5), "0.01");
        assert_eq!(millis(0), "0.00");
    }
}
