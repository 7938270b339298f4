//! Published textbook data with known answers, one test (or more) per chart type.
//!
//! Where a book prints a value it is asserted with a tolerance that covers the book's rounding;
//! everything else is recomputed here independently, by the textbook formulas, from the data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lineside_spc::{ChartId, Limits, Rule};

/// Montgomery, Introduction to Statistical Quality Control, Table 6.3 (Example 6.1): inside
/// diameters (mm) of forged piston rings, 25 phase-I samples of 5 followed by 15 phase-II samples
/// (Table 6.4). Same values as the `pistonrings` data set of the R package qcc.
const PISTON_RINGS: [[f64; 5]; 40] = [
    [74.030, 74.002, 74.019, 73.992, 74.008],
    [73.995, 73.992, 74.001, 74.011, 74.004],
    [73.988, 74.024, 74.021, 74.005, 74.002],
    [74.002, 73.996, 73.993, 74.015, 74.009],
    [73.992, 74.007, 74.015, 73.989, 74.014],
    [74.009, 73.994, 73.997, 73.985, 73.993],
    [73.995, 74.006, 73.994, 74.000, 74.005],
    [73.985, 74.003, 73.993, 74.015, 73.988],
    [74.008, 73.995, 74.009, 74.005, 74.004],
    [73.998, 74.000, 73.990, 74.007, 73.995],
    [73.994, 73.998, 73.994, 73.995, 73.990],
    [74.004, 74.000, 74.007, 74.000, 73.996],
    [73.983, 74.002, 73.998, 73.997, 74.012],
    [74.006, 73.967, 73.994, 74.000, 73.984],
    [74.012, 74.014, 73.998, 73.999, 74.007],
    [74.000, 73.984, 74.005, 73.998, 73.996],
    [73.994, 74.012, 73.986, 74.005, 74.007],
    [74.006, 74.010, 74.018, 74.003, 74.000],
    [73.984, 74.002, 74.003, 74.005, 73.997],
    [74.000, 74.010, 74.013, 74.020, 74.003],
    [73.988, 74.001, 74.009, 74.005, 73.996],
    [74.004, 73.999, 73.990, 74.006, 74.009],
    [74.010, 73.989, 73.990, 74.009, 74.014],
    [74.015, 74.008, 73.993, 74.000, 74.010],
    [73.982, 73.984, 73.995, 74.017, 74.013],
    [74.012, 74.015, 74.030, 73.986, 74.000],
    [73.995, 74.010, 73.990, 74.015, 74.001],
    [73.987, 73.999, 73.985, 74.000, 73.990],
    [74.008, 74.010, 74.003, 73.991, 74.006],
    [74.003, 74.000, 74.001, 73.986, 73.997],
    [73.994, 74.003, 74.015, 74.020, 74.004],
    [74.008, 74.002, 74.018, 73.995, 74.005],
    [74.001, 74.004, 73.990, 73.996, 73.998],
    [74.015, 74.000, 74.016, 74.025, 74.000],
    [74.030, 74.005, 74.000, 74.016, 74.012],
    [74.001, 73.990, 73.995, 74.010, 74.024],
    [74.015, 74.020, 74.024, 74.005, 74.019],
    [74.035, 74.010, 74.012, 74.015, 74.026],
    [74.017, 74.013, 74.036, 74.025, 74.026],
    [74.010, 74.005, 74.029, 74.000, 74.020],
];

