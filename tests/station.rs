//! The operator station in a real headless browser (Debian's chromium + chromium-driver, driven over
//! WebDriver): the demo line's overview and chart pages, live points, login and acknowledgement, and
//! refused writes. `#[ignore]`: they need chromium (scripts/test installs it and runs them).
//!
//! Screenshots are saved under `$CARGO_TARGET_TMPDIR/station/`; with `LINESIDE_SCREENSHOTS=docs` they
//! are also written to docs/ (the README's pictures come from here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use webdriver::Browser;

const BASE: &str = "lineside/demo-line";
const USER: &str = "qe.anna";
const PASSWORD: &str = "hone-and-bore-7";

/// The demo line (config/demo.toml), ten times faster, with its broker and station on free ports.
struct Line {
    _dir: tempfile::TempDir,
    url: String,
    broker: u16,
    stop: tokio_util::sync::CancellationToken,
    rt: tokio::runtime::Runtime,
}

impl Line {
    fn start() -> Line {
        let dir = tempfile::tempdir().unwrap();
        let (broker, station) = (free_port(), free_port());
        let text = include_str!("../config/demo.toml")
            .replace(
                "state_dir = \"/tmp/lineside-demo\"",
                &format!("state_dir = {:?}", dir.path().display().to_string()),
            )
            .replace("127.0.0.1:1883", &format!("127.0.0.1:{broker}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{station}"))
            .replace("echo = \"all\"", "echo = \"off\"")
            .replace("interval = \"200ms\"", "interval = \"20ms\"")
            .replace("interval = \"500ms\"", "interval = \"50ms\"")
            .replace("interval = \"250ms\"", "interval = \"25ms\"")
            .replace(
                "capability_interval = \"10s\"",
                "capability_interval = \"1s\"",
            );
        let cfg = load(&text, dir.path());
        let mut users = lineside::station::users::Users::default();
        users
            .set(USER, lineside::station::users::Role::Operator, PASSWORD)
            .unwrap();
        users.save(&cfg.station.users_file).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = rt.block_on(async { spawn_agent(cfg).0 });
        let url = format!("http://127.0.0.1:{station}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", station)).is_err() {
            assert!(Instant::now() < deadline, "the station did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Line {
            _dir: dir,
            url,
            broker,
            stop,
            rt,
        }
    }

    fn subscriber(&self) -> Subscriber {
        self.rt
            .block_on(async { Subscriber::start(self.broker, BASE, false).await })
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.cancel();
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn save_screenshot(browser: &Browser, name: &str) -> PathBuf {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("station");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &png).unwrap();
    if std::env::var("LINESIDE_SCREENSHOTS").as_deref() == Ok("docs") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), &png).unwrap();
    }
    path
}

fn log_in(browser: &Browser, line: &Line) {
    browser.goto(&format!("{}/login", line.url));
    browser
        .wait(
            Duration::from_secs(10),
            "return document.querySelector('#user')",
        )
        .expect("the login form");
    browser.type_into("#user", USER);
    browser.type_into("#password", PASSWORD);
    browser.click("#login-submit");
    let who = browser
        .wait(
            Duration::from_secs(10),
            "var u = document.querySelector('#who .user'); return u && u.textContent",
        )
        .expect("logged in");
    assert!(who.as_str().unwrap().contains(USER), "{who}");
}

