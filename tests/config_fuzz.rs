//! Mutation fuzzing of the shipped configs: `lineside check` never panics or hangs, and whatever it
//! passes is a config `run` starts with.
//!
//! Every shipped config (config/*.toml, config/examples/*.toml) is copied into a temp directory (its
//! /etc/lineside files created there) and mutated with a seeded generator: lines deleted, duplicated,
//! uncommented or cut short; numbers set to 0, -1, huge, NaN, floats; durations to "0s" or "99999999d";
//! sizes to 0 or petabytes; strings to empty, 140 kB or odd unicode; values swapped for other types; and
//! special files dropped into conf.d (a FIFO, a symlink to /dev/zero, a directory, an oversized file).
//!
//! Three layers, fastest first:
//! 1. in-process, thousands of cases: `config::load` never panics, and whenever it accepts a config,
//!    `agent::validate_for_run` (the start-up validation `run` does, and `check` repeats) accepts it too;
//! 2. the real `lineside check` binary on a sample, with a time limit: exit 0 or 2, never a panic or hang;
//! 3. a handful of real `lineside run` starts of mutated configs `check` passed: the agent comes up,
//!    stays up, and stops cleanly on SIGTERM.
//!
//! The seed is printed; replay or extend with
//! `LINESIDE_FUZZ_SEED=<seed> LINESIDE_FUZZ_CASES=<n> cargo test --test config_fuzz -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod shipped;

/// In-process cases by default (each is a load of a whole config).
const CASES: usize = 3000;
/// Cases run through the real `check` binary.
const BINARY_CASES: usize = 120;
/// Real `run` starts of configs `check` passed.
const RUNS: usize = 4;
/// Longest one `check` may take before it counts as hung.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

