//! The Debian package, as dpkg sees it and as a gateway runs it. `scripts/package --binary --fast`
//! packages the binary this test run was built with (dpkg-deb, nothing compiled, least compression).
//! The package is inspected with `dpkg-deb` (contents, control, md5sums, maintainer scripts, the files
//! themselves) and lintian; then, as root with dpkg, installed on this machine and run exactly as the
//! unit would run it (ExecStartPre, then ExecStart, as the unit's user with its environment), then
//! removed and purged (installed.rs, unit.rs).
//!
//! Ignored in the default run: it needs lintian, and the install test needs root and dpkg (it skips with
//! a message otherwise). `scripts/test` installs lintian and runs it. `LINESIDE_DEB=path/to/lineside.deb`
//! tests an existing package instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod installed;
mod unit;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

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
        // Into a directory of its own: this debug-profile package must not replace the release one
        // scripts/package writes to <target>/debian/ under the same name.
        static OUT: OnceLock<tempfile::TempDir> = OnceLock::new();
        let out_dir = OUT.get_or_init(|| tempfile::tempdir().unwrap());
        let out = Command::new(repo().join("scripts/package"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_lineside"))
            .arg("--fast")
            .arg("--output")
            .arg(out_dir.path())
            .current_dir(repo())
            .stderr(Stdio::inherit())
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

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn dpkg_deb(args: &[&OsStr]) -> String {
    let out = run(Command::new("dpkg-deb").args(args));
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `dpkg-deb -e` into a temporary directory: control, conffiles, md5sums, maintainer scripts.
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
    let out = run(Command::new("dpkg").arg("--print-architecture"));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The man pages the binary under test writes (one per visible command).
fn expected_man_pages() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_lineside"))
        .arg("man")
        .arg("--out")
        .arg(dir.path()));
    assert!(out.status.success(), "lineside man: {}", text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    pages
}

#[test]
#[ignore = "builds the package; run by scripts/test"]
fn contents_binary_unit_snippets_configs_docs_man_pages() {
    let entries = contents();
    let find = |p: &str| {
        entries
            .iter()
            .find(|(_, _, path)| path == p)
            .unwrap_or_else(|| panic!("{p} not in the package:\n{entries:#?}"))
    };
    let root = |owner: &str| owner == "0/0" || owner == "root/root";
    let (mode, owner, _) = find("/usr/bin/lineside");
    assert!(mode == "-rwxr-xr-x" && root(owner), "{mode} {owner}");
    for p in [
        "/usr/lib/systemd/system/lineside.service",
        "/usr/lib/sysusers.d/lineside.conf",
        "/usr/lib/tmpfiles.d/lineside.conf",
        "/etc/lineside/lineside.toml",
        "/usr/share/doc/lineside/README.md",
        "/usr/share/doc/lineside/lineside.toml",
        "/usr/share/doc/lineside/copyright",
        "/usr/share/doc/lineside/changelog.Debian.gz",
        "/usr/share/man/man1/lineside.1.gz",
        "/usr/share/man/man1/lineside-check.1.gz",
        "/usr/share/man/man1/lineside-run.1.gz",
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
    // A page per visible command, and nothing else in man1.
    if std::env::var_os("LINESIDE_DEB").is_none() {
        let mut packaged: Vec<String> = entries
            .iter()
            .filter_map(|(_, _, p)| p.strip_prefix("/usr/share/man/man1/"))
            .filter(|p| !p.is_empty())
            .map(|p| p.trim_end_matches(".gz").to_string())
            .collect();
        packaged.sort();
        assert_eq!(packaged, expected_man_pages());
    }
    // Nothing under /var or the legacy /lib: the state directory is made by systemd and the postinst.
    for (_, owner, path) in &entries {
        assert!(
            path == "/" || path.starts_with("/usr/") || path.starts_with("/etc/"),
            "unexpected path {path}"
        );
        assert!(root(owner), "{path} owned by {owner}");
    }
}

#[test]
#[ignore = "builds the package; run by scripts/test"]
fn control_fields_conffiles_and_md5sums() {
    assert_eq!(field("Package"), "lineside");
    let version = field("Version");
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "Version {version}"
    );
    if std::env::var_os("LINESIDE_DEB").is_none() {
        assert_eq!(field("Architecture"), host_arch());
    }
    let depends = field("Depends");
    assert!(depends.contains("libc6 (>= 2."), "Depends: {depends}");
    // build.rs packs the relative relocations on x86_64 GNU: the binary needs GLIBC_ABI_DT_RELR (2.36),
    // which no symbol version shows, so scripts/package must add it.
    if std::env::var_os("LINESIDE_DEB").is_none()
        && cfg!(all(
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        ))
    {
        assert!(depends.contains("libc6 (>= 2.36)"), "Depends: {depends}");
    }
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers | systemd-sysusers"),
        "Depends: {depends}"
    );
    assert!(
        depends.contains("init-system-helpers"),
        "Depends: {depends}"
    );
    for lib in ["libssl", "libudev", "libsqlite3", "libcrypto"] {
        assert!(!depends.contains(lib), "Depends on {lib}: {depends}");
    }
    let size: u64 = field("Installed-Size").parse().unwrap();
    assert!(size > 1000, "Installed-Size {size}");
    let conffiles = read(control_dir().path().join("conffiles"));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/lineside/lineside.toml"]
    );

    // md5sums: every file but the conffile, with the right sum (`md5sum -c` in the extracted tree).
    let md5sums = read(control_dir().path().join("md5sums"));
    let listed: Vec<&str> = md5sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    let files: Vec<String> = contents()
        .into_iter()
        .filter(|(mode, _, _)| mode.starts_with('-'))
        .map(|(_, _, p)| p.trim_start_matches('/').to_string())
        .filter(|p| p != "etc/lineside/lineside.toml")
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed_sorted.sort();
    assert_eq!(listed_sorted, sorted, "md5sums lists exactly the files");
    let out = run(Command::new("md5sum")
        .args(["-c", "--quiet"])
        .arg(control_dir().path().join("md5sums"))
        .current_dir(root_dir().path()));
    assert!(out.status.success(), "md5sum -c: {}", text(&out));

    // The changelog's top entry is this version.
    let out = run(Command::new("zcat").arg(
        root_dir()
            .path()
            .join("usr/share/doc/lineside/changelog.Debian.gz"),
    ));
    let changelog = String::from_utf8_lossy(&out.stdout);
    assert!(
        changelog.starts_with(&format!("lineside ({version}) ")),
        "{changelog}"
    );
}