fn flat(rows: &[[f64; 5]]) -> Vec<f64> {
    rows.iter().flatten().copied().collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sample_sd(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt()
}

fn range(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - v.iter().copied().fold(f64::INFINITY, f64::min)
}

const PISTON_SPEC: &str = r#"
name = "ring-id"
source = "gauge/id"
chart = "xbar-r"
subgroup_size = 5
usl = 74.05
lsl = 73.95
target = 74.0
limits = { baseline = 25 }
"#;

#[test]
fn xbar_r_piston_rings() {
    let mut c = engine(PISTON_SPEC);
    let out = run(&mut c, &flat(&PISTON_RINGS));
    let f = frozen(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].subgroups, f[0].excluded, f[0].seq_first, f[0].seq_last),
        (25, 0, 1, 125)
    );
    let Limits::Variables {
        centre,
        sigma_upper,
        ..
    } = f[0].limits
    else {
        panic!()
    };
    // Montgomery: x-double-bar = 74.001, R-bar = 0.023; x-bar chart 73.988 .. 74.014.
    let rbar = mean(
        &PISTON_RINGS[..25]
            .iter()
            .map(|r| range(r))
            .collect::<Vec<_>>(),
    );
    assert_close(centre, 74.001, 0.0005);
    assert_close(rbar, 0.023, 0.0005);
    assert_close(sigma_upper * 2.326, rbar, 1e-4); // sigma = R-bar / d2, d2(5) = 2.326
    let xbar = points(&out, ChartId::Xbar);
    let r = points(&out, ChartId::Range);
    assert_eq!((xbar.len(), r.len()), (40, 40));
    let l = xbar[0].limits.unwrap();
    assert_close(l.ucl, 74.014, 0.0005);
    assert_close(l.lcl.unwrap(), 73.988, 0.0005);
    // Published factors: A2 = 0.577, D3 = 0, D4 = 2.114 (Appendix VI, n = 5).
    assert_close(l.ucl, centre + 0.577 * rbar, 2e-5);
    let rl = r[0].limits.unwrap();
    assert_close(rl.centre, rbar, 1e-4);
    assert_close(rl.ucl, 2.114 * rbar, 1e-4);
    assert_eq!(rl.lcl, Some(0.0));
    // Every plotted statistic matches the data.
    for (i, row) in PISTON_RINGS.iter().enumerate() {
        assert_close(xbar[i].value, mean(row), 1e-9);
        assert_close(r[i].value, range(row), 1e-9);
        assert_eq!(
            (xbar[i].seq_first, xbar[i].seq),
            (i as u64 * 5 + 1, i as u64 * 5 + 5)
        );
    }
    // Beyond the x-bar limits: computed independently; Montgomery's phase-II chart shows samples
    // 37, 38 and 39 above the upper limit.
    let beyond: Vec<u64> = PISTON_RINGS
        .iter()
        .enumerate()
        .filter(|(_, row)| mean(row.as_slice()) > l.ucl || mean(row.as_slice()) < l.lcl.unwrap())
        .map(|(i, _)| i as u64 * 5 + 5)
        .collect();
    assert_eq!(beyond, vec![37 * 5, 38 * 5, 39 * 5]);
    let v1: Vec<u64> = violations(&out, ChartId::Xbar)
        .into_iter()
        .filter(|v| v.1 == Rule::Nelson(1))
        .map(|v| v.0)
        .collect();
    assert_eq!(v1, beyond);
    // No range violation of rule 1 in the data.
    assert!(
        violations(&out, ChartId::Range)
            .iter()
            .all(|v| v.1 != Rule::Nelson(1))
    );
}

#[test]
fn xbar_s_piston_rings() {
    let mut c = engine(&PISTON_SPEC.replace("xbar-r", "xbar-s"));
    let out = run(&mut c, &flat(&PISTON_RINGS));
    let s = points(&out, ChartId::StdDev);
    let xbar = points(&out, ChartId::Xbar);
    // Montgomery Example 6.3 (the same rings on an x-bar and s chart): x-bar chart 73.988 ..
    // 74.014. s-bar is recomputed from the data (0.00924); the chart limits are checked against
    // the published factors below.
    let sbar = mean(
        &PISTON_RINGS[..25]
            .iter()
            .map(|r| sample_sd(r))
            .collect::<Vec<_>>(),
    );
    let xl = xbar[0].limits.unwrap();
    let sl = s[0].limits.unwrap();
    assert_close(xl.ucl, 74.014, 0.0006);
    assert_close(xl.lcl.unwrap(), 73.988, 0.0006);
    assert_eq!(sl.lcl, Some(0.0));
    // Published factors for n = 5: A3 = 1.427, B4 = 2.089, c4 = 0.9400.
    assert_close(xl.ucl - xl.centre, 1.427 * sbar, 2e-5);
    assert_close(sl.ucl, 2.089 * sbar, 2e-5);
    assert_close(sl.centre, sbar, 1e-9);
    for (i, row) in PISTON_RINGS.iter().enumerate() {
        assert_close(s[i].value, sample_sd(row), 1e-12);
    }
}

