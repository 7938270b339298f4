//! The Debian package, as dpkg sees it: built by `scripts/package` (cargo-deb, dev profile here), then
//! inspected with `dpkg-deb -c` (contents), `-f`/`-I` (control), `-e` (conffiles, maintainer scripts) and
//! `-x` (the files themselves; the packaged binary runs `--version` and `check` on the packaged config).
//!
//! Ignored in the default run: it needs cargo-deb (scripts/package installs it).
//! `scripts/test` runs it. `LINESIDE_DEB=path/to/lineside.deb` inspects an existing package instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod shipped;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The package under test, built once per test binary.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(p) = std::env::var_os("LINESIDE_DEB") {
            return PathBuf::from(p);
        }
        let mut cmd = Command::new(repo().join("scripts/package"));
        // The dev profile reuses the binary `cargo test` just built: this test checks what the package
        // holds and does, not how fast the binary is (scripts/package alone builds the release package).
        cmd.args(["--fast", "--profile", "dev"]).current_dir(repo());
        // Into a directory of its own: a debug-profile package must not replace the release one that
        // scripts/package wrote to <target>/debian/ under the same name.
        static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
        let out_dir = OUT.get_or_init(|| tempfile::tempdir().unwrap());
        cmd.arg("--output").arg(out_dir.path());
        // scripts/package defaults CARGO_TARGET_DIR like scripts/test; keep whatever this run uses.
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            // …/target/debug/lineside → …/target
            let bin = Path::new(env!("CARGO_BIN_EXE_lineside"));
            if let Some(target) = bin.parent().and_then(Path::parent) {
                cmd.env("CARGO_TARGET_DIR", target);
            }
        }
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cannot run scripts/package");
        assert!(out.status.success(), "scripts/package failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let path = PathBuf::from(stdout.lines().last().expect("no package path").trim());
        assert!(
            path.is_file(),
            "scripts/package printed {path:?}, not a file"
        );
        path
    })
}

fn dpkg_deb(args: &[&OsStr]) -> String {
    let out = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `dpkg-deb -e` into a temporary directory: control, conffiles, maintainer scripts.
fn control_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        dpkg_deb(&["-e".as_ref(), deb().as_os_str(), dir.path().as_os_str()]);
        dir
    })
}

