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
    let mut points: BTreeMap<String, TagSummary> = BTreeMap::new();
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
                    for (key, s) in &points {
                        println!("{now}  {key:<32} {:>4} SPC points/s   last {} {}  seq {}", s.n, s.last, s.unit, s.last_seq);
                    }
                    points.clear();
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
                        println!("{}", event_line(&body));
                    } else if rel == "status" {
                        println!("--- status: {} (version {})", body["state"].as_str().unwrap_or("?"), body["version"].as_str().unwrap_or("?"));
                    } else if mode == Echo::All {
                        if let Some(ch) = rel.strip_prefix("alarms/active/") {
                            println!("--- open alarms {ch}: {}", body["count"]);
                        } else if let Some((ch, what)) = rel.strip_prefix("spc/").and_then(|r| r.split_once('/')) {
                            match what {
                                // One line per second for the main chart (not R, MR, S); the alarms
                                // say which points matter.
                                "points" if !matches!(body["chart"].as_str(), Some("r" | "mr" | "s")) => {
                                    let key = format!("{ch} ({})", body["chart"].as_str().unwrap_or("?"));
                                    let s = points.entry(key).or_default();
                                    s.n += 1;
                                    s.last = number(&body["value"]);
                                    s.unit = body["unit"].as_str().unwrap_or("").to_string();
                                    s.last_seq = body["seq"].as_u64().unwrap_or(0);
                                }
                                "capability" => println!("--- capability {ch}: {}", capability_line(&body)),
                                "limits" => println!("--- control limits {ch}: {}", limits_line(&body)),
                                _ => {}
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// A number as an operator reads it: up to 6 significant decimals, no float noise.
fn number(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) => {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        None => "-".into(),
    }
}

fn context_text(ctx: &serde_json::Value) -> String {
    ctx.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("  {k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default()
}

/// One line per event on the alarms topic.
fn event_line(e: &serde_json::Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("?");
    let unit = e["unit"]
        .as_str()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    match s("kind") {
        "spc.violation" => {
            let l = &e["limits"];
            format!(
                ">>> SPC ALARM #{}  {}  {} chart  {} ({})  {}{unit}  [LCL {}  CL {}  UCL {}]  point seq {}{}",
                e["seq"],
                s("characteristic"),
                s("chart"),
                s("rule"),
                s("severity"),
                number(&e["value"]),
                number(&l["lcl"]),
                number(&l["centre"]),
                number(&l["ucl"]),
                e["point_seq"],
                context_text(&e["context"])
            )
        }
        "spc.out_of_spec" => format!(
            ">>> OUT OF SPEC #{}  {}  {}{unit} {} {}  reading seq {}{}",
            e["seq"],
            s("characteristic"),
            number(&e["value"]),
            if s("side") == "above-usl" {
                "above USL"
            } else {
                "below LSL"
            },
            number(&e["limit"]),
            e["point_seq"],
            context_text(&e["context"])
        ),
        "spc.ack" => format!(
            "<<< ACKNOWLEDGED #{}  {}  alarms {}  by {}: cause \"{}\", action \"{}\"",
            e["seq"],
            s("characteristic"),
            e["alarms"],
            s("by"),
            e["cause"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or("")
        ),
        "spc.limits" => format!(
            "--- SPC limits #{}  {}  from {} subgroups ({}): {}",
            e["seq"],
            s("characteristic"),
            e["subgroups"],
            s("reason"),
            limits_text(&e["limits"])
        ),
        "agent.command_rejected" => format!(
            "<<< COMMAND REJECTED #{}: {}  ({})",
            e["seq"],
            s("reason"),
            e["request"]
        ),
        _ => format!(">>> ALARM {e}"),
    }
}

fn limits_text(l: &serde_json::Value) -> String {
    match l["kind"].as_str() {
        Some("variables") => format!(
            "centre {}  sigma {}",
            number(&l["centre"]),
            number(&l["sigma_upper"])
        ),
        Some("proportion") => format!("p-bar {}", number(&l["p_bar"])),
        Some("rate") => format!("c-bar {}", number(&l["c_bar"])),
        _ => "collecting the baseline".into(),
    }
}

fn limits_line(body: &serde_json::Value) -> String {
    let charts: Vec<String> = body["charts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let part = c["partition"]
                .as_str()
                .map(|p| format!("{p}: "))
                .unwrap_or_default();
            format!(
                "{part}{} ({})",
                limits_text(&c["limits"]),
                c["origin"].as_str().unwrap_or("?")
            )
        })
        .collect();
    charts.join("; ")
}

fn capability_line(c: &serde_json::Value) -> String {
    let part = c["partition"]
        .as_str()
        .map(|p| format!("{p}: "))
        .unwrap_or_default();
    let idx = |k: &str| {
        c[k].as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{part}Cp {}  Cpk {}  Pp {}  Ppk {}  Cpm {}  (mean {}, {} values)",
        idx("cp"),
        idx("cpk"),
        idx("pp"),
        idx("ppk"),
        idx("cpm"),
        number(&c["mean"]),
        c["observations"]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spc_events_read_like_sentences() {
        let v = json!({"kind": "spc.violation", "seq": 12, "characteristic": "bore", "chart": "xbar",
            "rule": "nelson-1", "severity": "violation", "value": 74.00712000000001, "unit": "mm",
            "limits": {"centre": 74.0001, "ucl": 74.0067, "lcl": 73.9935}, "point_seq": 801,
            "context": {"lot": "L1", "part": "P-7"}});
        assert_eq!(
            event_line(&v),
            ">>> SPC ALARM #12  bore  xbar chart  nelson-1 (violation)  74.00712 mm  [LCL 73.9935  CL 74.0001  UCL 74.0067]  point seq 801  lot=L1  part=P-7"
        );
        let o = json!({"kind": "spc.out_of_spec", "seq": 13, "characteristic": "bore", "value": 74.0153,
            "side": "above-usl", "limit": 74.015, "point_seq": 805, "context": {}});
        assert_eq!(
            event_line(&o),
            ">>> OUT OF SPEC #13  bore  74.0153 above USL 74.015  reading seq 805"
        );
        let a = json!({"kind": "spc.ack", "seq": 20, "characteristic": "bore", "alarms": [12, 13],
            "by": "j.doe", "cause": "worn hone", "action": "replaced"});
        assert!(event_line(&a).starts_with("<<< ACKNOWLEDGED #20  bore  alarms [12,13]  by j.doe"));
        assert!(event_line(&json!({"kind": "agent.data_dropped"})).starts_with(">>> ALARM {"));
        let cap = json!({"cp": 1.234, "cpk": 1.1, "pp": null, "ppk": 1.0, "cpm": 0.9, "mean": 74.0, "observations": 100});
        assert_eq!(
            capability_line(&cap),
            "Cp 1.23  Cpk 1.10  Pp -  Ppk 1.00  Cpm 0.90  (mean 74, 100 values)"
        );
    }
}
