//! The Modbus test plant: an in-process tokio-modbus server whose units have known memory and knobs to
//! misbehave, and a harness that runs a device through its public `Device::run` and collects its batches.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::{Future, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lineside_drivers::modbus::{self, Area};
use lineside_drivers::{Device, DeviceContext, DeviceMetrics, Reading, ReadingSink, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

// ---------------------------------------------------------------------------------------------------------
// A small plant: several units with known memory, and knobs to make them misbehave.

#[derive(Default, Clone)]
pub struct Mem {
    pub holding: BTreeMap<u16, u16>,
    pub input: BTreeMap<u16, u16>,
    pub coils: BTreeMap<u16, bool>,
    pub discrete: BTreeMap<u16, bool>,
}

impl Mem {
    pub fn put(&mut self, area: Area, address: u16, words: &[u16]) {
        let map = match area {
            Area::HoldingRegister => &mut self.holding,
            _ => &mut self.input,
        };
        for (i, w) in words.iter().enumerate() {
            map.insert(address + i as u16, *w);
        }
    }
}

#[derive(Default)]
pub struct State {
    pub units: HashMap<u8, Mem>,
    /// Units that receive requests but never answer.
    pub silent: HashSet<u8>,
    /// Units that answer after this delay (the server handles one request at a time per connection, as a
    /// serial line does).
    pub slow: HashMap<u8, Duration>,
    /// (unit, area, from, to exclusive): reads touching it get IllegalDataAddress.
    pub refuse: Vec<(u8, Area, u16, u16)>,
    pub requests: HashMap<u8, usize>,
    pub connections: usize,
}

#[derive(Clone, Default)]
pub struct Plant(pub Arc<Mutex<State>>);

impl Plant {
    pub fn with_unit(self, unit: u8, mem: Mem) -> Self {
        self.0.lock().unwrap().units.insert(unit, mem);
        self
    }
    pub fn set_silent(&self, unit: u8, silent: bool) {
        let mut s = self.0.lock().unwrap();
        if silent {
            s.silent.insert(unit);
        } else {
            s.silent.remove(&unit);
        }
    }
    pub fn requests(&self) -> usize {
        self.0.lock().unwrap().requests.values().sum()
    }
    pub fn requests_of(&self, unit: u8) -> usize {
        self.0
            .lock()
            .unwrap()
            .requests
            .get(&unit)
            .copied()
            .unwrap_or(0)
    }
    pub fn connections(&self) -> usize {
        self.0.lock().unwrap().connections
    }
    pub fn put(&self, unit: u8, area: Area, address: u16, words: &[u16]) {
        let mut s = self.0.lock().unwrap();
        s.units.entry(unit).or_default().put(area, address, words);
    }
}

impl tokio_modbus::server::Service for Plant {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        let slow = self.0.lock().unwrap().slow.get(&req.slave).copied();
        let answer = self.answer(req);
        match slow {
            Some(delay) => Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
            }),
            None => Box::pin(ready(answer)),
        }
    }
}

impl Plant {
    pub fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let mut s = self.0.lock().unwrap();
        *s.requests.entry(req.slave).or_default() += 1;
        if s.silent.contains(&req.slave) {
            return Ok(None);
        }
        let (area, addr, cnt) = match req.request {
            Request::ReadCoils(a, c) => (Area::Coil, a, c),
            Request::ReadDiscreteInputs(a, c) => (Area::DiscreteInput, a, c),
            Request::ReadHoldingRegisters(a, c) => (Area::HoldingRegister, a, c),
            Request::ReadInputRegisters(a, c) => (Area::InputRegister, a, c),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let (from, to) = (u32::from(addr), u32::from(addr) + u32::from(cnt));
        if s.refuse.iter().any(|(u, ar, a, b)| {
            *u == req.slave && *ar == area && from < u32::from(*b) && to > u32::from(*a)
        }) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let Some(mem) = s.units.get(&req.slave) else {
            return Ok(None); // no such unit on the line: silence, as on a real bus
        };
        let words = |m: &BTreeMap<u16, u16>| -> Vec<u16> {
            (from..to)
                .map(|a| m.get(&(a as u16)).copied().unwrap_or(0))
                .collect()
        };
        let bits = |m: &BTreeMap<u16, bool>| -> Vec<bool> {
            (from..to)
                .map(|a| m.get(&(a as u16)).copied().unwrap_or(false))
                .collect()
        };
        let response = match area {
            Area::HoldingRegister => Response::ReadHoldingRegisters(words(&mem.holding)),
            Area::InputRegister => Response::ReadInputRegisters(words(&mem.input)),
            Area::Coil => Response::ReadCoils(bits(&mem.coils)),
            Area::DiscreteInput => Response::ReadDiscreteInputs(bits(&mem.discrete)),
        };
        Ok(Some(response))
    }
}

