//! Shared fixtures for the config module's unit tests.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::load::load_str;
use super::merge;

pub(crate) const GOOD: &str = r#"
[agent]
id = "gw1"
state_dir = "/tmp/x"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[device]]
name = "g1"
driver = "sim"
interval = "100ms"
[[device.tag]]
name = "d"
mean = 1.0
sigma = 0.1
"#;

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    load_str(Path::new("t.toml"), text)
        .err()
        .map(|e| e.0)
        .unwrap_or_default()
}
/// Writes `main` and the conf.d files into a fresh directory; returns it and the main file's path.
pub(crate) fn with_conf_d(main: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineside.toml");
    std::fs::write(&path, main).unwrap();
    let d = dir.path().join(merge::CONF_D);
    std::fs::create_dir(&d).unwrap();
    for (name, text) in extra {
        std::fs::write(d.join(name), text).unwrap();
    }
    (dir, path)
}

pub(crate) const EXTRA_DEVICE: &str = "\n[[device]]\nname = \"g2\"\ndriver = \"sim\"\ninterval = \"1s\"\n[[device.tag]]\nname = \"d\"\n";
