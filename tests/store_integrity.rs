//! Storage faults against the real binary: a WAL lost after kill -9 (a new epoch; no (epoch, seq) ever
//! names two different readings), also right after a checkpoint (nothing above the high-water marks was
//! ever published), and a damaged page among unforwarded readings (skipped, counted and announced;
//! forwarding goes on).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The agent process; killed when the test ends, also when it fails.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_binary(config: &std::path::Path) -> Agent {
    Agent(
        Command::new(env!("CARGO_BIN_EXE_lineside"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start lineside"),
    )
}

fn sigterm(agent: &mut Agent) {
    let child = &mut agent.0;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Item 6: kill -9, then the WAL is deleted (or lost in a power cut): the database goes back to its last
/// checkpoint. The agent notices (high-water marks outside the database), starts a new epoch, continues
/// the sequences above the mark and announces it; no identity names two different readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_lost_after_kill_9_starts_a_new_epoch_and_reuses_no_identity() {
    let port = rumqttd().await;
    let ids = subscribe_identities(port).await;
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(dir.path(), port, 2, 5, "10ms", "");
    let cfg = load(&text, dir.path());
    let config_path = dir.path().join("lineside.toml");
    let db = cfg.store.path.clone();

    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(20), || ids
            .lock()
            .unwrap()
            .max_seq(None)
            > 3000)
        .await,
        "data flows"
    );
    agent.0.kill().unwrap(); // SIGKILL
    agent.0.wait().unwrap();
    let seen_before = ids.lock().unwrap().max_seq(None);
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::fs::remove_file(p).unwrap();
    }
    let in_db = db_max_seq_or_zero(&db);
    assert!(
        in_db < seen_before,
        "the test needs a database behind what subscribers saw ({in_db} vs {seen_before})"
    );
    let old_epochs = ids.lock().unwrap().epochs();
    assert_eq!(old_epochs.len(), 1, "one epoch before: {old_epochs:?}");

    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(30), || ids
            .lock()
            .unwrap()
            .max_seq(None)
            > seen_before + 1000)
        .await,
        "new readings"
    );
    // The announcement, unless the identities are already broken (then the check below says so).
    wait_for(Duration::from_secs(10), || {
        let seen = ids.lock().unwrap();
        seen.alarms.iter().any(|a| a["kind"] == "agent.store_reset") || !seen.reused().is_empty()
    })
    .await;
    sigterm(&mut agent);

    let seen = ids.lock().unwrap();
    let reused = seen.reused();
    assert!(
        reused.is_empty(),
        "(epoch, seq) named different readings: {reused:?}"
    );
    assert_eq!(seen.epochs().len(), 2, "{:?}", seen.epochs());
    let reset = seen
        .alarms
        .iter()
        .find(|a| a["kind"] == "agent.store_reset")
        .unwrap();
    assert_eq!(reset["old_epoch"], old_epochs[0].as_str());
    let new_epoch = reset["new_epoch"].as_str().unwrap();
    assert_eq!(
        reset["epoch"], new_epoch,
        "the event itself carries the new epoch"
    );
    let high_water = reset["readings"]["high_water"].as_u64().unwrap();
    assert!(high_water > in_db);
    let new_min = seen
        .readings
        .keys()
        .filter(|(e, s)| e == new_epoch && *s > in_db)
        .map(|(_, s)| *s)
        .min()
        .unwrap();
    assert!(
        new_min > high_water,
        "new readings continue above the high-water mark ({new_min} vs {high_water})"
    );
}

fn signal(agent: &Agent, sig: &str) {
    assert!(
        Command::new("kill")
            .arg(sig)
            .arg(agent.0.id().to_string())
            .status()
            .unwrap()
            .success()
    );
}

/// The marks file's committed readings mark, and its ceiling: the reservation when there is one (the
/// forwarder may publish up to it), else the committed mark.
fn marks_of(db: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(lineside::store::marks_path(db)).unwrap();
    let marks: serde_json::Value = serde_json::from_str(&text).unwrap();
    let committed = marks["readings"].as_u64().unwrap();
    let ceiling = marks["reserved_readings"].as_u64().unwrap_or(committed);
    (committed, ceiling)
}