/// Serves Modbus TCP (or RTU over TCP when `rtu`) on `listener` until the handle is aborted; aborting
/// closes every connection.
pub fn serve(plant: Plant, listener: TcpListener, rtu: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let p = plant.clone();
        let on_connected = move |stream: TcpStream, _addr: SocketAddr| {
            let p = p.clone();
            async move {
                p.0.lock().unwrap().connections += 1;
                Ok(Some((p, stream)))
            }
        };
        if rtu {
            let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
            let _ = server.serve(&on_connected, |_e| {}).await;
        } else {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let _ = server.serve(&on_connected, |_e| {}).await;
        }
    })
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

// ---------------------------------------------------------------------------------------------------------
// Running a device through its public `run`, collecting its batches.

pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Running {
    pub rx: mpsc::UnboundedReceiver<Vec<Reading>>,
    pub ctx: DeviceContext,
    pub task: tokio::task::JoinHandle<()>,
}

pub fn start(name: &str, toml_text: &str) -> Running {
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    let dev = modbus::parse(name, table).unwrap_or_else(|e| panic!("{e:?}"));
    start_device(dev)
}

pub fn start_device(dev: Box<dyn Device>) -> Running {
    let (sink, flume_rx) = ReadingSink::bounded(1024);
    let ctx = DeviceContext {
        sink,
        metrics: Arc::new(DeviceMetrics::new(dev.name(), "modbus")),
        shutdown: Default::default(),
        state_dir: std::env::temp_dir(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(batch) = flume_rx.recv_async().await {
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    let task = tokio::spawn(dev.run(ctx.clone()));
    Running { rx, ctx, task }
}

impl Running {
    pub fn metrics(&self) -> &DeviceMetrics {
        &self.ctx.metrics
    }

    pub async fn next_batch(&mut self) -> Vec<Reading> {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("no batch within the patience")
            .expect("device stopped")
    }

    /// Waits for a batch satisfying `pred` (returns it), failing after the patience.
    pub async fn until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&[Reading]) -> bool,
    ) -> Vec<Reading> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(batch)) if pred(&batch) => return batch,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("device stopped while waiting for: {what}"),
                Err(_) => panic!(
                    "timed out waiting for: {what} (last error: {:?})",
                    self.metrics().last_error()
                ),
            }
        }
    }

    pub async fn stop(self) {
        self.ctx.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("run did not return after shutdown")
            .unwrap();
    }
}

pub fn find<'a>(batch: &'a [Reading], tag: &str) -> Option<&'a Reading> {
    batch.iter().find(|r| &*r.tag == tag)
}

pub fn value(batch: &[Reading], tag: &str) -> Option<Value> {
    find(batch, tag).and_then(|r| r.value.clone())
}

pub fn is_good(batch: &[Reading], tag: &str) -> bool {
    find(batch, tag).is_some_and(|r| r.quality.is_good())
}

pub fn reason(batch: &[Reading], tag: &str) -> String {
    find(batch, tag)
        .and_then(|r| r.quality.reason().map(str::to_string))
        .unwrap_or_default()
}
