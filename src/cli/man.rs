//! `lineside man --out DIR`: writes the manual pages, generated from the command-line definition, so they
//! never drift from `--help`. One page per command: lineside.1, lineside-run.1, lineside-check.1,
//! lineside-modbus-read.1, ... The Debian package (scripts/package) runs this on the binary it packages
//! and installs the pages gzipped under /usr/share/man/man1/.

use std::io;
use std::path::{Path, PathBuf};

/// Writes one page per visible command under `out`; returns the files written.
pub fn write_pages(cmd: clap::Command, out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    // `help` is clap's own subcommand, not a command of ours: no page for it.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Fills in the display names ("lineside-check") the page names are made from.
    cmd.build();
    let source = format!("lineside {}", env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    write_tree(&cmd, out, &source, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    out: &Path,
    source: &str,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .source(source.to_string())
        .manual("lineside manual");
    written.push(page.generate_to(out)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, out, source, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Each visible command's description is its own (a doc comment above the wrong variant once gave
    /// `modbus` none and `user` the Modbus one), and it is what `--help` and the man pages print.
    #[test]
    fn every_visible_command_has_its_own_description() {
        for sub in crate::cli::Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "`{}` has no description", sub.get_name());
            for other in ["modbus", "opcua", "serial"] {
                assert!(
                    other == sub.get_name() || !about.to_lowercase().contains(other),
                    "`{}` is described as {other}: {about}",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn a_page_per_visible_command_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(crate::cli::Cli::command(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "lineside.1",
            "lineside-run.1",
            "lineside-check.1",
            "lineside-status.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("help") || n.contains("-man")),
            "{names:?}"
        );
        let check = std::fs::read_to_string(dir.path().join("lineside-check.1")).unwrap();
        assert!(check.starts_with(".ie"), "{check}");
        assert!(check.contains("lineside\\-check"), "{check}");
        assert!(check.contains(env!("CARGO_PKG_VERSION")), "{check}");
    }
}
