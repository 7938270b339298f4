//! `lineside check`: every problem with file:line and key, exit code 2 on error. Checks the config merged
//! with the `conf.d/*.toml` files next to it, and lists the files it read.

use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path, plan: bool) -> ExitCode {
    match crate::config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: OK (agent {}, {} device(s), {} characteristic(s), broker {})",
                path.display(),
                cfg.agent.id,
                cfg.devices.len(),
                cfg.characteristics.len(),
                cfg.mqtt.url
            );
            print_files(&cfg.files);
            if plan {
                // Written, not println!ed: `lineside check FILE --plan | head` closes the pipe early, and
                // a closed pipe ends the listing instead of panicking.
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                for d in &cfg.devices {
                    let written = match d.plan() {
                        Some(p) => writeln!(out, "\n[{}] ({})\n{p}", d.name(), d.kind()),
                        None => writeln!(
                            out,
                            "\n[{}] ({}): {} tag(s), no request plan for this driver",
                            d.name(),
                            d.kind(),
                            d.tags().len()
                        ),
                    };
                    if written.is_err() {
                        break;
                    }
                }
                let _ = out.flush();
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), path.display());
            if let Ok(files) = crate::config::files(path)
                && files.len() > 1
            {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                eprintln!("files read: {}", names.join(", "));
            }
            ExitCode::from(2)
        }
    }
}

/// The files the config was merged from (the main file, then conf.d in order).
fn print_files(files: &[std::path::PathBuf]) {
    for f in files {
        println!("  read {}", f.display());
    }
}
