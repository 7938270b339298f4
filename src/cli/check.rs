//! `lineside check`: every problem with file:line and key, exit code 2 on error.

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
            if plan {
                for d in &cfg.devices {
                    match d.plan() {
                        Some(p) => println!("\n[{}] ({})\n{p}", d.name(), d.kind()),
                        None => println!(
                            "\n[{}] ({}): {} tag(s), no request plan for this driver",
                            d.name(),
                            d.kind(),
                            d.tags().len()
                        ),
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), path.display());
            ExitCode::from(2)
        }
    }
}
