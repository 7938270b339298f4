//! Polling throughput and CPU cost of the Modbus driver: 10 in-process Modbus TCP servers, each polled by one
//! device whose tags cover 100 registers (1,000 registers in all), as fast as the servers answer.
//!
//! Run: `cargo bench -p lineside-drivers --features modbus --bench modbus_poll`
//! (`MODBUS_BENCH_SECS` sets the measuring time per scenario, default 5).
//!
//! The servers and the driver run on separate tokio runtimes with named threads, so the CPU time of the
//! driver side (poll loop, tokio-modbus client, decoding, readings) is measured apart from the servers' and
//! the sink's, from /proc/self/task/*/stat (Linux only; std only, no extra crates).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lineside_drivers::{DeviceContext, DeviceMetrics, ReadingSink, modbus};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

const DEVICES: usize = 10;
const REGISTERS_PER_DEVICE: u16 = 100;

/// A server whose registers hold their own address (enough for decoding to do real work).
#[derive(Clone)]
struct Echo;

impl tokio_modbus::server::Service for Echo {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        match req.request {
            Request::ReadHoldingRegisters(a, n) => ready(Ok(Some(Response::ReadHoldingRegisters(
                (0..n).map(|i| a.wrapping_add(i).wrapping_mul(7)).collect(),
            )))),
            _ => ready(Err(ExceptionCode::IllegalFunction)),
        }
    }
}

/// 100 registers of tags (69 tags): 40 u16, 20 f32 (abcd), 5 u32 (cdab), 2 i64 (dcba), 2 i16 with scaling.
fn device_config(addr: SocketAddr, max_registers: u16) -> String {
    let mut t = format!(
        "transport = 'tcp'\naddress = '{addr}'\npoll_interval = '1ms'\ntimeout = '2s'\n\
         max_registers = {max_registers}\n"
    );
    let mut a = 0u16;
    let mut tag = |t: &mut String, ty: &str, extra: &str, width: u16| {
        t.push_str(&format!(
            "[[tag]]\nname = 't{a}'\naddress = {a}\ntype = '{ty}'\n{extra}"
        ));
        a += width;
    };
    for _ in 0..40 {
        tag(&mut t, "u16", "", 1);
    }
    for _ in 0..20 {
        tag(&mut t, "f32", "", 2);
    }
    for _ in 0..5 {
        tag(&mut t, "u32", "order = 'cdab'\n", 2);
    }
    for _ in 0..2 {
        tag(&mut t, "i64", "order = 'dcba'\n", 4);
    }
    for _ in 0..2 {
        tag(&mut t, "i16", "scale = 0.1\noffset = -5.0\n", 1);
    }
    assert_eq!(a, REGISTERS_PER_DEVICE);
    t
}

/// Clock ticks per second for /proc times, from the auxiliary vector (AT_CLKTCK = 17).
fn clock_ticks() -> u64 {
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    for pair in auxv.chunks_exact(16) {
        let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or([0; 8]));
        let value = u64::from_ne_bytes(pair[8..].try_into().unwrap_or([0; 8]));
        if key == 17 && value > 0 {
            return value;
        }
    }
    100
}

/// CPU seconds (user + system) per thread-name prefix, summed over the process's threads.
fn cpu_by_thread() -> HashMap<String, f64> {
    let hz = clock_ticks() as f64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        let group = if comm.starts_with("mb-drv") {
            "driver"
        } else if comm.starts_with("mb-srv") {
            "servers"
        } else {
            "other"
        };
        *out.entry(group.to_string()).or_insert(0.0) += ticks as f64 / hz;
    }
    out
}

fn process_cpu() -> f64 {
    cpu_by_thread().values().sum()
}

