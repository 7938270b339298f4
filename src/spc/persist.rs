//! The SPC state file: every chart's snapshot, its frozen limits, the alarm episodes and the latest
//! context values, all taken at one position in the store (`readings_seq`, `events_seq`). After a
//! restart the engine continues from it and replays the readings stored after `readings_seq`.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory), periodically and at
//! shutdown, so a crash leaves either the previous state or the new one, never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use lineside_spc::{FrozenLimits, Snapshot};
use serde::{Deserialize, Serialize};

use super::context::SavedSlot;
use super::episodes::CharAlarms;

/// 2: alarm episodes (the active alarm list of version 1 is not read; the episodes are rebuilt from
/// the stored events).
pub const STATE_VERSION: u32 = 2;

/// Where the state lives in the agent's state directory.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("spc-state.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Every reading up to this seq had been processed.
    pub readings_seq: u64,
    /// The store's highest event seq at that moment: SPC events after it are newer than the state.
    pub events_seq: u64,
    pub slots: Vec<SavedSlot>,
    pub characteristics: BTreeMap<String, CharState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CharState {
    pub snapshot: Snapshot,
    /// The latest limits computed per chart (`chart_per` value), to restore them if the snapshot no
    /// longer fits the configuration.
    pub limits: Vec<FrozenLimits>,
    /// Open episodes, shelving, subgroup numbers, recent points and the rate guard.
    pub alarms: CharAlarms,
}

/// Reads the state; Ok(None) when there is none yet.
pub fn load(path: &Path) -> Result<Option<State>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let state: State = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    if state.version != STATE_VERSION {
        return Err(format!(
            "{} has version {}, this lineside writes {STATE_VERSION}",
            path.display(),
            state.version
        ));
    }
    Ok(Some(state))
}

/// Replaces the state file atomically.
pub fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        assert!(load(&path).unwrap().is_none());
        let state = State {
            version: STATE_VERSION,
            readings_seq: 42,
            events_seq: 3,
            slots: vec![],
            characteristics: BTreeMap::new(),
        };
        save(&path, &serde_json::to_vec(&state).unwrap()).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!((back.readings_seq, back.events_seq), (42, 3));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap_err().contains("cannot parse"));
    }
}
