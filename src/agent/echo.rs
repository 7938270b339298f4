//! The console view of `lineside demo` (and `agent.echo`): subscribes to the agent's own topics on the
//! broker and prints what arrives upstream, so what you see has really crossed the whole pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::config::Echo;

#[derive(Default)]
struct TagSummary {
    n: u64,
    last: String,
    unit: String,
    bad: u64,
    last_seq: u64,
}

pub async fn run(
    mut opts: rumqttc::MqttOptions,
    base: String,
    mode: Echo,
    shutdown: CancellationToken,
) {
    opts.set_client_id(format!("{}-echo", opts.client_id()));
    opts.set_max_packet_size(8 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut summary: BTreeMap<String, TagSummary> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if mode == Echo::All && !summary.is_empty() {
                    let now = chrono::Utc::now().format("%H:%M:%S");
                    for (key, s) in &summary {
                        let bad = if s.bad > 0 { format!("  ({} bad)", s.bad) } else { String::new() };
                        println!("{now}  {key:<32} {:>4} readings/s  last {} {}  seq {}{bad}", s.n, s.last, s.unit, s.last_seq);
                    }
                    summary.clear();
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(format!("{base}/#"), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&p.payload) else { continue };
                    let rel = p.topic.strip_prefix(&base).unwrap_or(&p.topic).trim_start_matches('/');
                    if rel.starts_with("data/") {
                        for r in body["readings"].as_array().into_iter().flatten() {
                            let key = format!("{}/{}", r["device"].as_str().unwrap_or("?"), r["tag"].as_str().unwrap_or("?"));
                            let s = summary.entry(key).or_default();
                            s.n += 1;
                            s.last = r["value"].to_string().trim_matches('"').to_string();
                            s.unit = r["unit"].as_str().unwrap_or("").to_string();
                            s.bad += u64::from(r["quality"] != "good");
                            s.last_seq = r["seq"].as_u64().unwrap_or(0);
                        }
                    } else if rel == "alarms" {
                        println!(">>> ALARM {}", body);
                    } else if rel == "status" {
                        println!("--- status: {} (version {})", body["state"].as_str().unwrap_or("?"), body["version"].as_str().unwrap_or("?"));
                    } else if rel.starts_with("alarms/active/") && mode == Echo::All {
                        println!("--- active alarms {}: {}", rel.trim_start_matches("alarms/active/"), body);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}