fn scenario(label: &str, max_registers: u16, secs: f64) {
    // Servers: their own runtime.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mb-srv")
        .enable_all()
        .build()
        .unwrap();
    let addrs: Vec<SocketAddr> = servers.block_on(async {
        let mut addrs = Vec::new();
        for _ in 0..DEVICES {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(async move {
                let server = tokio_modbus::server::tcp::Server::new(listener);
                let on_connected = |stream, _addr| async move { Ok(Some((Echo, stream))) };
                let _ = server.serve(&on_connected, |_e| {}).await;
            });
        }
        addrs
    });

    // Driver: its own runtime, like the agent's.
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mb-drv")
        .enable_all()
        .build()
        .unwrap();
    let mut metrics = Vec::new();
    let mut tokens = Vec::new();
    let mut sinks = Vec::new();
    let mut requests_per_poll = 0;
    for (i, addr) in addrs.iter().enumerate() {
        let name = format!("plc{i}");
        let table: toml::Table = toml::from_str(&device_config(*addr, max_registers)).unwrap();
        let dev = modbus::ModbusDevice::from_table(&name, table).unwrap();
        requests_per_poll += dev.blocks().len();
        let (sink, rx) = ReadingSink::bounded(256);
        let ctx = DeviceContext {
            sink,
            metrics: Arc::new(DeviceMetrics::new(&name, "modbus")),
            shutdown: Default::default(),
            state_dir: std::env::temp_dir(),
        };
        metrics.push(ctx.metrics.clone());
        tokens.push(ctx.shutdown.clone());
        sinks.push(rx);
        let fut = lineside_drivers::Device::run(Box::new(dev), ctx);
        driver.spawn(fut);
    }
    // The store's side: one thread draining every device's channel.
    let drain = std::thread::Builder::new()
        .name("mb-sink".into())
        .spawn(move || {
            let mut n = 0usize;
            loop {
                let mut open = false;
                let mut got = false;
                for rx in &sinks {
                    open |= !rx.is_disconnected();
                    while let Ok(batch) = rx.try_recv() {
                        n += batch.len();
                        got = true;
                    }
                }
                if !open {
                    break;
                }
                if !got {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            n
        })
        .unwrap();

    let total = |f: &dyn Fn(&DeviceMetrics) -> u64| metrics.iter().map(|m| f(m)).sum::<u64>();
    // Warm up: connections, first polls.
    std::thread::sleep(Duration::from_millis(1000));
    let (r0, q0) = (
        total(&|m| m.readings.load(Ordering::Relaxed)),
        total(&|m| m.requests.load(Ordering::Relaxed)),
    );
    let cpu0 = cpu_by_thread();
    let p0 = process_cpu();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let (r1, q1) = (
        total(&|m| m.readings.load(Ordering::Relaxed)),
        total(&|m| m.requests.load(Ordering::Relaxed)),
    );
    let cpu1 = cpu_by_thread();
    let p1 = process_cpu();
    let bad = total(&|m| m.bad_readings.load(Ordering::Relaxed));
    let errors = total(&|m| m.errors.load(Ordering::Relaxed) + m.timeouts.load(Ordering::Relaxed));

    for t in &tokens {
        t.cancel();
    }
    driver.shutdown_timeout(Duration::from_secs(5));
    servers.shutdown_timeout(Duration::from_secs(5));
    let drained = drain.join().unwrap_or(0);

    let readings = (r1 - r0) as f64;
    let reads = (q1 - q0) as f64;
    let per_k = |cpu: f64| cpu * 1000.0 / readings.max(1.0) * 1e3; // ms per 1,000 readings
    let d = |k: &str| cpu1.get(k).copied().unwrap_or(0.0) - cpu0.get(k).copied().unwrap_or(0.0);
    println!(
        "modbus_poll/{label}: {DEVICES} devices x {REGISTERS_PER_DEVICE} registers, {requests_per_poll} requests per round of polls"
    );
    println!("  reads/s     {:>12.0}", reads / elapsed);
    println!("  readings/s  {:>12.0}", readings / elapsed);
    println!(
        "  polls/s per device {:>5.0}",
        reads / elapsed / requests_per_poll as f64
    );
    println!(
        "  CPU per 1,000 readings: driver {:.3} ms, servers {:.3} ms, whole process {:.3} ms",
        per_k(d("driver")),
        per_k(d("servers")),
        per_k(p1 - p0)
    );
    println!(
        "  CPU use: driver {:.0}%, servers {:.0}%, process {:.0}% of one core",
        d("driver") / elapsed * 100.0,
        d("servers") / elapsed * 100.0,
        (p1 - p0) / elapsed * 100.0
    );
    println!("  bad readings {bad}, errors+timeouts {errors}, readings drained {drained}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it briefly as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("MODBUS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(if smoke { 0.5 } else { 5.0 });
    scenario("batched (1 request of 100 registers per device)", 125, secs);
    scenario("unbatched (max_registers = 10)", 10, secs);
}
