//! Loading and validating a config file, collecting every problem with its file, line and key.
//!
//! Approach: parse each file once with spans (`toml::de::DeTable`) to index every key path to its file and
//! position, merge the files (see `merge`), then deserialize each section and each device on its own so
//! that one mistake does not hide the next. serde_path_to_error gives the key path of each error; the index turns it into a
//! line and column.

use std::path::{Path, PathBuf};

use super::checker::Checker;
use super::error::{ConfigError, ConfigErrors};
use super::merge::{self, Source};
use super::read;
use super::types::{
    AgentConfig, Config, MqttConfig, SparkplugConfig, SparkplugTag, SpcConfig, StoreConfig,
};

/// Reads and validates a config file and the `conf.d/*.toml` files next to it (merged in name order).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let unreadable = |file: &Path, message: String| ConfigError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        key: String::new(),
        message,
    };
    let files = merge::files(path).map_err(|m| ConfigErrors(vec![unreadable(path, m)]))?;
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match read::bounded_text(&file, read::MAX_CONFIG_FILE) {
            Ok(text) => sources.push(Source { path: file, text }),
            Err(e) => errors.push(unreadable(&file, e)),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    load_sources(path, sources, Referenced::Check)
}

/// The files `load` reads for `path`: the file itself, then `conf.d/*.toml` next to it in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    merge::files(path)
}

/// Validates config text; `path` is used in messages and as `Config::source`. No conf.d is read, and
/// neither are the files the config names (passwords, TLS material): `load` checks those too.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    load_sources(
        path,
        vec![Source {
            path: path.to_path_buf(),
            text: text.to_string(),
        }],
        Referenced::Skip,
    )
}

/// Merges and validates the sources; the first is the main file.
/// Whether the files a config names are read and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Referenced {
    Check,
    Skip,
}