/// `dpkg-deb -x` into a temporary directory: the installed files.
fn root_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        dpkg_deb(&["-x".as_ref(), deb().as_os_str(), dir.path().as_os_str()]);
        dir
    })
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dpkg-deb -c`: (mode, owner, path without the leading `.`) per entry.
fn contents() -> Vec<(String, String, String)> {
    dpkg_deb(&["-c".as_ref(), deb().as_os_str()])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_string();
            (f[0].to_string(), f[1].to_string(), path)
        })
        .collect()
}

fn field(name: &str) -> String {
    dpkg_deb(&["-f".as_ref(), deb().as_os_str(), name.as_ref()])
        .trim()
        .to_string()
}

fn host_arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "needs cargo-deb; run by scripts/test"]
fn contents_binary_unit_snippets_config() {
    let entries = contents();
    let find = |p: &str| {
        entries
            .iter()
            .find(|(_, _, path)| path == p)
            .unwrap_or_else(|| panic!("{p} not in the package:\n{entries:#?}"))
    };
    // cargo-deb writes numeric owners; dpkg-deb shows names for archives that carry them.
    let root = |owner: &str| owner == "0/0" || owner == "root/root";
    let (mode, owner, _) = find("/usr/bin/lineside");
    assert!(mode == "-rwxr-xr-x" && root(owner), "{mode} {owner}");
    for p in [
        "/usr/lib/systemd/system/lineside.service",
        "/usr/lib/sysusers.d/lineside.conf",
        "/usr/lib/tmpfiles.d/lineside.conf",
        "/etc/lineside/lineside.toml",
        "/usr/share/doc/lineside/README.md",
    ] {
        let (mode, owner, _) = find(p);
        assert!(mode == "-rw-r--r--" && root(owner), "{p}: {mode} {owner}");
    }
    for example in std::fs::read_dir(repo().join("config/examples")).unwrap() {
        let name = example.unwrap().file_name();
        find(&format!(
            "/usr/share/doc/lineside/examples/{}",
            name.to_string_lossy()
        ));
    }
    // Nothing under /var or the legacy /lib: the state directory is made by systemd and the postinst.
    for (_, _, path) in &entries {
        assert!(
            path == "/" || path.starts_with("/usr/") || path.starts_with("/etc/"),
            "unexpected path {path}"
        );
    }
}

#[test]
#[ignore = "needs cargo-deb; run by scripts/test"]
fn control_fields_and_conffiles() {
    assert_eq!(field("Package"), "lineside");
    let version = field("Version");
    assert!(
        version.starts_with(env!("CARGO_PKG_VERSION")),
        "Version {version}"
    );
    if std::env::var_os("LINESIDE_DEB").is_none() {
        assert_eq!(field("Architecture"), host_arch());
    }
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers | systemd-sysusers"),
        "Depends: {depends}"
    );
    for lib in ["libssl", "libudev", "libsqlite3", "libcrypto"] {
        assert!(!depends.contains(lib), "Depends on {lib}: {depends}");
    }
    let info = dpkg_deb(&["-I".as_ref(), deb().as_os_str()]);
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(
            info.contains(script),
            "{script} missing in dpkg-deb -I:\n{info}"
        );
    }
    let conffiles = read(control_dir().path().join("conffiles"));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/lineside/lineside.toml"]
    );
}

#[test]
#[ignore = "needs cargo-deb; run by scripts/test"]
fn maintainer_scripts_create_the_user_and_enable_the_unit() {
    let dir = control_dir().path();
    for script in ["postinst", "prerm", "postrm"] {
        let path = dir.join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "{script} mode {mode:o}");
        let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "{script} is not valid sh");
        assert!(
            !read(&path).contains("#DEBHELPER#"),
            "{script}: the token was not replaced"
        );
    }

    let postinst = read(dir.join("postinst"));
    // Positions in the code only: the comments name the same commands.
    let code: String = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let at = |needle: &str| {
        code.find(needle)
            .unwrap_or_else(|| panic!("postinst lacks {needle:?}:\n{postinst}"))
    };
    // The user first (the tmpfiles line names its group), then /etc/lineside, then the unit enabled.
    // Each generated fragment exactly once (a stray token in a comment would duplicate them).
    assert_eq!(
        postinst.matches("systemd-sysusers ${DPKG_ROOT").count(),
        1,
        "{postinst}"
    );
    let user = at("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} lineside.conf");
    let tmpfiles = at("systemd-tmpfiles --create lineside.conf");
    let enable = at("deb-systemd-helper enable lineside.service");
    assert!(user < tmpfiles && tmpfiles < enable, "order:\n{postinst}");
    at("install -d -o lineside -g lineside -m 0750 /var/lib/lineside");
    // Enabled but not started on a first install; an upgrade restarts a running agent only.
    at("deb-systemd-invoke try-restart lineside.service");
    assert!(
        !postinst.contains("_dh_action=start"),
        "a first install must not start the agent:\n{postinst}"
    );
    at("lineside check /etc/lineside/lineside.toml");

    let prerm = read(dir.join("prerm"));
    assert!(
        prerm.contains("\"$1\" = remove")
            && prerm.contains("deb-systemd-invoke stop lineside.service"),
        "prerm stops the agent on removal:\n{prerm}"
    );
    let postrm = read(dir.join("postrm"));
    assert!(
        postrm.contains("deb-systemd-helper purge lineside.service"),
        "{postrm}"
    );
    assert!(postrm.contains("rm -rf /var/lib/lineside"), "{postrm}");
}

#[test]
#[ignore = "needs cargo-deb; run by scripts/test"]
fn packaged_files_are_the_trees_and_the_binary_runs() {
    let root = root_dir().path();
    let same = |packaged: &str, source: &str| {
        assert_eq!(
            read(root.join(packaged)),
            read(repo().join(source)),
            "{packaged} differs from {source}"
        );
    };
    same(
        "usr/lib/systemd/system/lineside.service",
        "systemd/lineside.service",
    );
    same(
        "usr/lib/sysusers.d/lineside.conf",
        "systemd/lineside.sysusers",
    );
    same(
        "usr/lib/tmpfiles.d/lineside.conf",
        "systemd/lineside.tmpfiles",
    );
    same("etc/lineside/lineside.toml", "config/lineside.toml");

    let unit = read(root.join("usr/lib/systemd/system/lineside.service"));
    for line in [
        "ExecStart=/usr/bin/lineside run --config /etc/lineside/lineside.toml",
        "User=lineside",
        "StateDirectory=lineside",
        "WorkingDirectory=/var/lib/lineside",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    let sysusers = read(root.join("usr/lib/sysusers.d/lineside.conf"));
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u lineside ") && l.ends_with(" /var/lib/lineside")),
        "{sysusers}"
    );
    let config = read(root.join("etc/lineside/lineside.toml"));
    assert!(
        config
            .lines()
            .any(|l| l == "state_dir = \"/var/lib/lineside\""),
        "the shipped config's state_dir"
    );

    if field("Architecture") != host_arch() {
        eprintln!("a package for another architecture: not running its binary");
        return;
    }
    let bin = root.join("usr/bin/lineside");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    // A commissioned gateway has the password file the config names; `check` reads it as `run` would.
    let local = tempfile::tempdir().unwrap();
    let config = shipped::materialise(&root.join("etc/lineside/lineside.toml"), local.path());
    let out = Command::new(&bin)
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped default config must pass `lineside check`:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing but libc (and the compiler's runtime) is linked dynamically.
    if let Ok(out) = Command::new("readelf").arg("-d").arg(&bin).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(lib) = line.split("Shared library: [").nth(1) {
                let lib = lib.trim_end_matches(']');
                assert!(
                    ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"]
                        .iter()
                        .any(|ok| lib.starts_with(ok)),
                    "links {lib}"
                );
            }
        }
    }
}
