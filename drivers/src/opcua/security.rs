//! Security policies, message security modes and user identities, as configured and as the library wants
//! them. Passwords are read when a session is opened (so a rotated file is picked up on reconnect) and
//! never appear in logs, errors or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use opcua::client::IdentityToken;
use opcua::crypto::SecurityPolicy;
use opcua::types::{MessageSecurityMode, UserTokenType};
use serde::Deserialize;

/// The security policies lineside offers. The deprecated Basic128Rsa15 and Basic256 are refused on
/// purpose (SHA-1, weak padding): a server that offers only those needs an upgrade, not a workaround.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Policy {
    #[default]
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::None,
        Policy::Basic256Sha256,
        Policy::Aes128Sha256RsaOaep,
        Policy::Aes256Sha256RsaPss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
            Policy::Aes128Sha256RsaOaep => "Aes128Sha256RsaOaep",
            Policy::Aes256Sha256RsaPss => "Aes256Sha256RsaPss",
        }
    }

    pub fn parse(text: &str) -> Result<Policy, SecurityConfigError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| SecurityConfigError::UnknownPolicy(text.to_string()))
    }

    pub fn to_opcua(self) -> SecurityPolicy {
        match self {
            Policy::None => SecurityPolicy::None,
            Policy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
            Policy::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
            Policy::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
        }
    }
}

/// Message security mode of the secure channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Mode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::None, Mode::Sign, Mode::SignAndEncrypt];

    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "None",
            Mode::Sign => "Sign",
            Mode::SignAndEncrypt => "SignAndEncrypt",
        }
    }

    pub fn parse(text: &str) -> Result<Mode, SecurityConfigError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| SecurityConfigError::UnknownMode(text.to_string()))
    }

    pub fn to_opcua(self) -> MessageSecurityMode {
        match self {
            Mode::None => MessageSecurityMode::None,
            Mode::Sign => MessageSecurityMode::Sign,
            Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        }
    }
}

/// A security setting that is not one lineside offers, or a policy and mode no server can pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityConfigError {
    #[error(
        "unknown security policy {0:?}; use one of {names}",
        names = Policy::ALL.map(|p| p.name()).join(", ")
    )]
    UnknownPolicy(String),
    #[error("unknown security mode {0:?}; use None, Sign or SignAndEncrypt")]
    UnknownMode(String),
    #[error("security_mode {} needs a security_policy other than None", .0.name())]
    ModeWithoutPolicy(Mode),
    #[error("security_policy {} needs security_mode Sign or SignAndEncrypt", .0.name())]
    PolicyWithoutMode(Policy),
}

/// Checks that policy and mode make a pair a server can offer.
pub fn check_pair(policy: Policy, mode: Mode) -> Result<(), SecurityConfigError> {
    match (policy, mode) {
        (Policy::None, Mode::None) => Ok(()),
        (Policy::None, _) => Err(SecurityConfigError::ModeWithoutPolicy(mode)),
        (_, Mode::None) => Err(SecurityConfigError::PolicyWithoutMode(policy)),
        _ => Ok(()),
    }
}

/// Why the user identity could not be built when a session was opened. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity: environment variable ${0} (the OPC UA password) is not set")]
    EnvNotSet(String),
    #[error("identity: no password source")]
    NoPasswordSource,
    #[error("identity: cannot load user certificate {} / key {}: {status}", certificate.display(), private_key.display())]
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
        status: opcua::types::StatusCode,
    },
    #[error("identity: cannot read password file {}: {kind}", path.display())]
    PasswordFileUnreadable {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("identity: password file {} is empty", .0.display())]
    PasswordFileEmpty(PathBuf),
}

