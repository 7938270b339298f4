//! Values as a gauge shows them: plotted values rounded to the source's resolution (one more
//! decimal for subgroup statistics, two more for limits), and without a known resolution to 12
//! significant digits, so no `0.028999999999996362` reaches an operator. CUSUM sums are in σ and get
//! 4 decimals.

use lineside_spc::{ChartId, PointLimits};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rounding {
    /// Decimals of the source's resolution (0.001 → 3).
    pub decimals: Option<u32>,
}

const CUSUM_DECIMALS: u32 = 4;

impl Rounding {
    pub fn from_resolution(resolution: Option<f64>) -> Rounding {
        Rounding {
            decimals: resolution
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| (-r.log10() - 1e-9).ceil().clamp(0.0, 12.0) as u32),
        }
    }

    fn decimals_for(&self, chart: ChartId, extra: u32) -> Option<u32> {
        match chart {
            ChartId::CusumUpper | ChartId::CusumLower => Some(CUSUM_DECIMALS),
            // Fractions and rates have no source resolution.
            ChartId::P | ChartId::U => None,
            ChartId::Individuals | ChartId::MovingRange | ChartId::Range => {
                self.decimals.map(|d| d + extra)
            }
            ChartId::Np | ChartId::C => Some(extra),
            ChartId::Xbar | ChartId::StdDev | ChartId::Ewma => self.decimals.map(|d| d + 1 + extra),
        }
    }

    /// A plotted value.
    pub fn value(&self, chart: ChartId, v: f64) -> f64 {
        round(v, self.decimals_for(chart, 0))
    }

    /// The limits of a point (one more decimal than its values).
    pub fn limits(&self, chart: ChartId, l: PointLimits) -> PointLimits {
        let d = self.decimals_for(chart, 1);
        PointLimits {
            centre: round(l.centre, d),
            ucl: round(l.ucl, d),
            lcl: l.lcl.map(|x| round(x, d)),
        }
    }
}

/// Rounds through the decimal text, so the result prints as its shortest form.
pub fn round(v: f64, decimals: Option<u32>) -> f64 {
    if !v.is_finite() {
        return v;
    }
    let text = match decimals {
        Some(d) => format!("{v:.*}", d as usize),
        None => format!("{v:.11e}"),
    };
    text.parse().unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_float_noise() {
        assert_eq!(round(0.028999999999996362, None).to_string(), "0.029");
        let r = Rounding::from_resolution(Some(0.001));
        assert_eq!(r.decimals, Some(3));
        assert_eq!(
            r.value(ChartId::Individuals, 74.01230000001).to_string(),
            "74.012"
        );
        assert_eq!(r.value(ChartId::Xbar, 74.012345).to_string(), "74.0123");
        assert_eq!(
            r.value(ChartId::CusumUpper, 5.281234567).to_string(),
            "5.2812"
        );
        assert_eq!(Rounding::from_resolution(Some(0.01)).decimals, Some(2));
        assert_eq!(Rounding::from_resolution(Some(1.0)).decimals, Some(0));
        assert_eq!(Rounding::from_resolution(Some(0.005)).decimals, Some(3));
    }
}