#[test]
#[ignore = "needs chromium and chromium-driver (scripts/test installs them)"]
fn overview_chart_page_and_live_points() {
    let line = Line::start();
    let sub = line.subscriber();
    let browser = Browser::start();

    // The overview lists the demo's characteristics, each with its state.
    browser.goto(&format!("{}/", line.url));
    let names = browser
        .wait(
            Duration::from_secs(15),
            "var r = [...document.querySelectorAll('#overview tr.ch')];
             return r.length == 2 && r.every(x => x.dataset.state != 'waiting') && r.map(x => x.dataset.name)",
        )
        .expect("two characteristics with points on the overview");
    assert_eq!(names, serde_json::json!(["bore-diameter", "press-force"]));

    // A characteristic page draws points, centre line, control and spec limits, zones, the histogram.
    browser.goto(&format!("{}/ch/bore-diameter", line.url));
    let drawn = browser
        .wait(
            Duration::from_secs(20),
            "var s = document.querySelector('svg[data-chart=xbar]');
             if (!s || !s.querySelector('path.limit.ucl') || s.querySelectorAll('circle.pt').length < 10) return null;
             return {points: s.querySelectorAll('circle.pt').length,
                     cl: !!s.querySelector('path.limit.cl'), lcl: !!s.querySelector('path.limit.lcl'),
                     usl: !!s.querySelector('line.spec.usl'), lsl: !!s.querySelector('line.spec.lsl'),
                     zones: s.querySelectorAll('rect.zone1, rect.zone2').length,
                     range: document.querySelectorAll('svg[data-chart=r] circle.pt').length,
                     labels: [...s.querySelectorAll('text.lbl')].map(t => t.textContent)}",
        )
        .expect("the X̄ chart with points and limits");
    assert!(drawn["points"].as_u64().unwrap() >= 10, "{drawn}");
    assert_eq!(drawn["cl"], true);
    assert_eq!(drawn["lcl"], true);
    assert_eq!(drawn["usl"], true, "spec limits on the X̄ chart: {drawn}");
    assert_eq!(drawn["lsl"], true);
    assert_eq!(drawn["zones"], 3, "the 1σ band and the two 2σ bands");
    assert!(drawn["range"].as_u64().unwrap() >= 10, "the R chart too");
    let labels = drawn["labels"].to_string();
    assert!(labels.contains("UCL") && labels.contains("USL"), "{labels}");
    // The shift at sample 150 breaks rules: those points are drawn as violations, and the page lists
    // the alarm with its rule text.
    let violations = browser
        .wait(
            Duration::from_secs(30),
            "return document.querySelectorAll('svg[data-chart=xbar] circle.pt.viol').length > 0
                && document.querySelectorAll('#alarms .alarm .rule').length",
        )
        .expect("violations drawn and alarms listed");
    assert!(violations.as_u64().unwrap() >= 1);
    browser
        .wait(
            Duration::from_secs(10),
            "return document.querySelectorAll('svg#histogram rect.bar').length > 0 && document.querySelector('#capability')",
        )
        .expect("the histogram and capability");
    let shot = save_screenshot(&browser, "station-characteristic.png");
    eprintln!("screenshot: {}", shot.display());

    // Live: each new point is on the open page within 1 s of its last reading's timestamp (the
    // reading is committed, charted by SPC and pushed to the browser in between).
    let mut seen_seq = 0u64;
    let mut worst = Duration::ZERO;
    let mut checked = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while checked < 5 && Instant::now() < deadline {
        let v = browser.js(
            "var c = document.querySelectorAll('svg[data-chart=xbar] circle.pt');
             var l = c[c.length - 1]; return l ? [+l.dataset.seq, l.dataset.ts] : null",
        );
        let (Some(seq), Some(ts)) = (v[0].as_u64(), v[1].as_str()) else {
            continue;
        };
        if seq > seen_seq {
            let now = chrono::Utc::now();
            if seen_seq > 0 {
                let ts = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
                let age = (now - ts.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or_default();
                worst = worst.max(age);
                checked += 1;
            }
            seen_seq = seq;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(checked, 5, "five live points seen");
    eprintln!("worst reading → page delay of 5 live points: {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    // The same point went to MQTT.
    let published = line.rt.block_on(async {
        wait_for(Duration::from_secs(5), || {
            sub.seen.lock().unwrap().other.iter().any(|(t, p)| {
                t == "spc/bore-diameter/points" && p["seq"].as_u64() == Some(seen_seq)
            })
        })
        .await
    });
    assert!(published, "point {seen_seq} was also published on MQTT");

    // The overview in a state worth showing.
    browser.goto(&format!("{}/", line.url));
    browser
        .wait(
            Duration::from_secs(10),
            "return document.querySelectorAll('#overview tr.ch').length == 2",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    save_screenshot(&browser, "station-overview.png");

    // Chinese, by the switch.
    browser.click("#lang");
    let zh = browser
        .wait(
            Duration::from_secs(10),
            "return document.documentElement.lang == 'zh-CN' && document.querySelector('main h1').textContent",
        )
        .expect("the page in Chinese");
    assert_eq!(zh, "总览");

    // Device health.
    browser.goto(&format!("{}/devices", line.url));
    let devices = browser
        .wait(
            Duration::from_secs(10),
            "var r = [...document.querySelectorAll('#devices tbody tr')]; return r.length == 3 && r.map(x => x.dataset.name)",
        )
        .expect("three devices");
    assert_eq!(
        devices,
        serde_json::json!(["bore-gauge", "press-3", "height-gauge"])
    );
}

#[test]
#[ignore = "needs chromium and chromium-driver (scripts/test installs them)"]
fn login_acknowledge_and_the_ack_event_on_mqtt() {
    let line = Line::start();
    let sub = line.subscriber();
    let browser = Browser::start();
    log_in(&browser, &line);

    browser.goto(&format!("{}/ch/bore-diameter", line.url));
    let id = browser
        .wait(
            Duration::from_secs(40),
            "var a = document.querySelector('#alarms .alarm form.ack-form'); return a && a.closest('.alarm').dataset.id",
        )
        .expect("an open alarm with an acknowledge form");
    browser.js(
        "var f = document.querySelector('#alarms .alarm form.ack-form');
         f.querySelector('select.cause').value = 'tool-wear';
         f.querySelector('select.action').value = 'tool-changed';",
    );
    browser.click("#alarms .alarm form.ack-form button.ack");
    let status = browser
        .wait(
            Duration::from_secs(10),
            "var w = window.STATION.lastWrite; return w && w.path == '/api/ack' && w.status",
        )
        .expect("the acknowledgement was sent");
    assert_eq!(status, 202, "accepted");

    // The same event an MQTT acknowledgement produces, with the user's name in it.
    let ack = line.rt.block_on(async {
        let mut found: Option<Value> = None;
        wait_for(Duration::from_secs(10), || {
            found = sub
                .seen
                .lock()
                .unwrap()
                .alarms
                .iter()
                .find(|e| {
                    e["kind"] == "spc.ack"
                        || (e["kind"] == "spc.alarm" && e["transition"] == "acknowledged")
                })
                .cloned();
            found.is_some()
        })
        .await;
        found
    });
    let ack = ack.expect("an acknowledgement event on MQTT");
    eprintln!("acknowledgement event: {ack}");
    let text = ack.to_string();
    assert!(text.contains(USER), "{text}");
    assert!(
        text.contains("tool-wear") && text.contains("tool-changed"),
        "{text}"
    );
    let id = id.as_str().unwrap().parse::<u64>().unwrap();
    assert!(text.contains(&id.to_string()), "names alarm {id}: {text}");
    let rejected: Vec<Value> = sub
        .seen
        .lock()
        .unwrap()
        .alarms
        .iter()
        .filter(|e| e["kind"] == "agent.command_rejected")
        .cloned()
        .collect();
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
#[ignore = "needs chromium and chromium-driver (scripts/test installs them)"]
fn writes_without_login_or_with_a_bad_csrf_token_are_refused() {
    let line = Line::start();
    let sub = line.subscriber();
    let browser = Browser::start();
    let post = |headers: &str| -> u64 {
        let script = format!(
            "var done = arguments[arguments.length - 1];
             fetch('/api/ack', {{method: 'POST', credentials: 'same-origin',
                headers: Object.assign({{'Content-Type': 'application/json'}}, {headers}),
                body: JSON.stringify({{characteristic: 'bore-diameter', alarm_seq: 'all', cause: 'tool-wear'}})}})
               .then(r => done(r.status), e => done(String(e)));"
        );
        browser.js_async(&script).as_u64().unwrap_or(0)
    };
    browser.goto(&format!("{}/", line.url));
    assert_eq!(post("{}"), 401, "no login");
    log_in(&browser, &line);
    assert_eq!(post("{}"), 403, "logged in, no CSRF token");
    assert_eq!(
        post("{'X-CSRF-Token': 'not-the-token'}"),
        403,
        "a wrong CSRF token"
    );
    // The page's own token works (the command reaches SPC, which answers on MQTT).
    let token = browser.js_async(
        "var done = arguments[arguments.length - 1];
         fetch('/api/session').then(r => r.json()).then(s => done(s.csrf));",
    );
    let ok = post(&format!("{{'X-CSRF-Token': {token}}}"));
    assert_eq!(ok, 202, "with the session's token");
    // Five wrong passwords in a minute lock this address out for the rest of it.
    let statuses: Vec<u64> = (0..6)
        .map(|_| {
            browser
                .js_async(
                    "var done = arguments[arguments.length - 1];
                     fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({user: 'qe.anna', password: 'guess'})}).then(r => done(r.status));",
                )
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429]);
    // Nothing was acknowledged by the refused requests: the only ack events (if an alarm was open) are
    // the accepted request's, by the logged-in user.
    std::thread::sleep(Duration::from_millis(500));
    for e in &sub.seen.lock().unwrap().alarms {
        if e["kind"] == "spc.ack" {
            assert_eq!(e["by"], USER, "{e}");
        }
    }
    // An oversized body is refused before it is parsed.
    let big = browser.js_async(
        "var done = arguments[arguments.length - 1];
         fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({user: 'x', password: 'y'.repeat(100000)})}).then(r => done(r.status));",
    );
    assert_eq!(big, 413);
}
