//! Which characteristics a reading feeds, and the latest value of every tag used as context (part
//! number, lot, operator) or as a sample size. Values are taken in store order, so the context of a
//! point is the same live and on replay.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use lineside_drivers::{Reading, Value};
use serde::{Deserialize, Serialize};

use crate::config::{CharacteristicConfig, TagRef};

/// What one tag is used for.
#[derive(Debug, Default)]
pub(crate) struct Route {
    /// Characteristics (indices) that chart this tag.
    pub sources: Vec<usize>,
    /// The latest-value slot this tag updates, if it is a context or sample-size tag.
    pub slot: Option<usize>,
}

/// The latest good value of a context or sample-size tag.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Slot {
    pub text: Option<Arc<str>>,
    pub num: Option<f64>,
}

/// Where each characteristic reads its context values and sample size from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inputs {
    pub context: Vec<usize>,
    pub size: Option<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: HashMap<Arc<str>, HashMap<Arc<str>, Route>>,
    slot_tags: Vec<TagRef>,
    pub slots: Vec<Slot>,
    /// Formatting buffer for numeric context values (reused: no allocation unless a value changes).
    scratch: String,
}

impl Router {
    /// Builds the routes of `chars`; returns each characteristic's inputs, in the same order.
    pub fn new(chars: &[CharacteristicConfig]) -> (Router, Vec<Inputs>) {
        let mut router = Router::default();
        let mut inputs = Vec::with_capacity(chars.len());
        for (i, c) in chars.iter().enumerate() {
            router.route_mut(&c.source).sources.push(i);
            let context = c
                .context_sources
                .iter()
                .map(|t| router.slot_of(t))
                .collect();
            let size = c.sample_size_source.as_ref().map(|t| router.slot_of(t));
            inputs.push(Inputs { context, size });
        }
        (router, inputs)
    }

    fn route_mut(&mut self, t: &TagRef) -> &mut Route {
        self.routes
            .entry(Arc::from(t.device.as_str()))
            .or_default()
            .entry(Arc::from(t.tag.as_str()))
            .or_default()
    }

    fn slot_of(&mut self, t: &TagRef) -> usize {
        if let Some(i) = self.slot_tags.iter().position(|s| s == t) {
            return i;
        }
        let i = self.slot_tags.len();
        self.slot_tags.push(t.clone());
        self.slots.push(Slot::default());
        self.route_mut(t).slot = Some(i);
        i
    }

    /// The route of a reading's tag (None for the many tags SPC does not use).
    pub fn route(&self, r: &Reading) -> Option<&Route> {
        self.routes.get(&*r.device)?.get(&*r.tag)
    }

    /// Records a context/sample-size reading. Faulty readings keep the previous value: a lot does not
    /// end because one poll of the PLC failed.
    pub fn update(&mut self, slot: usize, r: &Reading) {
        if !r.quality.is_good() {
            return;
        }
        let Some(value) = &r.value else { return };
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        match value {
            Value::Str(text) => {
                if s.text.as_deref() != Some(&**text) {
                    s.text = Some(text.clone());
                }
                s.num = text.trim().parse().ok();
            }
            other => {
                let Some(x) = other.as_f64() else { return };
                if s.num.map(f64::to_bits) == Some(x.to_bits()) && s.text.is_some() {
                    return;
                }
                self.scratch.clear();
                let _ = match other {
                    Value::Bool(b) => write!(self.scratch, "{b}"),
                    Value::I64(i) => write!(self.scratch, "{i}"),
                    Value::U64(u) => write!(self.scratch, "{u}"),
                    _ => write!(self.scratch, "{x}"),
                };
                s.num = Some(x);
                s.text = Some(Arc::from(self.scratch.as_str()));
            }
        }
    }

    /// The slots as persisted with the SPC state.
    pub fn save(&self) -> Vec<SavedSlot> {
        self.slot_tags
            .iter()
            .zip(&self.slots)
            .map(|(t, s)| SavedSlot {
                tag: t.to_string(),
                text: s.text.as_deref().map(str::to_string),
                num_bits: s.num.map(f64::to_bits),
            })
            .collect()
    }

    /// Restores the slots that still exist in the configuration.
    pub fn restore(&mut self, saved: &[SavedSlot]) {
        for s in saved {
            if let Some(i) = self.slot_tags.iter().position(|t| t.to_string() == s.tag)
                && let Some(slot) = self.slots.get_mut(i)
            {
                slot.text = s.text.as_deref().map(Arc::from);
                slot.num = s.num_bits.map(f64::from_bits);
            }
        }
    }
}

/// A latest value in the state file (floats as bit patterns, so they restore exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedSlot {
    pub tag: String,
    pub text: Option<String>,
    pub num_bits: Option<u64>,
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use lineside_drivers::Quality;

    use super::*;

    fn reading(device: &str, tag: &str, value: Value, quality: Quality) -> Reading {
        Reading {
            device: Arc::from(device),
            tag: Arc::from(tag),
            ts: Utc::now(),
            value: Some(value),
            quality,
            unit: None,
        }
    }

    fn char_cfg(text: &str) -> CharacteristicConfig {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[agent]\nid = \"t\"\nstate_dir = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\
             [[device]]\nname = \"g\"\ndriver = \"sim\"\ninterval = \"1s\"\n\
             [[device.tag]]\nname = \"od\"\n[[device.tag]]\nname = \"part\"\nkind = \"cycle\"\nvalues = [\"a\"]\n\
             [[device.tag]]\nname = \"n\"\nkind = \"count\"\n{text}",
            dir.path().display().to_string()
        );
        let mut c = crate::config::load_str(&dir.path().join("t.toml"), &cfg).unwrap();
        c.characteristics.remove(0)
    }

    #[test]
    fn context_is_the_latest_good_value_in_store_order() {
        let c = char_cfg(
            "[[characteristic]]\nname = \"od\"\nsource = \"g/od\"\nchart = \"i-mr\"\n\
             context = { part = \"g/part\", n = \"g/n\" }\n",
        );
        let (mut router, inputs) = Router::new(std::slice::from_ref(&c));
        assert_eq!(
            c.spec.context,
            ["n", "part"],
            "keys in a stable (sorted) order"
        );
        let od = reading("g", "od", Value::F64(1.0), Quality::Good);
        assert_eq!(router.route(&od).unwrap().sources, [0]);
        assert!(
            router
                .route(&reading("g", "x", Value::F64(1.0), Quality::Good))
                .is_none()
        );

        let part = reading("g", "part", Value::Str(Arc::from("P-1")), Quality::Good);
        let slot = router.route(&part).unwrap().slot.unwrap();
        router.update(slot, &part);
        let n = reading("g", "n", Value::I64(7), Quality::Good);
        let nslot = router.route(&n).unwrap().slot.unwrap();
        router.update(nslot, &n);
        router.update(
            slot,
            &reading(
                "g",
                "part",
                Value::Str(Arc::from("bad")),
                Quality::Bad(Arc::from("x")),
            ),
        );
        let values: Vec<Option<&str>> = inputs[0]
            .context
            .iter()
            .map(|&s| router.slots[s].text.as_deref())
            .collect();
        assert_eq!(values, [Some("7"), Some("P-1")]);

        let saved = router.save();
        let (mut again, _) = Router::new(std::slice::from_ref(&c));
        again.restore(&saved);
        assert_eq!(again.slots, router.slots);
    }
}
