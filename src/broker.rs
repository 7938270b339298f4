//! An in-process MQTT broker (rumqttd) for `lineside demo`, trials without a broker, and the tests.
//! Plain TCP on loopback only; production gateways talk to the plant's broker.

use std::net::SocketAddr;

use anyhow::{Context, Result};

/// Starts a broker listening on `addr` on its own thread (rumqttd blocks and has no shutdown API; it
/// lives as long as the process).
pub fn start(addr: SocketAddr) -> Result<()> {
    let config = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 4194304
    max_inflight_count = 500
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config).context("embedded broker config")?;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .context("cannot start the embedded broker thread")?;
    Ok(())
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_ready(addr: SocketAddr) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}

/// A free loopback port (bind to port 0 and release it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}