/// Highest reading seq in a copy of the database file alone (what a lost WAL leaves) and in a copy of
/// the file with its WAL; `None` when the file alone is not consistent (caught mid-checkpoint).
fn snapshot(db: &std::path::Path, scratch: &std::path::Path) -> Option<(u64, u64)> {
    let with_suffix = |p: &std::path::Path, s: &str| {
        let mut o = p.as_os_str().to_owned();
        o.push(s);
        std::path::PathBuf::from(o)
    };
    let max_seq = |path: &std::path::Path| -> Option<u64> {
        let conn = rusqlite::Connection::open(path).ok()?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .ok()?;
        if check != "ok" {
            return None;
        }
        conn.query_row("SELECT ifnull(max(seq), 0) FROM readings", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .map(|s| s as u64)
    };
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    let alone = scratch.join("alone.db");
    std::fs::copy(db, &alone).ok()?;
    let both = scratch.join("both.db");
    std::fs::copy(db, &both).ok()?;
    std::fs::copy(with_suffix(db, "-wal"), with_suffix(&both, "-wal")).ok()?;
    Some((max_seq(&alone)?, max_seq(&both)?))
}

/// The gap item 6 left open: a WAL lost right after a checkpoint takes the database back to exactly its
/// high-water marks, so the loss cannot be noticed at start; whatever had been forwarded from that WAL's
/// tail would be handed out again under the same epoch for different readings. The fix: nothing above
/// the marks on disk is ever published — since the marks reserve seqs ahead, nothing above the
/// reservation on disk, and a restart after an unclean stop continues above it. The agent is frozen (SIGSTOP) at many moments under a small disk
/// budget (checkpoints every few commits); each time, no subscriber may have seen a seq above the marks
/// file. Then, frozen when the database file alone is at (or above) its marks while the WAL holds more
/// — the moment the gap was about — it is killed, the WAL deleted, and restarted: no (epoch, seq) names
/// two different readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_lost_right_after_a_checkpoint_reuses_no_identity() {
    let port = rumqttd().await;
    let ids = subscribe_identities(port).await;
    let dir = tempfile::tempdir().unwrap();
    let text = sim_config(dir.path(), port, 2, 5, "10ms", "max_size = \"1MiB\"");
    let cfg = load(&text, dir.path());
    let config_path = dir.path().join("lineside.toml");
    let db = cfg.store.path.clone();
    let scratch = dir.path().join("scratch");

    let agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(20), || ids
            .lock()
            .unwrap()
            .max_seq(None)
            > 1000)
        .await,
        "data flows"
    );
    let started = std::time::Instant::now();
    let mut freezes = 0;
    // (seen, marks) whenever a subscriber had seen a seq above the marks on disk.
    let mut above_marks = Vec::new();
    let with_tail = loop {
        signal(&agent, "-STOP");
        // What was published before the freeze reaches the subscriber meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        freezes += 1;
        let (marks, ceiling) = marks_of(&db);
        let seen = ids.lock().unwrap().max_seq(None);
        if seen > ceiling {
            above_marks.push((seen, ceiling));
        }
        if let Some((alone, both)) = snapshot(&db, &scratch)
            && alone >= marks
        {
            let with_tail = both > alone;
            // At the marks with a WAL tail beyond them; after 20 s also without one (the window
            // between a commit and its marks write is short when fsync is fast).
            if freezes >= 10 && (with_tail || started.elapsed() > Duration::from_secs(20)) {
                break with_tail;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never caught the database file at its high-water marks ({freezes} freezes)"
        );
        signal(&agent, "-CONT");
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..200))).await;
    };
    // Killed while frozen: the state just inspected is the state left behind.
    let mut agent = agent;
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let seen_before = ids.lock().unwrap().max_seq(None);
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        std::fs::remove_file(p).unwrap();
    }
    let in_db = db_max_seq_or_zero(&db);
    eprintln!(
        "killed after {freezes} freezes: database {in_db}, subscribers saw {seen_before}, WAL tail lost: {with_tail}"
    );

    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(30), || ids
            .lock()
            .unwrap()
            .max_seq(None)
            > seen_before.max(in_db) + 1000)
        .await,
        "new readings"
    );
    sigterm(&mut agent);
    let seen = ids.lock().unwrap();
    let reused = seen.reused();
    assert!(
        reused.is_empty(),
        "(epoch, seq) named different readings: {reused:?}"
    );
    assert!(
        above_marks.is_empty(),
        "subscribers saw seqs above the high-water marks on disk (seen, marks): {above_marks:?}"
    );
}

/// Item 7: bytes flipped in a page holding unforwarded readings. The agent starts, forwarding skips the
/// unreadable range, counts and announces it (reason "corrupt"), and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_does_not_stall_forwarding() {
    let port = rumqttd().await;
    let dir = tempfile::tempdir().unwrap();
    // Phase 1: collect with no broker reachable.
    let text = sim_config(dir.path(), free_port(), 4, 25, "10ms", "");
    let cfg = load(&text, dir.path());
    let config_path = dir.path().join("lineside.toml");
    let db = cfg.store.path.clone();
    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(30), || db.exists()
            && db_max_seq_or_zero(&db) > 30_000)
        .await
    );
    sigterm(&mut agent); // clean: the WAL is folded into the database
    let committed = db_max_seq_or_zero(&db);
    let page = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let pages: Vec<i64> = conn
            .prepare("SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf' ORDER BY path")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (pages[pages.len() / 2] - 1) * size
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(page as u64)).unwrap();
        f.write_all(&[0xA5; 24]).unwrap();
    }

    // Phase 2: the broker is there.
    let ids = subscribe_identities(port).await;
    std::fs::write(
        &config_path,
        sim_config(dir.path(), port, 4, 25, "10ms", ""),
    )
    .unwrap();
    let mut agent = spawn_binary(&config_path);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let seen = ids.lock().unwrap();
            seen.max_seq(None) > committed + 1000
                && seen
                    .alarms
                    .iter()
                    .any(|a| a["kind"] == "agent.data_dropped")
        })
        .await,
        "forwarding went past the damage (seen up to {}, committed {committed}) and announced it",
        ids.lock().unwrap().max_seq(None)
    );
    sigterm(&mut agent);
    let seen = ids.lock().unwrap();
    let dropped = seen
        .alarms
        .iter()
        .find(|a| a["kind"] == "agent.data_dropped")
        .unwrap();
    assert_eq!(dropped["reason"], "corrupt");
    assert_eq!(dropped["stream"], "readings");
    let (first, last) = (
        dropped["first_seq"].as_u64().unwrap(),
        dropped["last_seq"].as_u64().unwrap(),
    );
    assert!(
        last >= first && last - first < 2000,
        "a page's worth: {first}..={last}"
    );
    // Everything else committed before the damage arrived.
    let missing: Vec<u64> = (1..=committed)
        .filter(|s| (*s < first || *s > last) && !seen.readings.keys().any(|(_, x)| x == s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "missing outside the damaged range: {missing:?}"
    );
}
