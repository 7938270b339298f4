//! `lineside user add NAME --role operator`: manages the operator station's users file (argon2id
//! hashes). The password is read from the terminal (twice, not echoed) or, with `--password-stdin`,
//! from the first line of standard input (for scripts).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::station::users::{Role, Users};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a user, or change an existing user's role and password.
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "operator")]
        role: Role,
        /// The agent's config, whose `[station] users_file` is used.
        #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
        config: PathBuf,
        /// The users file itself (instead of the config's).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (their open sessions end when they next act).
    Remove {
        name: String,
        #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
        config: PathBuf,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List the users and their roles.
    List {
        #[arg(long, short, default_value = "/etc/lineside/lineside.toml")]
        config: PathBuf,
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn users_file(config: &std::path::Path, file: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(f) = file {
        return Ok(f);
    }
    crate::config::load(config)
        .map(|c| c.station.users_file)
        .map_err(|e| format!("{e}\n(or name the users file with --file)"))
}

/// Reads a line without echoing it when standard input is a terminal.
fn read_secret(prompt: &str) -> Result<String, String> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn run(cmd: Command) -> ExitCode {
    match run_inner(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Add {
            name,
            role,
            config,
            file,
            password_stdin,
        } => {
            let path = users_file(&config, file)?;
            let mut users = Users::load(&path).map_err(|e| e.to_string())?;
            let password = if password_stdin {
                read_secret("")?
            } else {
                let a = read_secret(&format!("password for {name}: "))?;
                let b = read_secret("again: ")?;
                if a != b {
                    return Err("the passwords differ".into());
                }
                a
            };
            let new = users
                .set(&name, role, &password)
                .map_err(|e| e.to_string())?;
            users.save(&path).map_err(|e| e.to_string())?;
            println!(
                "{} {name} ({}) in {}",
                if new { "added" } else { "updated" },
                role.as_str(),
                path.display()
            );
            Ok(())
        }
        Command::Remove { name, config, file } => {
            let path = users_file(&config, file)?;
            let mut users = Users::load(&path).map_err(|e| e.to_string())?;
            let before = users.users.len();
            users.users.retain(|u| u.name != name);
            if users.users.len() == before {
                return Err(format!("no user {name} in {}", path.display()));
            }
            users.save(&path).map_err(|e| e.to_string())?;
            println!("removed {name} from {}", path.display());
            Ok(())
        }
        Command::List { config, file } => {
            let path = users_file(&config, file)?;
            for u in Users::load(&path).map_err(|e| e.to_string())?.users {
                println!("{}\t{}", u.name, u.role.as_str());
            }
            Ok(())
        }
    }
}