#[test]
fn capability_piston_rings() {
    let mut c = engine(&format!("{PISTON_SPEC}capability_window = 25"));
    let data = flat(&PISTON_RINGS[..25]);
    run(&mut c, &data);
    let cap = c.capability(None).unwrap();
    assert_eq!((cap.subgroups, cap.observations), (25, 125));
    let rbar = mean(
        &PISTON_RINGS[..25]
            .iter()
            .map(|r| range(r))
            .collect::<Vec<_>>(),
    );
    let xbb = mean(&data);
    let sw = rbar / 2.326;
    let so = sample_sd(&data);
    // Montgomery (Section 8.3, the same rings, USL 74.05, LSL 73.95): sigma-hat = R-bar/d2 = 0.0099
    // and Cp = 1.68 from the rounded R-bar = 0.023; from the unrounded R-bar Cp is 1.70.
    assert_close(cap.sigma_within.unwrap(), 0.0099, 0.0002);
    assert_close(cap.cp.unwrap(), 0.1 / (6.0 * sw), 2e-3);
    assert_close(cap.cp.unwrap(), 1.68, 0.03);
    assert_close(
        cap.cpk.unwrap(),
        (74.05 - xbb).min(xbb - 73.95) / (3.0 * sw),
        2e-3,
    );
    assert_close(cap.mean, xbb, 1e-12);
    assert_close(cap.sigma_overall.unwrap(), so, 1e-12);
    assert_close(cap.pp.unwrap(), 0.1 / (6.0 * so), 1e-9);
    assert_close(
        cap.ppk.unwrap(),
        (74.05 - xbb).min(xbb - 73.95) / (3.0 * so),
        1e-9,
    );
    let tau = (so * so + (xbb - 74.0) * (xbb - 74.0)).sqrt();
    assert_close(cap.cpm.unwrap(), 0.1 / (6.0 * tau), 1e-9);
    // A rolling window: after 15 more subgroups it covers subgroups 16..=40.
    let mut c = engine(&format!("{PISTON_SPEC}capability_window = 25"));
    run(&mut c, &flat(&PISTON_RINGS));
    let cap = c.capability(None).unwrap();
    assert_close(cap.mean, mean(&flat(&PISTON_RINGS[15..])), 1e-12);
    assert_close(
        cap.sigma_overall.unwrap(),
        sample_sd(&flat(&PISTON_RINGS[15..])),
        1e-12,
    );
}

/// NIST/SEMATECH e-Handbook of Statistical Methods, section 6.3.2.2 (individuals control chart):
/// ten flow-rate measurements; published CL 50.81, UCL 55.8041, LCL 45.8159, MR-bar 1.8778,
/// MR UCL 6.1349 (computed with d2 = 1.128, D4 = 3.267).
#[test]
fn individuals_moving_range_flowrate() {
    let data = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1];
    let mut c =
        engine("name = \"f\"\nsource = \"d/f\"\nchart = \"i-mr\"\nlimits = { baseline = 10 }");
    let out = run(&mut c, &data);
    let i = points(&out, ChartId::Individuals);
    let mr = points(&out, ChartId::MovingRange);
    assert_eq!((i.len(), mr.len()), (10, 9));
    assert_eq!(mr[0].seq, 2);
    let il = i[0].limits.unwrap();
    assert_close(il.centre, 50.81, 1e-9);
    // Published limits used d2 = 1.128 (three decimals); ours uses 1.1283792.
    assert_close(il.ucl, 55.8041, 0.002);
    assert_close(il.lcl.unwrap(), 45.8159, 0.002);
    let ml = mr[0].limits.unwrap();
    assert_close(ml.centre, 1.8778, 1e-4);
    // Published with D4 = 3.267; the exact D4(2) is 3.2665.
    assert_close(ml.ucl, 6.1349, 0.002);
    assert_eq!(ml.lcl, Some(0.0));
    assert!(
        violations(&out, ChartId::Individuals)
            .iter()
            .all(|v| v.1 != Rule::Nelson(1))
    );
}

