//! `lineside opcua ...`: commissioning OPC UA servers (endpoints, browse, certificate trust). Thin glue over
//! `lineside_drivers::opcua::{commission, pki}`, where the logic and its tests live.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use lineside_drivers::opcua::commission::{self, Target};
use lineside_drivers::opcua::pki;
use lineside_drivers::opcua::security::{Identity, Mode, Policy};

/// The agent's default state dir is /var/lib/lineside; devices default to `pki_dir = "opcua-pki"` in it.
const DEFAULT_PKI_DIR: &str = "/var/lib/lineside/opcua-pki";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the server's endpoints: security policies, modes and accepted identity token types.
    Endpoints {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the address space below a node (default: the Objects folder) with node id, browse name,
    /// data type and current value.
    Browse {
        #[command(flatten)]
        conn: Conn,
        /// Start node, e.g. "ns=2;s=Line1" or "nsu=urn:vendor:cnc;s=Spindle".
        #[arg(long)]
        node: Option<String>,
        /// Levels to descend.
        #[arg(long, default_value_t = 1)]
        depth: u32,
        /// Stop after this many nodes.
        #[arg(long, default_value_t = 2000)]
        limit: usize,
    },
    /// Trust a rejected server certificate (move it from rejected/ to trusted/); without a selector, list
    /// the certificates in the PKI directory.
    Trust {
        /// Thumbprint (at least 8 hex digits) or file name of the certificate in rejected/.
        selector: Option<String>,
        #[arg(long, default_value = DEFAULT_PKI_DIR)]
        pki_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw trust: move a certificate from trusted/ back to rejected/.
    Untrust {
        /// Thumbprint (at least 8 hex digits) or file name of the certificate in trusted/.
        selector: String,
        #[arg(long, default_value = DEFAULT_PKI_DIR)]
        pki_dir: PathBuf,
    },
}

/// How to reach the server (shared by endpoints and browse).
#[derive(Debug, Args)]
pub struct Conn {
    /// Server endpoint, e.g. opc.tcp://cnc-7:4840
    #[arg(long)]
    endpoint: String,
    /// None | Basic256Sha256 | Aes128Sha256RsaOaep | Aes256Sha256RsaPss
    #[arg(long, default_value = "None")]
    security_policy: String,
    /// None | Sign | SignAndEncrypt
    #[arg(long, default_value = "None")]
    security_mode: String,
    /// User name (the password comes from --password-file or --password-env, never the command line).
    #[arg(long)]
    user: Option<String>,
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    #[arg(long, requires = "user")]
    password_env: Option<String>,
    /// X.509 user certificate and key instead of a user name.
    #[arg(long, requires = "user_key", conflicts_with = "user")]
    user_cert: Option<PathBuf>,
    #[arg(long, requires = "user_cert")]
    user_key: Option<PathBuf>,
    /// Client PKI directory (the agent's, so that trust decisions carry over).
    #[arg(long, default_value = DEFAULT_PKI_DIR)]
    pki_dir: PathBuf,
    /// Trust the server certificate on first contact (commissioning on a trusted network only).
    #[arg(long)]
    auto_trust: bool,
    /// Timeout per request ("10s").
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

impl Conn {
    fn target(&self) -> anyhow::Result<Target> {
        let identity = match (&self.user, &self.user_cert, &self.user_key) {
            (Some(user), _, _) => Identity::Username {
                user: user.clone(),
                password_file: self.password_file.clone(),
                password_env: self.password_env.clone(),
            },
            (None, Some(certificate), Some(private_key)) => Identity::Certificate {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            },
            _ => Identity::Anonymous,
        };
        Ok(Target {
            endpoint: self.endpoint.clone(),
            policy: Policy::parse(&self.security_policy).map_err(|e| anyhow!(e))?,
            mode: Mode::parse(&self.security_mode).map_err(|e| anyhow!(e))?,
            identity,
            pki_dir: self.pki_dir.clone(),
            auto_trust: self.auto_trust,
            timeout: humantime::parse_duration(&self.timeout)
                .with_context(|| format!("--timeout {:?}", self.timeout))?
                .max(Duration::from_millis(100)),
        })
    }
}

impl Command {
    fn pki_dir(&self) -> &std::path::Path {
        match self {
            Command::Endpoints { conn } | Command::Browse { conn, .. } => &conn.pki_dir,
            Command::Trust { pki_dir, .. } | Command::Untrust { pki_dir, .. } => pki_dir,
        }
    }
}

/// Runs a command. Whatever it creates or moves in the PKI directory is given to the owner of the state
/// directory afterwards: commissioning is often done with sudo, and a root-owned PKI would lock the agent
/// (user `lineside`) out of its own certificate.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    #[cfg(unix)]
    let owner = (cmd.pki_dir().to_path_buf(), pki::owner_of(cmd.pki_dir()));
    let result = run_command(cmd).await;
    #[cfg(unix)]
    if let (pki_dir, Some(owner)) = owner
        && pki_dir.exists()
    {
        let given = pki::give_to(&pki_dir, owner).map_err(|e| anyhow!(e))?;
        if given > 0 {
            eprintln!(
                "gave {given} file(s) in {} to uid {} (the owner of the state directory)",
                pki_dir.display(),
                owner.uid
            );
        }
    }
    result
}

async fn run_command(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Endpoints { conn } => {
            let target = conn.target()?;
            let eps = commission::endpoints(&target)
                .await
                .map_err(|e| anyhow!(e))?;
            if conn.json {
                for e in &eps {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!(
                    "{:<22} {:<15} {:>5}  {:<32} URL",
                    "POLICY", "MODE", "LEVEL", "IDENTITIES"
                );
                for e in &eps {
                    let note = if e.supported {
                        ""
                    } else {
                        "  (not supported by lineside)"
                    };
                    println!(
                        "{:<22} {:<15} {:>5}  {:<32} {}{note}",
                        e.security_policy,
                        e.security_mode,
                        e.security_level,
                        e.user_tokens.join(","),
                        e.url
                    );
                }
                if let Some(t) = eps
                    .iter()
                    .find_map(|e| e.server_certificate_thumbprint.as_ref())
                {
                    println!("server certificate thumbprint: {t}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Browse {
            conn,
            node,
            depth,
            limit,
        } => {
            let target = conn.target()?;
            let entries = commission::browse(&target, node.as_deref(), depth, limit)
                .await
                .map_err(|e| anyhow!(e))?;
            if conn.json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!(
                    "{:<40} {:<28} {:<10} {:<14} VALUE",
                    "NODE ID", "BROWSE NAME", "CLASS", "DATA TYPE"
                );
                for e in &entries {
                    let indent = "  ".repeat(e.depth.saturating_sub(1) as usize);
                    let value = match (&e.value, &e.status) {
                        (Some(v), Some(s)) => format!("{v} ({s})"),
                        (Some(v), None) => v.clone(),
                        (None, Some(s)) => format!("({s})"),
                        (None, None) => String::new(),
                    };
                    println!(
                        "{:<40} {:<28} {:<10} {:<14} {}",
                        format!("{indent}{}", e.node_id_nsu.as_deref().unwrap_or(&e.node_id)),
                        e.browse_name,
                        e.node_class,
                        e.data_type.as_deref().unwrap_or(""),
                        value
                    );
                }
                if entries.len() >= limit {
                    println!("(stopped at --limit {limit})");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trust {
            selector: None,
            pki_dir,
            json,
        } => {
            let certs = pki::list(&pki_dir).map_err(|e| anyhow!(e))?;
            if json {
                for c in &certs {
                    println!("{}", serde_json::to_string(c)?);
                }
            } else if certs.is_empty() {
                println!("no server certificates in {}", pki_dir.display());
            } else {
                println!(
                    "{:<9} {:<42} {:<26} SUBJECT",
                    "STATE", "THUMBPRINT", "EXPIRES"
                );
                for c in &certs {
                    println!(
                        "{:<9} {:<42} {:<26} {}",
                        c.state.name(),
                        c.thumbprint,
                        c.not_after.as_deref().unwrap_or("?"),
                        c.error.as_deref().unwrap_or(&c.subject)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Trust {
            selector: Some(selector),
            pki_dir,
            ..
        } => {
            let path = pki::trust(&pki_dir, &selector).map_err(|e| anyhow!(e))?;
            println!("trusted: {}", path.display());
            println!("running OPC UA devices pick it up at their next connect attempt");
            Ok(ExitCode::SUCCESS)
        }
        Command::Untrust { selector, pki_dir } => {
            let path = pki::untrust(&pki_dir, &selector).map_err(|e| anyhow!(e))?;
            println!("moved back to rejected: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
