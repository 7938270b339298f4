//! Control chart constants for subgroup sizes 2..=25.
//!
//! d2 (mean of the relative range) and d3 (its standard deviation) have no closed form; they are
//! tabulated here to seven decimals, computed by numerical integration of the distribution of the
//! range of n standard normal variables (Simpson's rule on P(W > w), checked for convergence by
//! halving the step). c4 is computed exactly from the gamma function ratio. Every other factor is
//! derived from d2, d3 and c4 with the textbook formulas, so the chart limits agree with the
//! published tables (Montgomery, *Introduction to Statistical Quality Control*, Appendix VI) to
//! their rounding; `tests/constants.rs` checks that.

/// Smallest and largest subgroup size with tabulated constants.
pub const MIN_N: usize = 2;
pub const MAX_N: usize = 25;

/// (d2, d3) for n = 2..=25.
const D2_D3: [(f64, f64); MAX_N - MIN_N + 1] = [
    (std::f64::consts::FRAC_2_SQRT_PI, 0.8525025),
    (1.6925688, 0.8883680),
    (2.0587507, 0.8798082),
    (2.3259289, 0.8640819),
    (2.5344127, 0.8480397),
    (2.7043568, 0.8332053),
    (2.8472006, 0.8198315),
    (2.9700263, 0.8078343),
    (3.0775055, 0.7970507),
    (3.1728727, 0.7873146),
    (3.2584553, 0.7784783),
    (3.3359804, 0.7704162),
    (3.4067631, 0.7630231),
    (3.4718269, 0.7562114),
    (3.5319828, 0.7499081),
    (3.5878840, 0.7440518),
    (3.6400638, 0.7385909),
    (3.6889630, 0.7334815),
    (3.7349501, 0.7286863),
    (3.7783358, 0.7241733),
    (3.8193846, 0.7199148),
    (3.8583234, 0.7158867),
    (3.8953481, 0.7120682),
    (3.9306292, 0.7084408),
];

/// Constants for one subgroup size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constants {
    pub n: usize,
    /// Expected range over sigma, E(R) / sigma.
    pub d2: f64,
    /// sd(R) / sigma.
    pub d3: f64,
    /// Expected sample standard deviation over sigma, E(S) / sigma.
    pub c4: f64,
    /// X-bar limits from R-bar: 3 / (d2 sqrt n).
    pub a2: f64,
    /// X-bar limits from S-bar: 3 / (c4 sqrt n).
    pub a3: f64,
    /// X-bar limits from sigma: 3 / sqrt n.
    pub a: f64,
    /// R chart lower limit factor on R-bar: max(0, 1 - 3 d3 / d2).
    pub d3_lower: f64,
    /// R chart upper limit factor on R-bar: 1 + 3 d3 / d2.
    pub d4_upper: f64,
    /// S chart lower limit factor on S-bar: max(0, 1 - 3 sqrt(1 - c4^2) / c4).
    pub b3: f64,
    /// S chart upper limit factor on S-bar: 1 + 3 sqrt(1 - c4^2) / c4.
    pub b4: f64,
}

impl Constants {
    /// Constants for subgroup size `n`, or `None` outside 2..=25.
    pub fn for_n(n: usize) -> Option<Constants> {
        let &(d2, d3) = D2_D3.get(n.checked_sub(MIN_N)?)?;
        let c4 = c4(n)?;
        let sqrt_n = (n as f64).sqrt();
        let s_ratio = (1.0 - c4 * c4).sqrt() / c4;
        Some(Constants {
            n,
            d2,
            d3,
            c4,
            a2: 3.0 / (d2 * sqrt_n),
            a3: 3.0 / (c4 * sqrt_n),
            a: 3.0 / sqrt_n,
            d3_lower: (1.0 - 3.0 * d3 / d2).max(0.0),
            d4_upper: 1.0 + 3.0 * d3 / d2,
            b3: (1.0 - 3.0 * s_ratio).max(0.0),
            b4: 1.0 + 3.0 * s_ratio,
        })
    }
}

/// d2 for `n` in 2..=25.
pub fn d2(n: usize) -> Option<f64> {
    D2_D3.get(n.checked_sub(MIN_N)?).map(|p| p.0)
}

/// d3 for `n` in 2..=25.
pub fn d3(n: usize) -> Option<f64> {
    D2_D3.get(n.checked_sub(MIN_N)?).map(|p| p.1)
}

/// c4 = sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2), for n >= 2 (any size, not only <= 25).
///
/// The gamma ratio r(n) = Gamma(n/2) / Gamma((n-1)/2) follows r(2) = 1/sqrt(pi) and
/// r(n+1) = ((n-1)/2) / r(n), which avoids overflow and keeps full precision.
pub fn c4(n: usize) -> Option<f64> {
    if n < 2 {
        return None;
    }
    let mut r = 1.0 / std::f64::consts::PI.sqrt();
    for m in 2..n {
        r = ((m as f64 - 1.0) / 2.0) / r;
    }
    Some((2.0 / (n as f64 - 1.0)).sqrt() * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_small_cases() {
        // d2(2) = 2 / sqrt(pi), d3(2) = sqrt(2 - 4/pi)... (range of two normals = |X1 - X2|).
        let pi = std::f64::consts::PI;
        assert!((d2(2).unwrap() - 2.0 / pi.sqrt()).abs() < 1e-7);
        let var = 2.0 - 4.0 / pi;
        assert!((d3(2).unwrap() - var.sqrt()).abs() < 1e-7);
        // c4(2) = sqrt(2/pi), c4(3) = sqrt(pi)/2.
        assert!((c4(2).unwrap() - (2.0 / pi).sqrt()).abs() < 1e-15);
        assert!((c4(3).unwrap() - pi.sqrt() / 2.0).abs() < 1e-15);
        assert!(Constants::for_n(1).is_none());
        assert!(Constants::for_n(26).is_none());
        assert!(Constants::for_n(25).is_some());
    }
}
