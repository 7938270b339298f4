//! The shipped configs (config/*.toml, config/examples/*.toml) as tests use them: each copied into a
//! temp directory with the files it names under /etc/lineside (passwords) created there, so that
//! `check` finds what a commissioned gateway would have.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The binary under test: `LINESIDE_BIN` if set (a copy taken right after building: the shared target
/// directory's `debug/lineside` may be replaced by another checkout's build meanwhile), else cargo's.
pub fn bin() -> PathBuf {
    std::env::var_os("LINESIDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lineside")))
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every shipped config whose drivers this build has.
pub fn configs() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![
        root.join("config/lineside.toml"),
        root.join("config/demo.toml"),
        root.join("config/installed.toml"),
    ];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("config/examples"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    examples.sort();
    files.extend(examples);
    let compiled = |driver: &str| match driver {
        "modbus" => cfg!(feature = "modbus"),
        "opcua" => cfg!(feature = "opcua"),
        "serial" => cfg!(feature = "serial"),
        _ => true,
    };
    files
        .into_iter()
        .filter(|f| {
            let body = std::fs::read_to_string(f).unwrap_or_default();
            let missing = ["modbus", "opcua", "serial"]
                .into_iter()
                .any(|d| body.contains(&format!("driver = \"{d}\"")) && !compiled(d));
            if missing {
                eprintln!(
                    "skipping {}: a driver it uses is not in this build",
                    f.display()
                );
            }
            !missing
        })
        .collect()
}

/// The config's text with `/etc/lineside/` and the state directory redirected into `dir`, and every
/// file it names there created (a password, mode 0600).
pub fn localise(text: &str, dir: &Path) -> String {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let state = dir.join("state");
    let mut out = String::new();
    // A config without `state_dir` would use /var/lib/lineside: as root (CI) that creates a database
    // the package test's agent (user lineside) cannot write. Every copy keeps its state in `dir`.
    let has_state_dir = text
        .lines()
        .any(|l| l.trim_start().starts_with("state_dir"));
    for line in text.lines() {
        let mut line = line.replace("/etc/lineside/", &format!("{}/", etc.display()));
        if line.trim_start().starts_with("state_dir") {
            line = format!("state_dir = {:?}", state.display().to_string());
        }
        out.push_str(&line);
        out.push('\n');
        if !has_state_dir && line.trim() == "[agent]" {
            out.push_str(&format!("state_dir = {:?}\n", state.display().to_string()));
        }
    }
    for line in out.lines() {
        let t = line.trim_start();
        if t.starts_with("password_file")
            && let Some(path) = t.split('"').nth(1)
        {
            let p = Path::new(path);
            if p.starts_with(&etc) {
                std::fs::write(p, "secret\n").unwrap();
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    out
}

/// Copies a shipped config into `dir` (see [`localise`]); returns the copy's path.
pub fn materialise(config: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let path = dir.join(config.file_name().unwrap());
    std::fs::write(&path, localise(&text, dir)).unwrap();
    path
}
