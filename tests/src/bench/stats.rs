//! Order statistics for benchmark samples: median, extremes and spread.

use serde::{Deserialize, Serialize};

/// Summary of a set of samples of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// `(max - min) / median` in percent; 0 for a single sample.
    pub spread_pct: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not finite.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let median = median_sorted(&v);
        let (min, max) = (v[0], v[v.len() - 1]);
        let spread_pct = if median != 0.0 {
            (max - min) / median.abs() * 100.0
        } else {
            0.0
        };
        Some(Summary {
            n: v.len(),
            median,
            min,
            max,
            spread_pct,
        })
    }
}

/// Median of an already sorted, non-empty slice.
fn median_sorted(v: &[f64]) -> f64 {
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// A distribution-free 95 % confidence interval for the median of
/// `samples`: the k-th smallest and k-th largest sample, with k the largest
/// rank whose binomial tail P(Bin(n, ½) < k) stays within 2.5 %. It needs
/// no assumption about the noise's shape; `None` below 6 samples (then not
/// even min–max covers 95 %). With 6–8 samples it is min–max; with 9–11
/// it drops the extreme sample at each end.
pub fn median_ci95(samples: &[f64]) -> Option<(f64, f64)> {
    let n = samples.len();
    if samples.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // P(Bin(n, 1/2) < k) for k = 1, 2, …, as a running sum of C(n, i) / 2^n.
    let mut k = 0;
    let mut tail = 0.0;
    let mut c = 1.0; // C(n, i)
    let total = 2f64.powi(i32::try_from(n).ok()?);
    for i in 0..n / 2 {
        tail += c / total;
        if tail > 0.025 {
            break;
        }
        k = i + 1;
        c = c * (n - i) as f64 / (i + 1) as f64;
    }
    if k == 0 {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    Some((v[k - 1], v[n - k]))
}

/// The `q`-quantile (0..=1, nearest rank) of `samples`; `None` when empty.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * (v.len() - 1) as f64).round() as usize;
    Some(v[rank])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_takes_the_middle_sample() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert!((s.spread_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn even_count_averages_the_middle_pair() {
        let s = Summary::of(&[10.0, 40.0, 20.0, 30.0]).unwrap();
        assert_eq!(s.median, 25.0);
        assert!((s.spread_pct - 120.0).abs() < 1e-9);
    }

    #[test]
    fn single_sample_has_no_spread_and_empty_has_no_summary() {
        let s = Summary::of(&[7.5]).unwrap();
        assert_eq!((s.median, s.spread_pct), (7.5, 0.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn median_interval_follows_the_binomial_ranks() {
        let v = |n: usize| -> Vec<f64> { (1..=n).map(|i| i as f64).rev().collect() };
        // 5 samples: min–max covers only 93.75 %.
        assert_eq!(median_ci95(&v(5)), None);
        // 6 to 8: min–max (P(Bin(n,½) < 1) = 1/2^n ≤ 2.5 %, < 2 is not).
        assert_eq!(median_ci95(&v(6)), Some((1.0, 6.0)));
        assert_eq!(median_ci95(&v(8)), Some((1.0, 8.0)));
        // 9: P(< 2) = 10/512 ≈ 1.95 %, P(< 3) = 46/512 ≈ 9 %: 2nd and 8th.
        assert_eq!(median_ci95(&v(9)), Some((2.0, 8.0)));
        // 12: P(< 3) = 79/4096 ≈ 1.9 %, P(< 4) ≈ 7.3 %: 3rd and 10th.
        assert_eq!(median_ci95(&v(12)), Some((3.0, 10.0)));
        assert_eq!(median_ci95(&[]), None);
        assert_eq!(median_ci95(&[1.0, 2.0, 3.0, 4.0, 5.0, f64::NAN]), None);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(51.0));
        assert_eq!(quantile(&v, 0.9), Some(91.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(101.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
