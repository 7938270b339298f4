//! An in-process async-opcua server for the OPC UA driver tests: variables under a folder in namespace
//! `urn:lineside:test`, endpoints None/None (anonymous) and Basic256Sha256/SignAndEncrypt (user name),
//! bound to 127.0.0.1 on a port chosen by the OS and restartable on the same port.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lineside_drivers::{DeviceContext, DeviceMetrics, Reading, ReadingSink};
use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::{AccessLevel, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerHandle, ServerUserToken};
use opcua::types::{DataTypeId, DataValue, MessageSecurityMode, NodeId, ObjectId, Variant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const NS_URI: &str = "urn:lineside:test";
pub const USER: &str = "operator";
pub const PASSWORD: &str = "correct horse";

/// A variable to create: browse name (also the string node id) and initial value.
#[derive(Clone)]
pub struct Var {
    pub name: String,
    pub value: Variant,
    pub data_type: DataTypeId,
}

impl Var {
    pub fn f64(name: &str, v: f64) -> Self {
        Var {
            name: name.into(),
            value: Variant::Double(v),
            data_type: DataTypeId::Double,
        }
    }
    pub fn i32(name: &str, v: i32) -> Self {
        Var {
            name: name.into(),
            value: Variant::Int32(v),
            data_type: DataTypeId::Int32,
        }
    }
}

pub struct TestServer {
    pub port: u16,
    pub pki_dir: PathBuf,
    pub handle: ServerHandle,
    pub ns: u16,
    vars: Vec<Var>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a fresh port with its PKI under `dir`.
    pub async fn start(dir: &Path, vars: Vec<Var>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, dir.join("server-pki"), vars, true).await
    }

    /// A server that does not trust unknown client certificates (they land in its rejected/).
    pub async fn start_untrusting(dir: &Path, vars: Vec<Var>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, dir.join("server-pki"), vars, false).await
    }

    /// Starts a server on a given port (e.g. one a device has been trying to reach).
    pub async fn start_on_port(dir: &Path, port: u16, vars: Vec<Var>) -> TestServer {
        let listener = bind_again(port).await;
        Self::start_on(listener, dir.join("server-pki"), vars, true).await
    }

    async fn start_on(
        listener: TcpListener,
        pki_dir: PathBuf,
        vars: Vec<Var>,
        trust_clients: bool,
    ) -> TestServer {
        let port = listener.local_addr().unwrap().port();
        let url = format!("opc.tcp://127.0.0.1:{port}/");
        let (server, handle) = ServerBuilder::new()
            .application_name("lineside test server")
            .application_uri("urn:lineside:test-server")
            .product_uri("urn:lineside:test-server")
            .create_sample_keypair(true)
            .pki_dir(&pki_dir)
            .host("127.0.0.1")
            .port(port)
            .discovery_urls(vec![url])
            .trust_client_certs(trust_clients)
            .add_user_token(USER, ServerUserToken::user_pass(USER, PASSWORD))
            .add_endpoint(
                "none",
                (
                    "/",
                    SecurityPolicy::None,
                    MessageSecurityMode::None,
                    &["ANONYMOUS"] as &[&str],
                ),
            )
            .add_endpoint(
                "basic256sha256",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &[USER] as &[&str],
                ),
            )
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NS_URI.to_string(),
                    ..Default::default()
                },
                "lineside-test",
            ))
            .build()
            .unwrap();
        let ns = handle.get_namespace_index(NS_URI).unwrap();
        {
            let nm = handle
                .node_managers()
                .get_of_type::<SimpleNodeManager>()
                .unwrap();
            let mut space = nm.address_space().write();
            let folder = NodeId::new(ns, "Line1");
            space.add_folder(&folder, "Line1", "Line1", &ObjectId::ObjectsFolder.into());
            for v in &vars {
                VariableBuilder::new(
                    &NodeId::new(ns, v.name.as_str()),
                    v.name.as_str(),
                    v.name.as_str(),
                )
                .data_type(v.data_type)
                .value(v.value.clone())
                .access_level(AccessLevel::CURRENT_READ)
                .user_access_level(AccessLevel::CURRENT_READ)
                .organized_by(folder.clone())
                .insert(&mut *space);
            }
        }
        let task = tokio::spawn(async move {
            let _ = server.run_with(listener).await;
        });
        TestServer {
            port,
            pki_dir,
            handle,
            ns,
            vars,
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    pub fn node(&self, name: &str) -> NodeId {
        NodeId::new(self.ns, name)
    }

    /// Sets a variable's value (with a fresh source timestamp) and notifies subscriptions.
    pub fn set(&self, name: &str, value: impl Into<Variant>) {
        let nm = self
            .handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .unwrap();
        nm.set_value(
            self.handle.subscriptions(),
            &self.node(name),
            None,
            DataValue::new_now(value),
        )
        .unwrap();
    }

    /// Stops the server and waits until its listener is closed.
    pub async fn stop(&mut self) {
        self.handle.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Starts a fresh server (new address space, no sessions) on the same port and PKI.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let listener = bind_again(self.port).await;
        Self::start_on(listener, self.pki_dir.clone(), self.vars.clone(), true).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.cancel();
    }
}