/// The user identity presented when the session is activated.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Identity {
    #[default]
    Anonymous,
    /// User name and password; the password comes from a file (first line, trailing newline ignored)
    /// or from an environment variable, never from the config file itself.
    Username {
        user: String,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
    },
    /// An X.509 user certificate (DER or PEM) and its private key (PEM).
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Identity {
    /// A description safe for logs and plans: it never contains a secret.
    pub fn describe(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".to_string(),
            Identity::Username {
                user,
                password_file,
                password_env,
            } => {
                let source = match (password_file, password_env) {
                    (Some(p), _) => format!("password from file {}", p.display()),
                    (None, Some(v)) => format!("password from ${v}"),
                    (None, None) => "no password source".to_string(),
                };
                format!("user {user:?} ({source})")
            }
            Identity::Certificate { certificate, .. } => {
                format!("X.509 certificate {}", certificate.display())
            }
        }
    }

    pub fn token_type(&self) -> UserTokenType {
        match self {
            Identity::Anonymous => UserTokenType::Anonymous,
            Identity::Username { .. } => UserTokenType::UserName,
            Identity::Certificate { .. } => UserTokenType::Certificate,
        }
    }

    /// Semantic checks for `lineside check`; paths are relative to the `identity` table.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        match self {
            Identity::Anonymous => {}
            Identity::Username {
                user,
                password_file,
                password_env,
            } => {
                if user.trim().is_empty() {
                    issues.push(("user".into(), "must not be empty".into()));
                }
                match (password_file, password_env) {
                    (Some(_), Some(_)) => issues.push((
                        "password_env".into(),
                        "give either password_file or password_env, not both".into(),
                    )),
                    (None, None) => issues.push((
                        "password_file".into(),
                        "a username identity needs password_file or password_env (the password is never \
                         written in the config)"
                            .into(),
                    )),
                    (None, Some(v)) if v.trim().is_empty() => {
                        issues.push(("password_env".into(), "must name an environment variable".into()))
                    }
                    _ => {}
                }
            }
            Identity::Certificate { .. } => {}
        }
        issues
    }

    /// Builds the library's token, reading secrets now. Relative paths resolve against `base`.
    pub fn load(&self, base: &Path) -> Result<IdentityToken, IdentityError> {
        match self {
            Identity::Anonymous => Ok(IdentityToken::Anonymous),
            Identity::Username {
                user,
                password_file,
                password_env,
            } => {
                let password = match (password_file, password_env) {
                    (Some(file), _) => read_password_file(&base.join(file))?,
                    (None, Some(var)) => {
                        std::env::var(var).map_err(|_| IdentityError::EnvNotSet(var.clone()))?
                    }
                    (None, None) => return Err(IdentityError::NoPasswordSource),
                };
                Ok(IdentityToken::new_user_name(user.clone(), password))
            }
            Identity::Certificate {
                certificate,
                private_key,
            } => IdentityToken::new_x509_path(base.join(certificate), base.join(private_key))
                .map_err(|e| IdentityError::Certificate {
                    certificate: certificate.clone(),
                    private_key: private_key.clone(),
                    status: e.status(),
                }),
        }
    }
}

/// Reads a password file: the first line, without its line ending. The content never reaches an error.
pub fn read_password_file(path: &Path) -> Result<String, IdentityError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| IdentityError::PasswordFileUnreadable {
            path: path.to_path_buf(),
            kind: e.kind(),
        })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(IdentityError::PasswordFileEmpty(path.to_path_buf()));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_modes_parse_and_pair() {
        assert_eq!(
            Policy::parse("basic256sha256").unwrap(),
            Policy::Basic256Sha256
        );
        assert!(
            Policy::parse("Basic128Rsa15")
                .unwrap_err()
                .to_string()
                .contains("Aes256Sha256RsaPss")
        );
        assert_eq!(Mode::parse("SignAndEncrypt").unwrap(), Mode::SignAndEncrypt);
        assert!(check_pair(Policy::None, Mode::None).is_ok());
        assert!(check_pair(Policy::None, Mode::Sign).is_err());
        assert!(check_pair(Policy::Aes256Sha256RsaPss, Mode::None).is_err());
        assert!(check_pair(Policy::Aes128Sha256RsaOaep, Mode::Sign).is_ok());
        for p in Policy::ALL {
            assert_ne!(p.to_opcua(), SecurityPolicy::Unknown);
        }
    }

    #[test]
    fn identities_deserialize_and_never_show_secrets() {
        let id: Identity =
            toml::from_str("kind = \"username\"\nuser = \"op\"\npassword_env = \"PW_VAR\"\n")
                .unwrap();
        assert_eq!(format!("{id:?}"), "user \"op\" (password from $PW_VAR)");
        assert!(id.validate().is_empty());
        let err =
            toml::from_str::<Identity>("kind = \"username\"\nuser = \"op\"\npassword = \"x\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let id: Identity = toml::from_str("kind = \"username\"\nuser = \"op\"\n").unwrap();
        assert_eq!(id.validate()[0].0, "password_file");
        let id: Identity = toml::from_str("kind = \"anonymous\"\n").unwrap();
        assert_eq!(id, Identity::Anonymous);
    }

    #[test]
    fn password_file_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_password_file(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let err = read_password_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && !err.contains("s3cret"),
            "{err}"
        );

        let id = Identity::Username {
            user: "op".into(),
            password_file: Some("pw2".into()),
            password_env: None,
        };
        std::fs::write(dir.path().join("pw2"), "hunter2\r\n").unwrap();
        match id.load(dir.path()).unwrap() {
            IdentityToken::UserName(u, p) => {
                assert_eq!(u, "op");
                assert_eq!(p.0, "hunter2");
            }
            other => panic!("unexpected token {other:?}"),
        }
    }
}
