//! The statistics of the `experiments` view: lift of a variant over the control with a 95 %
//! confidence interval and a two-sided z-test, and the sample-ratio-mismatch check.
//!
//! Users are the randomized units, so they are the independent observations: a CTR is a
//! ratio of two per-user sums (clicks / impressions), and its variance comes from the delta
//! method over users. Treating impressions as independent would understate the variance
//! whenever a user sees many lists, and flag differences that are noise.
//!
//! These are fixed-horizon tests: a p-value read once, at a sample size chosen in advance,
//! is honest; watching it at every progress line and stopping at the first p < 0.05 is not.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// z for a two-sided 95 % interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// SRM is flagged below this p-value (GrowthBook's default): with checks at every progress
/// line, a lax threshold would cry wolf.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Per-user sums of a ratio metric `Σ numerator / Σ denominator` over `n` users.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RatioSample {
    pub n: f64,
    pub numerator: f64,
    pub denominator: f64,
    pub numerator_sq: f64,
    pub denominator_sq: f64,
    pub cross: f64,
}

impl RatioSample {
    pub fn ratio(&self) -> Option<f64> {
        (self.denominator > 0.0).then(|| self.numerator / self.denominator)
    }

    /// The delta-method variance of the ratio (needs two users and a denominator).
    pub fn ratio_variance(&self) -> Option<f64> {
        let n = self.n;
        let r = self.ratio()?;
        if n < 2.0 {
            return None;
        }
        let mean_den = self.denominator / n;
        let mean_num = self.numerator / n;
        let var_den = (self.denominator_sq - n * mean_den * mean_den) / (n - 1.0);
        let var_num = (self.numerator_sq - n * mean_num * mean_num) / (n - 1.0);
        let cov = (self.cross - n * mean_num * mean_den) / (n - 1.0);
        let variance = (var_num - 2.0 * r * cov + r * r * var_den) / (n * mean_den * mean_den);
        // Rounding can leave a hair below zero when every user has the same ratio.
        Some(variance.max(0.0))
    }
}

/// A variant against the control: relative lift and its 95 % interval (none when the
/// control's rate is 0), and the p-value of "no difference".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Comparison {
    pub lift: Option<Lift>,
    pub p_value: Option<f64>,
}

/// A relative lift with its 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lift {
    pub lift: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Two-sided p-value of a standard normal statistic.
fn two_sided(z: f64) -> f64 {
    2.0 * Normal::standard().sf(z.abs())
}

/// Relative lift `v / c - 1` of two estimates with their variances (delta method).
fn lift(v: f64, var_v: f64, c: f64, var_c: f64) -> Option<Lift> {
    if c <= 0.0 {
        return None;
    }
    let lift = v / c - 1.0;
    let var_lift = var_v / (c * c) + v * v * var_c / (c * c * c * c);
    let half = Z_95 * var_lift.sqrt();
    Some(Lift {
        lift,
        ci_low: lift - half,
        ci_high: lift + half,
    })
}

/// A ratio metric (CTR) of a variant against the control: Wald z-test on the difference,
/// with delta-method variances. Nothing unless both arms have two users (a variance) and
/// the control's CTR is above 0 (a relative comparison needs a base); no p-value when both
/// variances are 0.
pub fn compare_ratios(variant: &RatioSample, control: &RatioSample) -> Comparison {
    let estimates = variant
        .ratio()
        .zip(variant.ratio_variance())
        .zip(control.ratio().zip(control.ratio_variance()));
    let Some(((v, var_v), (c, var_c))) = estimates else {
        return Comparison::default();
    };
    let Some(lift) = lift(v, var_v, c, var_c) else {
        return Comparison::default();
    };
    let se = (var_v + var_c).sqrt();
    Comparison {
        lift: Some(lift),
        p_value: (se > 0.0).then(|| two_sided((v - c) / se)),
    }
}

/// A proportion of users (conversion) against the control's: pooled two-proportion z-test,
/// and the lift's interval from the unpooled variances.
pub fn compare_proportions((hits_v, n_v): (f64, f64), (hits_c, n_c): (f64, f64)) -> Comparison {
    if n_v < 1.0 || n_c < 1.0 {
        return Comparison::default();
    }
    let (p_v, p_c) = (hits_v / n_v, hits_c / n_c);
    let var = |p: f64, n: f64| p * (1.0 - p) / n;
    let pooled = (hits_v + hits_c) / (n_v + n_c);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_v + 1.0 / n_c)).sqrt();
    Comparison {
        lift: lift(p_v, var(p_v, n_v), p_c, var(p_c, n_c)),
        p_value: (se > 0.0).then(|| two_sided((p_v - p_c) / se)),
    }
}