/// Binds the port again; retries briefly in case the old socket is still closing.
pub async fn bind_again(port: u16) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("port {port} did not become free again");
}

/// A port that nothing listens on (bound once, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A device context whose readings land in the returned receiver.
pub fn context(state_dir: &Path) -> (DeviceContext, flume::Receiver<Vec<Reading>>) {
    let (sink, rx) = ReadingSink::bounded(4096);
    let ctx = DeviceContext {
        sink,
        metrics: Arc::new(DeviceMetrics::new("dev", "opcua")),
        shutdown: CancellationToken::new(),
        state_dir: state_dir.to_path_buf(),
    };
    (ctx, rx)
}

/// Collects readings until `done` says so or the deadline passes; returns everything seen.
pub async fn collect_until(
    rx: &flume::Receiver<Vec<Reading>>,
    deadline: Duration,
    mut done: impl FnMut(&[Reading]) -> bool,
) -> Vec<Reading> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if done(&seen) {
            return seen;
        }
        match tokio::time::timeout_at(end, rx.recv_async()).await {
            Ok(Ok(batch)) => seen.extend(batch),
            _ => return seen,
        }
    }
}

/// Parses a device from TOML text.
pub fn device(text: &str) -> Box<dyn lineside_drivers::Device> {
    let table: toml::Table = toml::from_str(text).unwrap();
    lineside_drivers::parse_device("dev", "opcua", table).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// A TCP relay in front of the server whose "cable" can be pulled: while cut, bytes are swallowed and new
/// connections are accepted but never answered (no FIN, no RST), like a broken switch or a pulled cable.
/// Connections that saw a cut stay dead after the cable is back, as TCP sessions across a long outage do.
pub struct Relay {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Even = connected, odd = cut; the value counts cuts so a connection knows if it lived through one.
        let cut = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let state = cut.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let born = state.load(Ordering::SeqCst);
                    if born % 2 == 1 {
                        // Cable is out: hold the socket silently.
                        let _keep = down;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let s1 = state.clone();
                    let a = async move {
                        relay(&mut dr, &mut uw, &s1, born).await;
                    };
                    let s2 = state.clone();
                    let b = async move {
                        relay(&mut ur, &mut dw, &s2, born).await;
                    };
                    tokio::join!(a, b);
                });
            }
        });
        Relay { port, cut, task }
    }

    pub fn cut(&self) {
        let v = self.cut.load(std::sync::atomic::Ordering::SeqCst);
        if v.is_multiple_of(2) {
            self.cut.store(v + 1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn heal(&self) {
        let v = self.cut.load(std::sync::atomic::Ordering::SeqCst);
        if v % 2 == 1 {
            self.cut.store(v + 1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    state: &std::sync::atomic::AtomicU64,
    born: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if state.load(std::sync::atomic::Ordering::SeqCst) != born {
                    // Dead connection: never pass the close on either.
                    std::future::pending::<()>().await;
                }
                return;
            }
            Ok(n) => n,
        };
        if state.load(std::sync::atomic::Ordering::SeqCst) != born {
            continue; // swallowed by the broken link
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