/// Montgomery Table 9.1: 30 observations, the first 20 from N(10, 1), the last 10 after a shift
/// to mean 11 (used for both the tabular CUSUM, Example 9.1, and the EWMA, Example 9.2).
const TABLE_9_1: [f64; 30] = [
    9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34, 9.03, 11.47, 10.51, 9.40,
    10.08, 9.37, 10.62, 10.31, 8.52, 10.84, 10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38, 11.62,
    11.31, 10.52,
];

#[test]
fn tabular_cusum_montgomery_example_9_1() {
    let mut c = engine(
        "name = \"c\"\nsource = \"d/c\"\nchart = \"cusum\"\nlimits = { centre = 10.0, sigma = 1.0 }\ncusum = { k = 0.5, h = 5.0 }",
    );
    let out = run(&mut c, &TABLE_9_1);
    let hi = points(&out, ChartId::CusumUpper);
    let lo = points(&out, ChartId::CusumLower);
    // C+ as printed in Montgomery's Table 9.2 (periods 1..29, two decimals).
    let published = [
        0.0, 0.0, 0.0, 1.16, 2.82, 2.50, 0.04, 1.00, 0.0, 0.0, 0.0, 0.97, 0.98, 0.0, 0.0, 0.0,
        0.12, 0.0, 0.0, 0.34, 0.74, 0.0, 1.79, 2.79, 2.89, 3.47, 3.35, 4.47, 5.28,
    ];
    for (p, want) in hi.iter().zip(published) {
        assert_close(p.value, want, 0.005);
    }
    // C- recomputed by the definition.
    let mut cm: f64 = 0.0;
    for (p, x) in lo.iter().zip(TABLE_9_1) {
        cm = (10.0 - 0.5 - x + cm).max(0.0);
        assert_close(p.value, cm, 1e-9);
    }
    // The first signal is C+ at period 29 (> H = 5), and it stays above at 30.
    let v = violations(&out, ChartId::CusumUpper);
    assert_eq!(v, vec![(29, Rule::Nelson(1)), (30, Rule::Nelson(1))]);
    assert!(violations(&out, ChartId::CusumLower).is_empty());
    assert_eq!(hi[0].limits.unwrap().ucl, 5.0);
}

#[test]
fn cusum_head_start() {
    let mut c = engine(
        "name = \"c\"\nsource = \"d/c\"\nchart = \"cusum\"\nlimits = { centre = 10.0, sigma = 1.0 }\ncusum = { k = 0.5, h = 5.0, head_start = 2.5 }",
    );
    let out = run(&mut c, &[10.0]);
    // C+_1 = max(0, 0 - 0.5 + 2.5) = 2.0
    assert_close(points(&out, ChartId::CusumUpper)[0].value, 2.0, 1e-12);
    assert_close(points(&out, ChartId::CusumLower)[0].value, 2.0, 1e-12);
}

#[test]
fn ewma_montgomery_example_9_2() {
    let mut c = engine(
        "name = \"e\"\nsource = \"d/e\"\nchart = \"ewma\"\nlimits = { centre = 10.0, sigma = 1.0 }\newma = { lambda = 0.1, l = 2.7 }",
    );
    let out = run(&mut c, &TABLE_9_1);
    let p = points(&out, ChartId::Ewma);
    assert_eq!(p.len(), 30);
    // Printed: z1 = 9.945, UCL1 = 10.27, LCL1 = 9.73.
    assert_close(p[0].value, 9.945, 1e-9);
    assert_close(p[0].limits.unwrap().ucl, 10.27, 0.005);
    assert_close(p[0].limits.unwrap().lcl.unwrap(), 9.73, 0.005);
    // The rest by the closed-form limits.
    let (lam, l) = (0.1f64, 2.7f64);
    let mut z = 10.0;
    let mut expected_signals = Vec::new();
    for (i, (pt, x)) in p.iter().zip(TABLE_9_1).enumerate() {
        z = lam * x + (1.0 - lam) * z;
        let w = l * (lam / (2.0 - lam) * (1.0 - (1.0 - lam).powi(2 * (i as i32 + 1)))).sqrt();
        assert_close(pt.value, z, 1e-9);
        assert_close(pt.limits.unwrap().ucl, 10.0 + w, 1e-9);
        if z > 10.0 + w || z < 10.0 - w {
            expected_signals.push((i as u64 + 1, Rule::Nelson(1)));
        }
    }
    assert!(!expected_signals.is_empty());
    assert_eq!(violations(&out, ChartId::Ewma), expected_signals);
}