/// p-value of the chi-square goodness-of-fit test of the observed users per variant against
/// the configured shares (which sum to 1); `None` without users or with one variant.
pub fn srm_p_value(users: &[f64], shares: &[f64]) -> Option<f64> {
    let total: f64 = users.iter().sum();
    if total <= 0.0 || users.len() < 2 {
        return None;
    }
    let chi_square: f64 = users
        .iter()
        .zip(shares)
        .map(|(observed, share)| {
            let expected = total * share;
            (observed - expected).powi(2) / expected
        })
        .sum();
    let degrees = (users.len() - 1) as f64;
    let distribution = ChiSquared::new(degrees).expect("positive degrees of freedom");
    Some(distribution.sf(chi_square))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// Users each with one impression: the delta-method test is the unpooled two-proportion
    /// z-test on impressions (up to the n/(n-1) of the sample variance).
    #[test]
    fn one_impression_per_user_is_a_two_proportion_test() {
        let sample = |n: f64, clicks: f64| RatioSample {
            n,
            numerator: clicks,
            denominator: n,
            numerator_sq: clicks,
            denominator_sq: n,
            cross: clicks,
        };
        let (v, c) = (sample(1000.0, 120.0), sample(1000.0, 100.0));
        let got = compare_ratios(&v, &c);
        let var = |p: f64, n: f64| p * (1.0 - p) / (n - 1.0);
        let se = (var(0.12, 1000.0) + var(0.1, 1000.0)).sqrt();
        let z: f64 = 0.02 / se;
        let lift = got.lift.unwrap();
        assert!(close(lift.lift, 0.2));
        assert!(close(got.p_value.unwrap(), 2.0 * Normal::standard().sf(z)));
        assert!(lift.ci_low < 0.2 && lift.ci_high > 0.2);
    }

    /// Clustered clicks widen the interval: 10 users with 10 impressions each, all clicks
    /// from two users, is weaker evidence than 100 independent users.
    #[test]
    fn clustering_widens_the_interval() {
        let clustered = RatioSample {
            n: 10.0,
            numerator: 20.0,
            denominator: 100.0,
            numerator_sq: 200.0,
            denominator_sq: 1000.0,
            cross: 200.0,
        };
        let independent = RatioSample {
            n: 100.0,
            numerator: 20.0,
            denominator: 100.0,
            numerator_sq: 20.0,
            denominator_sq: 100.0,
            cross: 20.0,
        };
        assert!(clustered.ratio_variance().unwrap() > 3.0 * independent.ratio_variance().unwrap());
    }

    /// Checked against `scipy.stats.chisquare([520, 480], [500, 500])` (p = 0.20590321) and
    /// a textbook pooled z-test.
    #[test]
    fn srm_and_proportions_match_reference_values() {
        let p = srm_p_value(&[520.0, 480.0], &[0.5, 0.5]).unwrap();
        assert!((p - 0.205_903_210_9).abs() < 1e-8, "{p}");
        assert!(srm_p_value(&[5_300.0, 4_700.0], &[0.5, 0.5]).unwrap() < SRM_THRESHOLD);
        assert_eq!(srm_p_value(&[0.0, 0.0], &[0.5, 0.5]), None);
        // 60/500 vs 40/500: pooled p = 0.1, se = sqrt(0.1*0.9*2/500) = 0.018974, z = 2.10819.
        let got = compare_proportions((60.0, 500.0), (40.0, 500.0));
        assert!(close(got.lift.unwrap().lift, 0.5));
        assert!((got.p_value.unwrap() - 0.035_015).abs() < 1e-6);
        // No lift over a control at 0, but the test still tells 3/10 from 0/10.
        let from_zero = compare_proportions((3.0, 10.0), (0.0, 10.0));
        assert_eq!(from_zero.lift, None);
        assert!(from_zero.p_value.unwrap() < 0.1);
    }
}
