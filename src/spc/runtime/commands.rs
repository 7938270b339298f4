//! Commands from the command topic and the operator station (one code path): acknowledgement,
//! shelving, out-of-service, recalculation, capability. Every accepted command is stored as an
//! `agent.command` audit event (who, via, when) besides its effects; a rejected one as
//! `agent.command_rejected` with the reason and a few bounded fields of the request.

use chrono::Utc;
use serde_json::{Value, json};

use super::Runtime;
use super::outputs::Effect;
use crate::bus::Command;
use crate::spc::alarms;
use crate::spc::commands::{self, MAX_FIELD, MAX_IDS, Request, Selection, truncate};
use crate::spc::episodes::{AckInfo, Actor};
use crate::timefmt::rfc3339;

/// Rejections answered (stored and logged) per window.
const REJECTIONS_PER_WINDOW: u32 = 20;
const REJECTION_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl Runtime {
    pub(super) async fn on_command(&mut self, cmd: Command) {
        let via = truncate(cmd.via.name(), 40);
        let request = match commands::parse(&cmd.body, &self.policy) {
            Ok(r) => r,
            Err(reason) => return self.reject(&cmd.body, &via, reason).await,
        };
        let now = Utc::now();
        let now_micros = now.timestamp_micros();
        let (characteristic, by) = match &request {
            Request::Ack {
                characteristic, by, ..
            }
            | Request::Shelve {
                characteristic, by, ..
            }
            | Request::Suppression {
                characteristic, by, ..
            }
            | Request::Recalculate { characteristic, by } => {
                (Some(characteristic.clone()), Some(by.clone()))
            }
            Request::Capability { characteristic } => (characteristic.clone(), None),
        };
        let ci = match characteristic.as_deref().map(|c| self.lookup(c)) {
            Some(Err(reason)) => return self.reject(&cmd.body, &via, reason).await,
            Some(Ok(ci)) => Some(ci),
            None => None,
        };
        let who = Actor {
            by: by.unwrap_or_default(),
            via: via.clone(),
            now_micros,
        };
        let mut audit = commands::echo(&cmd.body);
        if let Value::Object(m) = &mut audit {
            m.insert("via".into(), via.clone().into());
        }
        let result: Result<Value, String> = match (request, ci) {
            (
                Request::Ack {
                    episodes,
                    cause,
                    action,
                    note,
                    ..
                },
                Some(ci),
            ) => {
                let ack = AckInfo {
                    by: who.by.clone(),
                    via: via.clone(),
                    at: rfc3339(now),
                    cause,
                    action,
                    note,
                };
                self.acknowledge(ci, &episodes, &ack, now_micros)
            }
            (Request::Shelve { duration, note, .. }, Some(ci)) => {
                let until = now_micros + duration.as_micros().min(i64::MAX as u128) as i64;
                self.suppress(ci, |a, name| {
                    Some(a.suppress(name, "shelved", Some(until), &who, note))
                })
                .map(|_| json!({"until": alarms::ts_string(until)}))
            }
            (Request::Suppression { cmd: c, note, .. }, Some(ci)) => {
                let r = self.suppress(ci, |a, name| match c {
                    "out-of-service" => Some(a.suppress(name, "out-of-service", None, &who, note)),
                    "in-service" => a.unsuppress(name, "out-of-service", "command", &who, note),
                    _ => a.unsuppress(name, "shelved", "command", &who, note),
                });
                r.and_then(|done| {
                    if done {
                        Ok(json!({}))
                    } else {
                        Err(format!(
                            "the characteristic is not {}",
                            if c == "in-service" {
                                "out of service"
                            } else {
                                "shelved"
                            }
                        ))
                    }
                })
            }
            (Request::Recalculate { .. }, Some(ci)) => self.recalculate(ci, &who).await,
            (Request::Capability { .. }, target) => {
                let targets: Vec<usize> = match target {
                    Some(ci) => vec![ci],
                    None => (0..self.chars.len()).collect(),
                };
                let mut any = false;
                for ci in targets {
                    any |= self.publish_capability(ci);
                }
                if any {
                    // A read-only request: answered on the capability topic, not audited.
                    return;
                }
                Err("no capability yet: not enough data".into())
            }
            (_, None) => Err("\"characteristic\" is required".into()),
        };
        match result {
            Ok(extra) => {
                if let (Value::Object(m), Value::Object(x)) = (&mut audit, extra) {
                    m.extend(x);
                }
                tracing::info!(command = %audit, "command carried out");
                self.outputs.effects.push(Effect {
                    ci: ci.unwrap_or(0),
                    kind: alarms::COMMAND,
                    ts: now,
                    body: audit,
                    dedup: None,
                    transition: None,
                    ack_seconds: None,
                });
                self.apply_effects().await;
                self.publish_retained(false);
                self.state_dirty = true;
            }
            Err(reason) => self.reject(&cmd.body, &via, reason).await,
        }
    }

    fn acknowledge(
        &mut self,
        ci: usize,
        sel: &Selection,
        ack: &AckInfo,
        now_micros: i64,
    ) -> Result<Value, String> {
        let ch = self.chars.get_mut(ci).ok_or("no such characteristic")?;
        let ids = match sel {
            Selection::All => ch.alarms.select(None)?,
            Selection::Ids(ids) => ch.alarms.select(Some(ids))?,
        };
        ch.alarms
            .acknowledge(&ids, ack, now_micros, &mut self.outputs.transitions);
        if self.outputs.transitions.is_empty() {
            return Err("the episodes are acknowledged already".into());
        }
        let ts = Utc::now();
        let mut acked = Vec::new();
        for t in self.outputs.transitions.drain(..) {
            acked.extend(t.episode);
            self.outputs
                .effects
                .push(Effect::from_transition(ci, ts, t));
        }
        acked.truncate(MAX_IDS);
        tracing::info!(characteristic = %ch.cfg.spec.name, episodes = ?acked, by = %ack.by, via = %ack.via, "episodes acknowledged");
        Ok(json!({"episodes": acked}))
    }

    /// Applies a shelving change to a characteristic; Ok(false) when it changed nothing.
    fn suppress(
        &mut self,
        ci: usize,
        change: impl FnOnce(
            &mut crate::spc::episodes::CharAlarms,
            &str,
        ) -> Option<crate::spc::episodes::Transition>,
    ) -> Result<bool, String> {
        let ch = self.chars.get_mut(ci).ok_or("no such characteristic")?;
        let name = ch.cfg.spec.name.clone();
        let Some(t) = change(&mut ch.alarms, &name) else {
            return Ok(false);
        };
        ch.active_dirty = true;
        self.outputs.effects.push(Effect {
            dedup: None,
            ..Effect::from_transition(ci, Utc::now(), t)
        });
        Ok(true)
    }

    /// Ends the shelving of every characteristic whose expiry has come.
    pub(super) async fn expire_shelving(&mut self) {
        let now = Utc::now();
        let mut any = false;
        for ch in &mut self.chars {
            let name = ch.cfg.spec.name.clone();
            if let Some(t) = ch.alarms.expire(&name, now.timestamp_micros()) {
                tracing::info!(characteristic = %name, "shelving expired");
                ch.active_dirty = true;
                self.outputs.effects.push(Effect {
                    dedup: None,
                    ..Effect::from_transition(ch.index, now, t)
                });
                any = true;
            }
        }
        if any {
            self.apply_effects().await;
            self.publish_retained(false);
        }
    }

    /// Recomputes the limits from the most recent baseline subgroups. The request is stored with its
    /// position among the readings so that a replay repeats it at the same point.
    async fn recalculate(&mut self, ci: usize, who: &Actor) -> Result<Value, String> {
        let ch = self.chars.get_mut(ci).ok_or("no such characteristic")?;
        self.outputs.out.clear();
        let charts = ch
            .engine
            .recalculate(&mut self.outputs.out)
            .map_err(|e| e.to_string())?;
        let body = json!({
            "characteristic": ch.name(),
            "at_seq": self.position,
            "charts": charts,
            "by": who.by,
            "via": who.via,
        });
        if let Err(e) = self
            .store
            .append_event(alarms::RECALCULATE, Utc::now(), body)
            .await
        {
            tracing::error!(error = %e, "SPC: cannot store a recalculation");
        }
        if let Some(ch) = self.chars.get_mut(ci) {
            ch.handle(false, "recalculate", Utc::now(), &mut self.outputs);
        }
        self.apply_effects().await;
        self.publish_retained(false);
        self.state_dirty = true;
        self.save().await;
        Ok(json!({"charts": charts}))
    }

    /// Answers a request that cannot be carried out with an event upstream can see. Never the
    /// request itself: a few fields of it, each cut to `MAX_FIELD`.
    async fn reject(&mut self, request: &Value, via: &str, reason: String) {
        // At most REJECTIONS_PER_WINDOW answered per window; the rest are counted, and the count is
        // logged when the window ends.
        let now = tokio::time::Instant::now();
        let (start, count, dropped) = &mut self.rejections;
        if now.duration_since(*start) >= REJECTION_WINDOW {
            if *dropped > 0 {
                tracing::warn!(
                    dropped = *dropped,
                    "more rejected commands than answered; the rest were only counted"
                );
            }
            *start = now;
            *count = 0;
            *dropped = 0;
        }
        if *count >= REJECTIONS_PER_WINDOW {
            *dropped += 1;
            return;
        }
        *count += 1;
        let reason = truncate(&reason, 2 * MAX_FIELD);
        let mut body = commands::echo(request);
        if let Value::Object(m) = &mut body {
            m.insert("via".into(), via.into());
            m.insert("reason".into(), reason.clone().into());
        }
        tracing::warn!(command = %body, "command rejected");
        if let Err(e) = self
            .store
            .append_event(alarms::REJECTED, Utc::now(), body)
            .await
        {
            tracing::error!(error = %e, "SPC: cannot store a rejected command");
        }
    }
}