/// Montgomery Example 7.1 (qcc `orangejuice`): nonconforming cans in 30 samples of n = 50.
/// Published: p-bar = 0.2313, UCL = 0.4102, LCL = 0.0524; samples 15 and 23 above the UCL.
const ORANGE_JUICE: [f64; 30] = [
    12.0, 15.0, 8.0, 10.0, 4.0, 7.0, 16.0, 9.0, 14.0, 10.0, 5.0, 6.0, 17.0, 12.0, 22.0, 8.0, 10.0,
    5.0, 13.0, 11.0, 20.0, 18.0, 24.0, 15.0, 9.0, 12.0, 7.0, 13.0, 9.0, 6.0,
];

#[test]
fn p_chart_orange_juice() {
    let mut c = engine(
        "name = \"p\"\nsource = \"d/rej\"\nchart = \"p\"\nsample_size = 50\nlimits = { baseline = 30 }",
    );
    let out = run(&mut c, &ORANGE_JUICE);
    let p = points(&out, ChartId::P);
    let l = p[0].limits.unwrap();
    assert_close(l.centre, 0.2313, 0.00005);
    assert_close(l.ucl, 0.4102, 0.0001);
    assert_close(l.lcl.unwrap(), 0.0524, 0.0001);
    let v1: Vec<u64> = violations(&out, ChartId::P)
        .into_iter()
        .filter(|v| v.1 == Rule::Nelson(1))
        .map(|v| v.0)
        .collect();
    assert_eq!(v1, vec![15, 23]);
    assert_eq!(p[14].value, 0.44);
    assert_eq!(p[0].sample_size, Some(50.0));
}

#[test]
fn p_chart_excluding_out_of_control_samples() {
    let mut c = engine(
        "name = \"p\"\nsource = \"d/rej\"\nchart = \"p\"\nsample_size = 50\nlimits = { baseline = 30, exclude_out_of_control = true }",
    );
    let out = run(&mut c, &ORANGE_JUICE);
    let f = frozen(&out);
    // Montgomery drops samples 15 and 23 (assignable causes): revised p-bar = 0.2150, UCL 0.3893.
    // Automatic exclusion goes on: sample 21 (0.40) is above that revised UCL, so it is dropped as
    // well (Montgomery keeps it for lack of an assignable cause): p-bar = 281 / 1350.
    let first = 301.0 / 1400.0;
    assert_close(first, 0.2150, 0.00005);
    assert_close(
        first + 3.0 * (first * (1.0 - first) / 50.0).sqrt(),
        0.3893,
        0.0001,
    );
    const { assert!(ORANGE_JUICE[20] / 50.0 > 0.3893) };
    assert_eq!(f[0].excluded, 3);
    assert_eq!(
        f[0].limits,
        Limits::Proportion {
            p_bar: 281.0 / 1350.0
        }
    );
}

