//! The retained high-water message `<base>/highwater`: the durable marks of both sequences, kept on the
//! broker as a second copy outside the database.
//!
//! The marks file beside the database (see `crate::store`) catches a database that lost its tail; it
//! cannot catch a database lost *together with* it (a new disk, a restored backup of both). The broker
//! keeps this message for the agent: the forwarder publishes it (retained, QoS 1) after each connection
//! and with each status message when it changed, and at start [`fetch`] reads it back before the store
//! settles its identity. It trails the durable marks by up to `mqtt.status_interval`, so it covers what
//! subscribers saw up to then; the marks file covers the rest. The retained status message cannot serve:
//! the last will replaces it on a crash, and it carries no seq.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;

use super::options;
use crate::bus::Topics;
use crate::config::MqttConfig;
use crate::store::{BrokerMarks, Committed, format_epoch, parse_epoch_hex};

/// How long the start may wait for the broker at most (connect, subscribe, the retained message).
pub const FETCH_LIMIT: Duration = Duration::from_secs(2);
/// After the subscription is acknowledged, how long to wait for the retained message (brokers send it
/// right after the SUBACK; none comes when nothing is retained).
const AFTER_SUBACK: Duration = Duration::from_millis(500);
/// Largest high-water message accepted (it is about 150 bytes).
const MAX_BYTES: usize = 1024;

/// The message body.
pub fn body(agent_id: &str, epoch: u64, marks: Committed) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "agent": agent_id,
        "epoch": format_epoch(epoch),
        "readings": marks.readings,
        "events": marks.events,
        "ts": crate::timefmt::rfc3339(chrono::Utc::now()),
    }))
    .unwrap_or_default()
}

#[derive(Deserialize)]
struct Body {
    agent: String,
    epoch: Option<String>,
    readings: u64,
    events: u64,
}

/// Checks a retained high-water message: size, JSON, our agent id, seqs that are u64.
pub fn parse(agent_id: &str, payload: &[u8]) -> Result<BrokerMarks, String> {
    if payload.len() > MAX_BYTES {
        return Err(format!("{} bytes, more than {MAX_BYTES}", payload.len()));
    }
    let b: Body = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if b.agent != agent_id {
        return Err(format!("it belongs to agent {:?}", b.agent));
    }
    Ok(BrokerMarks {
        epoch: b.epoch.as_deref().and_then(parse_epoch_hex),
        readings: b.readings,
        events: b.events,
    })
}

/// Reads the retained high-water message at start, within [`FETCH_LIMIT`]. None when the broker is
/// down, slow, holds none, or holds one that is not usable (logged): the start goes on with the marks
/// file alone.
pub async fn fetch(cfg: &MqttConfig, agent_id: &str, topics: &Topics) -> Option<BrokerMarks> {
    let opts = match options::base_options(
        cfg,
        &format!("{}-hw", options::client_id(cfg, agent_id)),
    ) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the MQTT client to read the high-water marks retained on the broker; starting with the marks file alone");
            return None;
        }
    };
    let topic = topics.highwater();
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(FETCH_LIMIT, async {
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let ev = match grace {
                Some(until) => match tokio::time::timeout_at(until, eventloop.poll()).await {
                    Ok(ev) => ev,
                    Err(_) => return Ok(None),
                },
                None => eventloop.poll().await,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                        .map_err(|e| e.to_string())?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    grace = Some(tokio::time::Instant::now() + AFTER_SUBACK);
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                    return Ok(Some(p.payload));
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let payload = match outcome {
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) => {
            tracing::info!(
                topic,
                "no high-water marks retained on the broker (a first start, or the broker lost them)"
            );
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, topic, "cannot read the high-water marks retained on the broker; starting with the marks file alone");
            return None;
        }
        Err(_) => {
            tracing::warn!(
                topic,
                limit_s = FETCH_LIMIT.as_secs(),
                "the broker did not hand out the retained high-water marks in time; starting with the marks file alone"
            );
            return None;
        }
    };
    // A clean goodbye if it goes quickly; dropping the client closes the connection otherwise.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
    match parse(agent_id, &payload) {
        Ok(m) => {
            tracing::info!(
                topic,
                readings = m.readings,
                events = m.events,
                epoch = m.epoch.map(format_epoch),
                "high-water marks retained on the broker"
            );
            Some(m)
        }
        Err(e) => {
            tracing::warn!(error = %e, topic, "the high-water message retained on the broker is not usable; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_reads_back_and_foreign_or_bad_messages_are_refused() {
        let b = body(
            "gw1",
            42,
            Committed {
                readings: 10,
                events: 3,
            },
        );
        assert_eq!(
            parse("gw1", &b),
            Ok(BrokerMarks {
                epoch: Some(42),
                readings: 10,
                events: 3
            })
        );
        assert!(parse("gw2", &b).is_err(), "another agent's marks");
        assert!(parse("gw1", b"{\"agent\":\"gw1\",\"readings\":-1,\"events\":0}").is_err());
        assert!(parse("gw1", b"{\"agent\":\"gw1\",\"readings\":1.5,\"events\":0}").is_err());
        assert!(parse("gw1", b"not json").is_err());
        assert!(parse("gw1", &vec![b' '; 2000]).is_err(), "too large");
    }
}