fn seed() -> u64 {
    match std::env::var("LINESIDE_FUZZ_SEED") {
        Ok(s) => s.parse().expect("LINESIDE_FUZZ_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn cases() -> usize {
    std::env::var("LINESIDE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES)
}

/// One shipped config, copied into its own directory with its named files present.
struct Base {
    name: String,
    text: String,
}

fn bases() -> Vec<Base> {
    shipped::configs()
        .into_iter()
        .map(|p| Base {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .collect()
}

/// A special file in conf.d.
#[derive(Debug, Clone, Copy)]
enum Special {
    Fifo,
    DevZero,
    Directory,
    Oversized,
    Unreadable,
    DuplicateKeys,
}

/// One mutated config: the main file's text and what goes into conf.d.
#[derive(Debug)]
struct Case {
    text: String,
    specials: Vec<Special>,
    mutations: Vec<String>,
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "18446744073709551616",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "0.5",
    "-0.0",
    "65536",
    "4294967296",
];
const DURATIONS: &[&str] = &[
    "\"0s\"",
    "\"99999999d\"",
    "\"1ns\"",
    "\"-1s\"",
    "\"\"",
    "\"1y\"",
    "\"584942417355y\"",
    "\"10\"",
];
const SIZES: &[&str] = &[
    "\"0B\"",
    "\"1B\"",
    "\"99999PiB\"",
    "\"1.5e30GiB\"",
    "\"-1MiB\"",
    "\"NaNMiB\"",
];
const OTHER_TYPES: &[&str] = &["true", "[]", "{}", "\"x\"", "1", "[1, \"a\"]", "1979-05-27"];

fn is_duration(v: &str) -> bool {
    let v = v.trim_matches('"');
    !v.is_empty()
        && v.chars().next().is_some_and(|c| c.is_ascii_digit())
        && ["ms", "s", "m", "h", "d"].iter().any(|u| v.ends_with(u))
        && !v.ends_with("B")
}

fn is_size(v: &str) -> bool {
    let v = v.trim_matches('"');
    v.chars().next().is_some_and(|c| c.is_ascii_digit()) && v.ends_with('B')
}

/// Replaces the value of a `key = value` line (keeps the key); None if the line has none.
fn replace_value(line: &str, rng: &mut fastrand::Rng) -> Option<(String, String)> {
    let (key, rest) = line.split_once('=')?;
    let key_t = key.trim();
    if key_t.is_empty() || key_t.starts_with('#') || key_t.starts_with('[') {
        return None;
    }
    let value = rest.split(" #").next().unwrap_or(rest).trim();
    let new: String = if value.starts_with('"') && is_duration(value) && rng.bool() {
        DURATIONS[rng.usize(..DURATIONS.len())].to_string()
    } else if value.starts_with('"') && is_size(value) && rng.bool() {
        SIZES[rng.usize(..SIZES.len())].to_string()
    } else if value.starts_with('"') && rng.u8(..3) > 0 {
        match rng.u8(..5) {
            0 => "\"\"".to_string(),
            1 => format!("\"{}\"", "x".repeat(140 * 1024)),
            2 => "\"ünïcødé ✓ 测试 \\u0000 \\t/..\"".to_string(),
            3 => "\"../../../../etc/passwd\"".to_string(),
            _ => "\"a/b+#\"".to_string(),
        }
    } else if value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-')
        && rng.u8(..3) > 0
    {
        NUMBERS[rng.usize(..NUMBERS.len())].to_string()
    } else {
        OTHER_TYPES[rng.usize(..OTHER_TYPES.len())].to_string()
    };
    Some((
        format!("{key}= {new}"),
        format!("{key_t}: {value:.40} -> {new:.40}"),
    ))
}

fn mutate(text: &str, rng: &mut fastrand::Rng) -> Case {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut mutations = Vec::new();
    let mut specials = Vec::new();
    for _ in 0..rng.usize(1..=4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.usize(..lines.len());
        match rng.u8(..20) {
            0..=1 => {
                mutations.push(format!("delete line {}: {:.40}", i + 1, lines[i]));
                lines.remove(i);
            }
            2 => {
                mutations.push(format!("duplicate line {}: {:.40}", i + 1, lines[i]));
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            3..=4 => {
                // Uncomment a commented key, so keys the reference config only documents are tried too.
                let commented: Vec<usize> = (0..lines.len())
                    .filter(|&j| {
                        let t = lines[j].trim_start();
                        t.starts_with("# ") && t[2..].contains(" = ")
                    })
                    .collect();
                if !commented.is_empty() {
                    let j = commented[rng.usize(..commented.len())];
                    let l = lines[j].trim_start()[2..].to_string();
                    mutations.push(format!("uncomment line {}: {l:.40}", j + 1));
                    lines[j] = l;
                }
            }
            5 => {
                specials.push(match rng.u8(..6) {
                    0 => Special::Fifo,
                    1 => Special::DevZero,
                    2 => Special::Directory,
                    3 => Special::Oversized,
                    4 => Special::Unreadable,
                    _ => Special::DuplicateKeys,
                });
            }
            6 => {
                let keep = rng.usize(..lines.len());
                mutations.push(format!("truncate after line {keep}"));
                lines.truncate(keep);
                if let Some(last) = lines.last_mut() {
                    let cut = rng.usize(..=last.len());
                    let mut cut = cut;
                    while !last.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    last.truncate(cut);
                }
            }
            _ => {
                // Mostly values: pick a key line.
                let keyed: Vec<usize> = (0..lines.len())
                    .filter(|&j| {
                        replace_value(&lines[j], &mut fastrand::Rng::with_seed(0)).is_some()
                    })
                    .collect();
                if !keyed.is_empty() {
                    let j = keyed[rng.usize(..keyed.len())];
                    if let Some((l, what)) = replace_value(&lines[j], rng) {
                        mutations.push(format!("line {}: {what}", j + 1));
                        lines[j] = l;
                    }
                }
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Case {
        text,
        specials,
        mutations,
    }
}

/// Writes a case into `dir` (already holding the localised files); returns the main file's path.
fn write_case(case: &Case, name: &str, dir: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &case.text).unwrap();
    let d = dir.join("conf.d");
    let _ = std::fs::remove_dir_all(&d);
    if case.specials.is_empty() {
        return path;
    }
    std::fs::create_dir(&d).unwrap();
    for (i, s) in case.specials.iter().enumerate() {
        let f = d.join(format!("{i:02}-special.toml"));
        match s {
            Special::Fifo => {
                assert!(Command::new("mkfifo").arg(&f).status().unwrap().success());
            }
            Special::DevZero => std::os::unix::fs::symlink("/dev/zero", &f).unwrap(),
            Special::Directory => std::fs::create_dir(&f).unwrap(),
            Special::Oversized => {
                std::fs::write(&f, "#".repeat(2 * 1024 * 1024)).unwrap();
            }
            Special::Unreadable => {
                std::fs::write(&f, "[store]\nbatch_size = 10\n").unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
            }
            Special::DuplicateKeys => {
                std::fs::write(&f, "[agent]\nid = \"again\"\n[mqtt]\nkeep_alive = \"0s\"\n")
                    .unwrap();
            }
        }
    }
    path
}

fn describe(seed: u64, n: usize, case: &Case, base: &Base) -> String {
    format!(
        "seed {seed}, case {n}, {}: mutations {:?}, conf.d {:?}",
        base.name, case.mutations, case.specials
    )
}

/// Layer 1: thousands of cases in-process.
#[test]
fn check_passes_only_what_run_validates() {
    let seed = seed();
    let n = cases();
    println!(
        "config_fuzz: seed {seed}, {n} in-process cases (replay: LINESIDE_FUZZ_SEED={seed} LINESIDE_FUZZ_CASES={n})"
    );
    let bases = bases();
    let dirs: Vec<tempfile::TempDir> = bases.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let texts: Vec<String> = bases
        .iter()
        .zip(&dirs)
        .map(|(b, d)| shipped::localise(&b.text, d.path()))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut passed, mut refused) = (0, 0);
    // A watchdog: a load that blocks (a FIFO read) must fail the test, not hang it.
    let (tx, rx) = mpsc::channel::<(usize, Result<bool, String>)>();
    let (work_tx, work_rx) = mpsc::channel::<(usize, PathBuf)>();
    let worker = std::thread::spawn(move || {
        for (i, path) in work_rx {
            let outcome = std::panic::catch_unwind(|| match lineside::config::load(&path) {
                Ok(cfg) => match lineside::agent::validate_for_run(&cfg) {
                    Ok(()) => Ok(true),
                    Err(p) => Err(format!("check accepted a config run refuses: {p:?}")),
                },
                Err(_) => Ok(false),
            });
            let outcome = outcome.unwrap_or_else(|_| Err("config::load panicked".into()));
            if tx.send((i, outcome)).is_err() {
                return;
            }
        }
    });
    for i in 0..n {
        let b = rng.usize(..bases.len());
        let case = mutate(&texts[b], &mut rng);
        let path = write_case(&case, &bases[b].name, dirs[b].path());
        work_tx.send((i, path)).unwrap();
        match rx.recv_timeout(CHECK_LIMIT) {
            Ok((_, Ok(true))) => passed += 1,
            Ok((_, Ok(false))) => refused += 1,
            Ok((_, Err(e))) => panic!(
                "{e}\n{}\n--- config ---\n{:.4000}",
                describe(seed, i, &case, &bases[b]),
                case.text
            ),
            Err(_) => panic!("config::load hung\n{}", describe(seed, i, &case, &bases[b])),
        }
    }
    drop(work_tx);
    worker.join().unwrap();
    println!("config_fuzz: {passed} accepted, {refused} refused");
    assert!(
        passed > n / 20,
        "the mutations leave too few valid configs to test anything"
    );
}

/// Duration keys for which zero is a meaningful value (no pause, no limit).
// `bad_heartbeat = "0s"` reports every bad reading (no report by exception); `commit_delay = "0s"`
// commits as soon as the queue is empty.
const ZERO_ALLOWED: &[&str] = &[
    "inter_frame_delay",
    "rebirth_min_interval",
    "bad_heartbeat",
    "commit_delay",
];

/// Every duration and size key the shipped configs show (set or commented out) has a range: an absurd
/// value, and zero where zero makes no sense, is refused at its line with the range in the message.
#[test]
fn every_duration_and_size_key_refuses_zero_and_absurd_values() {
    let mut failures = Vec::new();
    let mut tried = 0;
    for base in bases() {
        let dir = tempfile::tempdir().unwrap();
        let text = shipped::localise(&base.text, dir.path());
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let uncommented = line.trim_start_matches('#').trim();
            let Some((key, value)) = uncommented.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.split(" #").next().unwrap_or("").trim());
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            let values: &[(&str, bool)] = if value.starts_with('"') && is_duration(value) {
                &[("\"99999999d\"", false), ("\"0s\"", true)]
            } else if value.starts_with('"') && is_size(value) {
                &[("\"64PiB\"", false), ("\"0B\"", true)]
            } else {
                continue;
            };
            for (v, zero) in values {
                if *zero && ZERO_ALLOWED.contains(&key) {
                    continue;
                }
                let mut case: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                case[i] = format!("{key} = {v}");
                let path = dir.path().join(&base.name);
                std::fs::write(&path, case.join("\n")).unwrap();
                let what = format!("{}:{}: {key} = {v}", base.name, i + 1);
                let errors = match lineside::config::load(&path) {
                    Ok(_) => {
                        failures.push(format!("{what}: accepted"));
                        continue;
                    }
                    Err(e) => e.0,
                };
                let here: Vec<_> = errors.iter().filter(|e| e.line == i + 1).collect();
                // Uncommented into a section where the key does not belong: nothing to check.
                if here.iter().any(|e| e.message.contains("unknown")) {
                    continue;
                }
                tried += 1;
                if !here.iter().any(|e| e.message.contains("must be between")) {
                    failures.push(format!("{what}: {errors:?}"));
                }
            }
        }
    }
    assert!(tried > 40, "only {tried} duration and size keys found");
    assert!(
        failures.is_empty(),
        "{} values not refused with their range:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

struct Output {
    code: Option<i32>,
    text: String,
}

/// Runs the binary with a time limit; None if it had to be killed. Output goes to a file (a pipe
/// nobody reads while waiting would block a chatty child).
fn run_limited(mut cmd: Command, limit: Duration) -> Option<Output> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Output {
                code: status.code(),
                text: String::from_utf8_lossy(&std::fs::read(out.path()).unwrap()).into_owned(),
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Layers 2 and 3: the real binaries.
#[test]
fn the_check_binary_never_panics_or_hangs_and_what_it_passes_runs() {
    let seed = seed().wrapping_add(1);
    println!(
        "config_fuzz (binary): seed {seed} (replay: LINESIDE_FUZZ_SEED={})",
        seed - 1
    );
    let bases = bases();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut runnable: Vec<(tempfile::TempDir, PathBuf, String)> = Vec::new();
    let n = (cases() / 25).max(BINARY_CASES.min(cases()));
    for i in 0..n {
        let b = rng.usize(..bases.len());
        let dir = tempfile::tempdir().unwrap();
        let text = shipped::localise(&bases[b].text, dir.path());
        let case = mutate(&text, &mut rng);
        let path = write_case(&case, &bases[b].name, dir.path());
        let mut cmd = Command::new(shipped::bin());
        cmd.arg("check").arg(&path);
        let what = describe(seed, i, &case, &bases[b]);
        let Some(out) = run_limited(cmd, CHECK_LIMIT) else {
            panic!("lineside check hung\n{what}");
        };
        assert!(
            matches!(out.code, Some(0) | Some(2)),
            "lineside check exited with {:?}\n{what}\n{}",
            out.code,
            out.text
        );
        assert!(
            !out.text.contains("panicked"),
            "lineside check panicked\n{what}\n{}",
            out.text
        );
        let embedded = case.text.contains("embedded_broker = true");
        if out.code == Some(0) && !embedded && runnable.len() < RUNS && !case.mutations.is_empty() {
            runnable.push((dir, path, what));
        }
    }
    assert!(!runnable.is_empty(), "no mutated config passed check");
    for (_dir, path, what) in runnable {
        assert_starts_and_stops(&path, &what);
    }
}

/// `lineside run` comes up with the config, stays up, and stops on SIGTERM with exit 0.
fn assert_starts_and_stops(path: &Path, what: &str) {
    let log_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(shipped::bin())
        .arg("run")
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log_file.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let early = child.try_wait().unwrap();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let log = String::from_utf8_lossy(&std::fs::read(log_file.path()).unwrap()).into_owned();
    assert!(
        early.is_none(),
        "run exited by itself ({early:?}) with a config check passed\n{what}\n{log}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "run did not stop cleanly\n{what}\n{log}"
    );
    assert!(!log.contains("panicked"), "{what}\n{log}");
    assert!(!log.contains("a supervised task died"), "{what}\n{log}");
}