#[test]
fn np_chart_orange_juice() {
    let mut c = engine(
        "name = \"np\"\nsource = \"d/rej\"\nchart = \"np\"\nsample_size = 50\nlimits = { baseline = 30 }",
    );
    let out = run(&mut c, &ORANGE_JUICE);
    let p = points(&out, ChartId::Np);
    let l = p[0].limits.unwrap();
    // n p-bar = 50 * 0.2313 = 11.57; limits n p-bar +- 3 sqrt(n p-bar (1 - p-bar)).
    let pb: f64 = 347.0 / 1500.0;
    assert_close(l.centre, 11.57, 0.005);
    assert_close(
        l.ucl,
        50.0 * pb + 3.0 * (50.0 * pb * (1.0 - pb)).sqrt(),
        1e-9,
    );
    assert_close(l.ucl, 50.0 * 0.4102, 0.005);
    let v1: Vec<u64> = violations(&out, ChartId::Np)
        .into_iter()
        .filter(|v| v.1 == Rule::Nelson(1))
        .map(|v| v.0)
        .collect();
    assert_eq!(v1, vec![15, 23]);
}

/// Montgomery Example 7.3 (qcc `circuit`): nonconformities in 26 samples of 100 printed circuit
/// boards. Published: c-bar = 19.85, UCL = 33.22, LCL = 6.48; samples 6 and 20 outside.
#[test]
fn c_chart_circuit_boards() {
    let data = [
        21.0, 24.0, 16.0, 12.0, 15.0, 5.0, 28.0, 20.0, 31.0, 25.0, 20.0, 24.0, 16.0, 19.0, 10.0,
        17.0, 13.0, 22.0, 18.0, 39.0, 30.0, 24.0, 16.0, 19.0, 17.0, 15.0,
    ];
    let mut c =
        engine("name = \"c\"\nsource = \"d/nc\"\nchart = \"c\"\nlimits = { baseline = 26 }");
    let out = run(&mut c, &data);
    let l = points(&out, ChartId::C)[0].limits.unwrap();
    assert_close(l.centre, 19.85, 0.005);
    // The book computes the limits from the rounded c-bar = 19.85 (19.846 exactly).
    assert_close(l.ucl, 33.22, 0.012);
    assert_close(l.lcl.unwrap(), 6.48, 0.012);
    assert_close(l.ucl, 19.846153846 + 3.0 * 19.846153846f64.sqrt(), 1e-6);
    let v1: Vec<u64> = violations(&out, ChartId::C)
        .into_iter()
        .filter(|v| v.1 == Rule::Nelson(1))
        .map(|v| v.0)
        .collect();
    assert_eq!(v1, vec![6, 20]);
}

/// Montgomery's dyed-cloth example (qcc `dyedcloth`): nonconformities in rolls of varying size
/// (inspection units of 50 m^2). Published u-bar = 1.40 (153 / 109); each sample's limits are
/// u-bar +- 3 sqrt(u-bar / n_i).
#[test]
fn u_chart_dyed_cloth_varying_size() {
    let counts = [14.0, 12.0, 20.0, 11.0, 7.0, 10.0, 21.0, 16.0, 19.0, 23.0];
    let units = [10.0, 8.0, 13.0, 10.0, 10.0, 10.0, 12.0, 11.0, 12.0, 13.0];
    let mut c = engine(
        "name = \"u\"\nsource = \"d/nc\"\nchart = \"u\"\nsample_size_source = \"d/units\"\nlimits = { baseline = 10 }",
    );
    let samples: Vec<(f64, f64)> = counts.iter().copied().zip(units.iter().copied()).collect();
    let out = run_sized(&mut c, &samples);
    let p = points(&out, ChartId::U);
    let ubar = 153.0 / 109.0;
    assert_close(ubar, 1.40, 0.005);
    for (i, pt) in p.iter().enumerate() {
        let l = pt.limits.unwrap();
        assert_close(l.centre, ubar, 1e-12);
        assert_close(l.ucl, ubar + 3.0 * (ubar / units[i]).sqrt(), 1e-12);
        assert_close(
            l.lcl.unwrap(),
            (ubar - 3.0 * (ubar / units[i]).sqrt()).max(0.0),
            1e-12,
        );
        assert_close(pt.value, counts[i] / units[i], 1e-12);
    }
    assert!(
        violations(&out, ChartId::U)
            .iter()
            .all(|v| v.1 != Rule::Nelson(1))
    );
}
