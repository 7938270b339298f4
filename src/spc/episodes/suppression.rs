//! Shelving (until an expiry) and out-of-service of a characteristic.

use serde_json::{Value, json};

use super::CharAlarms;
use super::model::{Actor, SUPPRESSION, Suppression, Transition};
use crate::spc::alarms::ts_string;

impl CharAlarms {
    /// Shelves (with `until`) or takes out of service (`until` None, `state` "out-of-service").
    pub fn suppress(
        &mut self,
        ch: &str,
        state: &str,
        until_micros: Option<i64>,
        who: &Actor,
        note: Option<String>,
    ) -> Transition {
        self.suppression = Some(Suppression {
            state: state.to_string(),
            until: until_micros.map(ts_string),
            until_micros,
            by: who.by.clone(),
            via: who.via.clone(),
            note: note.clone(),
        });
        let transition = if state == "shelved" {
            "shelved"
        } else {
            "out-of-service"
        };
        self.suppression_event(ch, transition, "command", who, note)
    }

    /// Ends shelving or out-of-service; None if the characteristic was not in that state.
    pub fn unsuppress(
        &mut self,
        ch: &str,
        state: &str,
        reason: &str,
        who: &Actor,
        note: Option<String>,
    ) -> Option<Transition> {
        if self.suppression.as_ref().is_none_or(|s| s.state != state) {
            return None;
        }
        let until = self.suppression.take().and_then(|s| s.until);
        let transition = if state == "shelved" {
            "unshelved"
        } else {
            "in-service"
        };
        let mut t = self.suppression_event(ch, transition, reason, who, note);
        if let (Some(u), Value::Object(m)) = (until, &mut t.body) {
            m.insert("until".into(), u.into());
        }
        Some(t)
    }

    /// Shelving that expired at `now`.
    pub fn expire(&mut self, ch: &str, now_micros: i64) -> Option<Transition> {
        let due = self.suppression.as_ref().is_some_and(|s| {
            s.state == "shelved" && s.until_micros.is_some_and(|u| u <= now_micros)
        });
        if !due {
            return None;
        }
        let who = Actor {
            by: "lineside".into(),
            via: "expiry".into(),
            now_micros,
        };
        self.unsuppress(ch, "shelved", "expired", &who, None)
    }

    fn suppression_event(
        &self,
        ch: &str,
        transition: &'static str,
        reason: &str,
        who: &Actor,
        note: Option<String>,
    ) -> Transition {
        let mut body = json!({
            "characteristic": ch,
            "transition": transition,
            "reason": reason,
            "by": who.by,
            "via": who.via,
            "note": note,
            "episodes": self.open.iter().map(|e| e.episode).take(100).collect::<Vec<_>>(),
        });
        if let (Some(Some(u)), Value::Object(m)) =
            (self.suppression.as_ref().map(|s| &s.until), &mut body)
        {
            m.insert("until".into(), u.clone().into());
        }
        Transition {
            kind: SUPPRESSION,
            transition,
            episode: None,
            dedup: format!("{SUPPRESSION}|{ch}|{transition}|{}", who.now_micros),
            body,
            ack_seconds: None,
        }
    }
}
