//! `scripts/order-symbols resolve` (the release build's code layout, issue 14): the functions recorded
//! while idle come first and those recorded only during the broker outage after them, whatever their
//! names; a name whose ThinLTO suffix changed still resolves. Run on this test build's own binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// The binary's defined function symbols, as `nm` lists them (sorted by name).
fn text_symbols(bin: &str) -> Vec<String> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(bin)
        .output()
        .expect("nm (binutils) is needed");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && "tT".contains(f[1])).then(|| f[2].to_string())
        })
        .collect()
}

#[test]
fn the_outage_group_follows_the_steady_group_and_suffixes_resolve() {
    let bin = env!("CARGO_BIN_EXE_lineside");
    let symbols = text_symbols(bin);
    let plain: Vec<&String> = symbols
        .iter()
        .filter(|s| s.starts_with("_R") && !s.contains(".llvm."))
        .collect();
    assert!(plain.len() > 100, "too few symbols in {bin}");
    // Three names in nm's order; the outage group gets the first two, the steady group the last.
    let (early, middle, late) = (plain[10], plain[plain.len() / 2], plain[plain.len() - 10]);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    let out = dir.path().join("order.txt");
    std::fs::write(
        &keys,
        format!(
            "# Functions an idle agent ran\n{late}\n# ran only during the broker outage:\n{early}\n{middle}.llvm.123\n"
        ),
    )
    .unwrap();
    let run = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/order-symbols"))
        .arg("resolve")
        .arg("--bin")
        .arg(bin)
        .arg("--keys")
        .arg(&keys)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 is needed");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let order = std::fs::read_to_string(&out).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let at = |name: &str| {
        order
            .iter()
            .position(|s| *s == name)
            .unwrap_or_else(|| panic!("{name} not ordered: {order:?}"))
    };
    // `middle` was recorded with a ThinLTO suffix this build does not have: matched up to the suffix.
    assert!(at(late) < at(early), "{order:?}");
    assert!(at(late) < at(middle), "{order:?}");
    assert!(
        at(early) < at(middle),
        "nm's order within a group: {order:?}"
    );
}
