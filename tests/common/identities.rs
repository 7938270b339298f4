//! A subscriber that records every reading by its identity `(epoch, seq)` with what it said each time it
//! arrived, so a test can tell whether an identity ever named two different readings; it also keeps
//! the agent alarms and the retained high-water messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::free_port;

#[derive(Default)]
pub struct Identities {
    /// (epoch, seq) → distinct (device, tag, ts, value) seen under it.
    pub readings: HashMap<(String, u64), Vec<String>>,
    pub alarms: Vec<serde_json::Value>,
    pub high_water: Vec<serde_json::Value>,
}

impl Identities {
    /// Up to five identities that named more than one reading.
    pub fn reused(&self) -> Vec<((String, u64), Vec<String>)> {
        self.readings
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .take(5)
            .collect()
    }

    pub fn max_seq(&self, epoch: Option<&str>) -> u64 {
        self.readings
            .keys()
            .filter(|(e, _)| epoch.is_none_or(|x| x == e))
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(0)
    }

    pub fn epochs(&self) -> Vec<String> {
        let mut e: Vec<String> = self.readings.keys().map(|(e, _)| e.clone()).collect();
        e.sort();
        e.dedup();
        e
    }
}

/// Subscribes to everything of agent `test-gw`; returns once the subscription is acknowledged.
pub async fn subscribe_identities(port: u16) -> Arc<Mutex<Identities>> {
    let mut opts = MqttOptions::new(format!("ids-{}", free_port()), "127.0.0.1", port);
    opts.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let ids = Arc::new(Mutex::new(Identities::default()));
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let seen = ids.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe("lineside/test-gw/#", QoS::AtLeastOnce)
                        .await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let mut seen = seen.lock().unwrap();
                    if p.topic.contains("/data/") {
                        let epoch = body["epoch"].as_str().unwrap_or("").to_string();
                        for r in body["readings"].as_array().unwrap() {
                            let what =
                                format!("{} {} {} {}", r["device"], r["tag"], r["ts"], r["value"]);
                            let v = seen
                                .readings
                                .entry((epoch.clone(), r["seq"].as_u64().unwrap()))
                                .or_default();
                            if !v.contains(&what) {
                                v.push(what);
                            }
                        }
                    } else if p.topic.ends_with("/alarms") {
                        seen.alarms.push(body);
                    } else if p.topic.ends_with("/highwater") {
                        seen.high_water.push(body);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), subscribed_rx)
        .await
        .unwrap()
        .unwrap();
    ids
}
