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
    match s("kind") {
        "spc.alarm" => episode_text(e),
        "spc.suppression" => format!(
            "--- SPC {} #{}  {}  by {} via {}{}{}",
            s("transition").to_uppercase(),
            e["seq"],
            s("characteristic"),
            s("by"),
            s("via"),
            e["until"]
                .as_str()
                .map(|u| format!("  until {u}"))
                .unwrap_or_default(),
            e["note"]
                .as_str()
                .map(|n| format!("  \"{n}\""))
                .unwrap_or_default()
        ),
        "agent.command" => format!(
            "<<< COMMAND #{}  {}  {}  by {} via {}",
            e["seq"],
            s("cmd"),
            e["characteristic"].as_str().unwrap_or(""),
            s("by"),
            s("via")
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
            "<<< COMMAND REJECTED #{}: {}  (cmd {}, by {}, via {})",
            e["seq"],
            s("reason"),
            e["cmd"],
            e["by"],
            s("via")
        ),
        _ => format!(">>> ALARM {e}"),
    }
}

/// An episode transition: a headline, the rules with their text, the points, and on raise the
/// reaction plan.
fn episode_text(e: &serde_json::Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("?");
    let unit = e["unit"]
        .as_str()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let transition = s("transition");
    let what = match e["episode_kind"].as_str() {
        Some("out-of-spec") => format!(
            "OUT OF SPEC ({})",
            if s("side") == "below-lsl" {
                "below LSL"
            } else {
                "above USL"
            }
        ),
        _ => format!("{} chart", e["chart"].as_str().unwrap_or("?")),
    };
    let arrow = match transition {
        "raised" | "updated" => ">>>",
        _ => "<<<",
    };
    let mut out = format!(
        "{arrow} SPC ALARM {}  {}  episode {}  {what}  {}  ({})  count {}",
        transition.to_uppercase(),
        s("characteristic"),
        e["episode"],
        s("state"),
        s("severity"),
        e["count"]
    );
    if let Some(p) = e["partition"].as_str() {
        out.push_str(&format!("  chart of {p}"));
    }
    if matches!(transition, "raised" | "updated") {
        for r in e["rules"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n      {} ({}, {}): {} / {}",
                r["rule"].as_str().unwrap_or("?"),
                r["direction"].as_str().unwrap_or("?"),
                r["severity"].as_str().unwrap_or("?"),
                r["text"]["en"].as_str().unwrap_or("?"),
                r["text"]["zh"].as_str().unwrap_or("?")
            ));
        }
        let l = &e["limits"];
        let limits = if l.is_object() {
            format!(
                "  [LCL {}  CL {}  UCL {}]",
                number(&l["lcl"]),
                number(&l["centre"]),
                number(&l["ucl"])
            )
        } else {
            String::new()
        };
        let all: &[serde_json::Value] = e["points"].as_array().map_or(&[], |v| v.as_slice());
        let points: Vec<String> = all[all.len().saturating_sub(12)..]
            .iter()
            .map(|p| match p["subgroup"].as_u64() {
                Some(n) => format!("#{n} {}", number(&p["value"])),
                None => format!("seq {} {}", p["seq"], number(&p["value"])),
            })
            .collect();
        out.push_str(&format!(
            "\n      last {}{unit}  worst {}{unit}{limits}{}",
            number(&e["last"]["value"]),
            number(&e["worst"]["value"]),
            context_text(&e["context"])
        ));
        if !points.is_empty() {
            out.push_str(&format!("\n      points: {}", points.join(", ")));
        }
    }
    if transition == "raised" {
        for (i, step) in e["reaction_plan"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push_str(&format!(
                "\n      reaction plan {}. {}",
                i + 1,
                step.as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(a) = e["ack"].as_object().filter(|_| transition != "raised") {
        out.push_str(&format!(
            "\n      acknowledged by {} via {}: cause \"{}\", action \"{}\"{}",
            a.get("by").and_then(|v| v.as_str()).unwrap_or("?"),
            a.get("via").and_then(|v| v.as_str()).unwrap_or("?"),
            a.get("cause").and_then(|v| v.as_str()).unwrap_or(""),
            a.get("action").and_then(|v| v.as_str()).unwrap_or(""),
            a.get("note")
                .and_then(|v| v.as_str())
                .map(|n| format!(", note \"{n}\""))
                .unwrap_or_default()
        ));
    }
    out
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
        let raised = json!({"kind": "spc.alarm", "seq": 12, "transition": "raised", "episode": 12818,
            "characteristic": "bore", "episode_kind": "out-of-control", "chart": "xbar", "partition": null,
            "state": "active-unacked", "severity": "violation", "count": 1, "unit": "mm",
            "rules": [{"rule": "nelson-5", "severity": "violation", "direction": "above", "first_subgroup": 57,
                "text": {"en": "2 of 3 points in a row beyond 2σ on the same side of the centre line",
                         "zh": "连续3点中有2点落在中心线同一侧2σ以外"}}],
            "points": [{"subgroup": 56, "seq": 790, "value": 74.0061}, {"subgroup": 57, "seq": 801, "value": 74.00712}],
            "last": {"subgroup": 57, "seq": 801, "value": 74.00712}, "worst": {"subgroup": 57, "seq": 801, "value": 74.00712},
            "limits": {"centre": 74.0001, "ucl": 74.0067, "lcl": 73.9935},
            "context": {"lot": "L1", "part": "P-7"}, "reaction_plan": ["Stop the hone", "Measure 5 bores"], "ack": null});
        assert_eq!(
            event_line(&raised),
            ">>> SPC ALARM RAISED  bore  episode 12818  xbar chart  active-unacked  (violation)  count 1\n      \
             nelson-5 (above, violation): 2 of 3 points in a row beyond 2σ on the same side of the centre line / 连续3点中有2点落在中心线同一侧2σ以外\n      \
             last 74.00712 mm  worst 74.00712 mm  [LCL 73.9935  CL 74.0001  UCL 74.0067]  lot=L1  part=P-7\n      \
             points: #56 74.0061, #57 74.00712\n      \
             reaction plan 1. Stop the hone\n      \
             reaction plan 2. Measure 5 bores"
        );
        let mut acked = raised.clone();
        acked["transition"] = "acknowledged".into();
        acked["state"] = "active-acked".into();
        acked["ack"] =
            json!({"by": "j.doe", "via": "station", "cause": "worn hone", "action": "replaced"});
        let line = event_line(&acked);
        assert!(
            line.starts_with("<<< SPC ALARM ACKNOWLEDGED  bore  episode 12818"),
            "{line}"
        );
        assert!(
            line.contains("acknowledged by j.doe via station: cause \"worn hone\""),
            "{line}"
        );
        assert!(!line.contains("reaction plan"));
        let shelved = json!({"kind": "spc.suppression", "seq": 30, "transition": "shelved", "characteristic": "bore",
            "by": "j.doe", "via": "mqtt", "until": "2026-11-28T20:10:00.000000Z"});
        assert_eq!(
            event_line(&shelved),
            "--- SPC SHELVED #30  bore  by j.doe via mqtt  until 2026-11-28T20:10:00.000000Z"
        );
        assert!(event_line(&json!({"kind": "agent.data_dropped"})).starts_with(">>> ALARM {"));
        let cap = json!({"cp": 1.234, "cpk": 1.1, "pp": null, "ppk": 1.0, "cpm": 0.9, "mean": 74.0, "observations": 100});
        assert_eq!(
            capability_line(&cap),
            "Cp 1.23  Cpk 1.10  Pp -  Ppk 1.00  Cpm 0.90  (mean 74, 100 values)"
        );
    }
}
