//! Points per second per core: I-MR with all eight Nelson rules, and X-bar-R with n = 5.
//!
//! Run: `cargo bench -p lineside-spc --bench spc`. Each iteration pushes a block of observations
//! into a phase-II chart (fixed limits) and drains the outputs after every observation, as the
//! agent does; the reported throughput is observations per second.
//!
//! Two groups: `spc` measures wall-clock time; `spc-cpu` measures the benchmark thread's own CPU
//! time (Linux `/proc/thread-self/schedstat`), which is the per-core figure even on a machine
//! shared with other work. Elsewhere `spc-cpu` falls back to wall-clock time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lineside_spc::{Characteristic, CharacteristicSpec, Observation, Output};

const BLOCK: usize = 100_000;

/// Deterministic, roughly normal data (sum of four uniforms from a xorshift generator), with a
/// slow drift so that some rules fire.
fn data(n: usize) -> Vec<f64> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let u = next() + next() + next() + next() - 2.0;
            10.0 + u * 1.7 + ((i / 5000) % 3) as f64 * 0.3
        })
        .collect()
}

fn engine(toml_text: &str) -> Characteristic {
    let spec: CharacteristicSpec = toml::from_str(toml_text).expect("spec");
    Characteristic::new(spec).expect("valid spec")
}

fn run(c: &mut Characteristic, values: &[f64], out: &mut Vec<Output>, seq: &mut u64) -> usize {
    run_ctx(c, values, out, seq, &[])
}

fn run_ctx(
    c: &mut Characteristic,
    values: &[f64],
    out: &mut Vec<Output>,
    seq: &mut u64,
    ctx: &[Option<&str>],
) -> usize {
    let mut n = 0;
    for &v in values {
        *seq += 1;
        let obs = Observation {
            seq: *seq,
            ts_micros: *seq as i64,
            value: v,
            size: None,
            context: ctx,
        };
        c.push(obs, out);
        n += out.len();
        out.clear();
    }
    n
}

/// CPU time of the current thread in nanoseconds (scheduler accounting).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Criterion measurement of the benchmark thread's CPU time.
struct ThreadCpu;

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = (Option<u64>, Instant);
    type Value = f64;

    fn start(&self) -> Self::Intermediate {
        (thread_cpu_ns(), Instant::now())
    }
    fn end(&self, (cpu, wall): Self::Intermediate) -> f64 {
        match (cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64,
            _ => wall.elapsed().as_nanos() as f64,
        }
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn bench(cr: &mut Criterion) {
    bench_in(cr, "spc");
}

fn bench_cpu(cr: &mut Criterion<ThreadCpu>) {
    bench_in(cr, "spc-cpu");
}

fn bench_in<M: Measurement>(cr: &mut Criterion<M>, group: &str) {
    let values = data(BLOCK);
    let mut g = cr.benchmark_group(group);
    g.throughput(Throughput::Elements(BLOCK as u64));

    let mut imr = engine(
        r#"
name = "bench-imr"
source = "d/t"
chart = "i-mr"
rules = "nelson"
limits = { centre = 10.0, sigma = 1.0 }
"#,
    );
    let mut out = Vec::with_capacity(64);
    let mut seq = 0;
    g.bench_function("i-mr nelson 1-8", |b| {
        b.iter(|| black_box(run(&mut imr, black_box(&values), &mut out, &mut seq)))
    });

    // The same with three context keys (part, lot, operator) compared on every reading.
    let mut imr_ctx = engine(
        r#"
name = "bench-imr-ctx"
source = "d/t"
chart = "i-mr"
rules = "nelson"
context = ["part", "lot", "operator"]
usl = 14.0
lsl = 6.0
limits = { centre = 10.0, sigma = 1.0 }
"#,
    );
    let ctx = [Some("P-4711-A"), Some("LOT-2026-0042"), Some("op-17")];
    g.bench_function("i-mr nelson 1-8, 3 context keys, spec limits", |b| {
        b.iter(|| {
            black_box(run_ctx(
                &mut imr_ctx,
                black_box(&values),
                &mut out,
                &mut seq,
                &ctx,
            ))
        })
    });

    let mut xr = engine(
        r#"
name = "bench-xbar-r"
source = "d/t"
chart = "xbar-r"
subgroup_size = 5
rules = "nelson"
limits = { centre = 10.0, sigma = 1.0 }
"#,
    );
    g.bench_function("xbar-r n=5 nelson 1-8", |b| {
        b.iter(|| black_box(run(&mut xr, black_box(&values), &mut out, &mut seq)))
    });
    g.finish();
}

criterion_group!(wall, bench);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