fn load_sources(
    path: &Path,
    sources: Vec<Source>,
    referenced: Referenced,
) -> Result<Config, ConfigErrors> {
    let (merged, merge_errors) = merge::merge(&sources);
    let mut cx = Checker::new(&sources, merged.spans);
    let syntax = merge_errors.iter().any(|e| e.syntax);
    for e in merge_errors {
        cx.push_at(e.at, &e.key, e.message);
    }
    if syntax {
        return Err(cx.into_errors());
    }
    let mut root = merged.root;

    cx.check_sections(&root);
    let agent: Option<AgentConfig> = cx.section(&root, "agent", true);
    let store: Option<StoreConfig> = cx.section(&root, "store", false);
    let mqtt: Option<MqttConfig> = cx.section(&root, "mqtt", true);
    let spc: Option<SpcConfig> = cx.section(&root, "spc", false);
    for (key, message) in spc.as_ref().map(SpcConfig::check).unwrap_or_default() {
        cx.push(&format!("spc.{key}"), message);
    }
    let station: Option<crate::config::StationConfig> = cx.section(&root, "station", false);
    if let Some(st) = &station {
        cx.check_station(st);
    }
    let sparkplug: Option<SparkplugConfig> = cx.section(&root, "sparkplug", false);
    if let Some(agent) = &agent {
        cx.check_agent(agent);
        super::devices::apply_device_defaults(&mut root, agent);
    }
    if let Some(store) = &store {
        cx.check_store(store);
    }
    if let Some(mqtt) = &mqtt {
        cx.check_mqtt(mqtt);
    }
    let devices = cx.devices(&root);
    let characteristics = cx.characteristics(&root, &devices);
    if let Some(mqtt) = &mqtt {
        let names: Vec<String> = devices.iter().map(|d| d.name().to_string()).collect();
        cx.check_sparkplug(mqtt, sparkplug.as_ref(), &names);
    }

    // A missing required section has been reported, so both are present whenever there is no error;
    // the check stays an error path rather than a panic.
    let (true, Some(mut agent), Some(mut mqtt)) = (cx.errors.is_empty(), agent, mqtt) else {
        if cx.errors.is_empty() {
            cx.push("", "the [agent] and [mqtt] sections are required");
        }
        return Err(cx.into_errors());
    };
    let mut store = store.unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    agent.state_dir = resolve(base, &agent.state_dir);
    store.path = resolve(&agent.state_dir, &store.path);
    if referenced == Referenced::Check {
        cx.check_state_paths(&agent.state_dir, &store.path);
        cx.check_mqtt_files(&mqtt);
        cx.check_device_files(&root, &agent.state_dir);
    }
    if !cx.errors.is_empty() {
        return Err(cx.into_errors());
    }
    let warnings = std::mem::take(&mut cx.warnings);
    let mut station = station.unwrap_or_default();
    station.users_file = resolve(&agent.state_dir, &station.users_file);
    let device_fingerprints = super::fingerprint::device_fingerprints(&root);
    mqtt.sparkplug = sparkplug.map(|mut sp| {
        sp.edge_node_id.get_or_insert_with(|| agent.id.clone());
        sp.state_dir = agent.state_dir.clone();
        sp.tags = devices
            .iter()
            .flat_map(|d| {
                d.tags().into_iter().map(|t| SparkplugTag {
                    device: d.name().to_string(),
                    tag: t.name,
                    unit: t.unit,
                    numeric: t.numeric,
                })
            })
            .collect();
        sp
    });
    Ok(Config {
        source: path.to_path_buf(),
        hash: hash(&sources),
        files: sources.iter().map(|s| s.path.clone()).collect(),
        device_fingerprints,
        agent,
        store,
        mqtt,
        devices,
        characteristics,
        warnings,
        spc: spc.unwrap_or_default(),
        station,
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// SHA-256 of the config: of the file's bytes for a single file (so the hash of a config without
/// conf.d does not change), else of every file's name and bytes in order.
fn hash(sources: &[Source]) -> String {
    let digest = match sources {
        [one] => ring::digest::digest(&ring::digest::SHA256, one.text.as_bytes()),
        many => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for s in many {
                ctx.update(s.path.as_os_str().as_encoded_bytes());
                ctx.update(&[0]);
                ctx.update(&(s.text.len() as u64).to_le_bytes());
                ctx.update(s.text.as_bytes());
            }
            ctx.finish()
        }
    };
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{EXTRA_DEVICE, GOOD, errors, with_conf_d};

    #[test]
    fn a_good_config_loads() {
        let cfg = load_str(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(cfg.agent.id, "gw1");
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.store.path, PathBuf::from("/tmp/x/lineside.db"));
        assert_eq!(cfg.hash.len(), 64);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = GOOD
            .replace("id = \"gw1\"", "id = 5")
            .replace("interval = \"100ms\"", "interval = \"soon\"")
            + "\n[stroe]\nx = 1\n";
        let errs = errors(&text);
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["agent.id", "device[0].interval", "stroe"],
            "{errs:?}"
        );
        assert!(errs[2].message.contains("did you mean `store`"));
        assert!(errs.iter().all(|e| e.line > 0));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let errs = errors("[agent]\nid = \"x\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn conf_d_files_are_merged_in_name_order() {
        let (_dir, path) = with_conf_d(
            GOOD,
            &[
                ("20-more.toml", EXTRA_DEVICE),
                ("10-agent.toml", "[agent]\nlog_level = \"debug\"\n"),
            ],
        );
        let cfg = load(&path).unwrap();
        assert_eq!(cfg.agent.log_level, "debug");
        let names: Vec<&str> = cfg.devices.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["g1", "g2"]);
        assert_eq!(cfg.files.len(), 3);
        assert!(cfg.files[1].ends_with("conf.d/10-agent.toml"));
        assert_eq!(cfg.device_fingerprints.len(), 2);
        assert_ne!(cfg.hash, load_str(&path, GOOD).unwrap().hash);
    }

    #[test]
    fn an_error_in_a_conf_d_file_names_that_file_and_line() {
        let broken = EXTRA_DEVICE.replace("interval = \"1s\"", "interval = \"soon\"");
        let (_dir, path) = with_conf_d(GOOD, &[("10-line2.toml", &broken)]);
        let errs = load(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert!(e.file.ends_with("conf.d/10-line2.toml"), "{e}");
        assert_eq!((e.line, e.key.as_str()), (5, "device[1].interval"));
    }

    #[test]
    fn a_key_set_in_two_files_and_a_device_defined_twice() {
        let dup = GOOD
            .split("[[device]]")
            .nth(1)
            .map(|d| format!("[agent]\nstate_dir = \"/tmp/y\"\n\n[[device]]{d}"))
            .unwrap();
        let (_dir, path) = with_conf_d(GOOD, &[("10-x.toml", &dup)]);
        let errs = load(&path).unwrap_err().0;
        let twice = errs.iter().find(|e| e.key == "agent.state_dir").unwrap();
        assert!(twice.file.ends_with("10-x.toml"), "{twice}");
        assert_eq!(twice.line, 2);
        assert!(
            twice.message.contains("lineside.toml:4:1"),
            "names the first place: {twice}"
        );
        let name = errs.iter().find(|e| e.key == "device[1].name").unwrap();
        assert!(name.file.ends_with("10-x.toml"), "{name}");
        assert!(
            name.message.contains("(also device[0] in ")
                && name.message.contains("lineside.toml:10:1"),
            "{name}"
        );
    }
}