#[test]
#[ignore = "builds the package; run by scripts/test"]
fn maintainer_scripts_create_the_user_enable_and_start_the_unit() {
    let dir = control_dir().path();
    for script in ["postinst", "prerm", "postrm"] {
        let path = dir.join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} mode {mode:o}");
        let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "{script} is not valid sh");
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
    // The user first (the tmpfiles line names its group), then /etc/lineside, then the unit enabled and
    // started: a first install starts the agent (the shipped config runs as installed), an upgrade
    // restarts a running agent only.
    let user = at("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} lineside.conf");
    let tmpfiles = at("systemd-tmpfiles --create lineside.conf");
    let enable = at("deb-systemd-helper enable lineside.service");
    let start = at("deb-systemd-invoke start lineside.service");
    assert!(
        user < tmpfiles && tmpfiles < enable && enable < start,
        "order:\n{postinst}"
    );
    at("install -d -o lineside -g lineside -m 0750 /var/lib/lineside");
    at("deb-systemd-invoke try-restart lineside.service");
    // After an upgrade the kept config is checked as the service user, like ExecStartPre does.
    at("runuser -u lineside -- /usr/bin/lineside check /etc/lineside/lineside.toml");
    // One answer for the password file everywhere.
    assert!(postinst.contains("root:lineside, mode 0640"), "{postinst}");
    assert!(
        !postinst.contains("[["),
        "no [[ in a sh script:\n{postinst}"
    );

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
#[ignore = "builds the package; run by scripts/test"]
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
    same("etc/lineside/lineside.toml", "config/installed.toml");
    same(
        "usr/share/doc/lineside/lineside.toml",
        "config/lineside.toml",
    );
    same("usr/share/doc/lineside/copyright", "debian/copyright");

    let unit = read(root.join("usr/lib/systemd/system/lineside.service"));
    for line in [
        "ExecStartPre=/usr/bin/lineside check /etc/lineside/lineside.toml",
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
    // The shipped config needs no device, no secret and no remote broker.
    let config = read(root.join("etc/lineside/lineside.toml"));
    let keys: Vec<&str> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        keys.contains(&"state_dir = \"/var/lib/lineside\""),
        "{config}"
    );
    assert!(
        keys.contains(&"url = \"mqtt://127.0.0.1:1883\""),
        "{config}"
    );
    for absent in ["[[device]]", "password", "username", "embedded_broker"] {
        assert!(
            !keys.iter().any(|k| k.contains(absent)),
            "the shipped config has {absent}:\n{config}"
        );
    }
    // The reference says the same about the password file as the postinst and the README.
    let reference = read(root.join("usr/share/doc/lineside/lineside.toml"));
    assert!(reference.contains("root:lineside, mode 0640"), "reference");
    assert!(!reference.contains("0600"), "reference still says 0600");

    if field("Architecture") != host_arch() {
        eprintln!("a package for another architecture: not running its binary");
        return;
    }
    let bin = root.join("usr/bin/lineside");
    let out = run(Command::new(&bin).arg("--version"));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    // (The reference names a password file that does not exist here; tests/check_cli.rs checks it.)
    let out = run(Command::new(&bin)
        .arg("check")
        .arg(root.join("etc/lineside/lineside.toml")));
    assert!(
        out.status.success(),
        "the shipped config must pass `lineside check`:\n{}",
        text(&out)
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
    // jemalloc serves the C code too (Cargo.toml, glibc only): the binary defines malloc and free, so
    // SQLite's allocations and glibc's own go to it instead of glibc's per-thread arenas.
    let glibc_build = std::env::var_os("LINESIDE_DEB").is_none()
        && cfg!(all(target_os = "linux", target_env = "gnu"));
    let dynamic_symbols = Command::new("readelf")
        .arg("--dyn-syms")
        .arg("-W")
        .arg(&bin)
        .output();
    if let (true, Ok(out)) = (glibc_build, dynamic_symbols) {
        let symbols = String::from_utf8_lossy(&out.stdout);
        for name in ["malloc", "free"] {
            assert!(
                symbols.lines().any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() >= 8 && fields[7] == name && fields[6] != "UND"
                }),
                "the binary does not define {name}: C code would use glibc's allocator"
            );
        }
    }
}

#[test]
#[ignore = "needs lintian; scripts/test installs it"]
fn lintian_reports_no_errors() {
    let Ok(out) = Command::new("lintian")
        .args(["--fail-on", "error", "--display-level", ">=warning"])
        .arg(deb())
        .output()
    else {
        panic!("lintian is not installed: scripts/test installs it (apt-get install lintian)");
    };
    let report = text(&out);
    eprintln!("lintian:\n{report}");
    assert!(out.status.success(), "lintian reports errors:\n{report}");
    assert!(
        !report.lines().any(|l| l.starts_with("E: ")),
        "lintian reports errors:\n{report}"
    );
}
