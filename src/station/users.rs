//! The station's users file: names, roles and argon2id password hashes (PHC strings). Written by
//! `lineside user add`, read by the station at start and when it changes.
//!
//! ```toml
//! [[user]]
//! name = "j.doe"
//! role = "operator"
//! hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! ```

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What a user may do. Operators acknowledge and shelve; engineers also recalculate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Engineer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Engineer => "engineer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string.
    pub hash: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
}

/// Shortest password `lineside user add` accepts.
pub const MIN_PASSWORD: usize = 8;

impl Users {
    /// Reads the file; an absent file is an empty user list.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(source) => {
                return Err(UsersError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| UsersError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically, readable by its owner only (it holds password hashes).
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let err = |source| UsersError::Write {
            path: path.display().to_string(),
            source,
        };
        // Written by hand (the toml crate is built without its serializer); JSON string escapes are
        // valid TOML basic strings.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut text = String::from(
            "# lineside operator station users: written by `lineside user add`; hashes are argon2id.\n",
        );
        for u in &self.users {
            text.push_str(&format!(
                "\n[[user]]\nname = {}\nrole = {}\nhash = {}\n",
                q(&u.name),
                q(u.role.as_str()),
                q(&u.hash)
            ));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    pub fn find(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds a user, or replaces the role and password of an existing one. Returns true when it was new.
    pub fn set(&mut self, name: &str, role: Role, password: &str) -> Result<bool, UsersError> {
        if !valid_name(name) {
            return Err(UsersError::Invalid(format!(
                "invalid user name {name:?}: 1-64 letters, digits, `.`, `-`, `_`"
            )));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(UsersError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD} characters"
            )));
        }
        let hash = hash_password(password)?;
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.role = role;
                u.hash = hash;
                Ok(false)
            }
            None => {
                self.users.push(User {
                    name: name.to_string(),
                    role,
                    hash,
                });
                Ok(true)
            }
        }
    }
}

/// User names end up in stored events and audit trails: keep them plain.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// An argon2id hash (the crate's default parameters, OWASP's minimum: m = 19 MiB, t = 2, p = 1) with a
/// random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| UsersError::Invalid("no randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (constant time in the crate).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path).unwrap();
        assert!(users.set("j.doe", Role::Operator, "correct horse").unwrap());
        assert!(
            users
                .set("bad name", Role::Operator, "correct horse")
                .is_err()
        );
        assert!(users.set("x", Role::Operator, "short").is_err());
        users.save(&path).unwrap();
        let back = Users::load(&path).unwrap();
        let u = back.find("j.doe").unwrap();
        assert_eq!(u.role, Role::Operator);
        assert!(u.hash.starts_with("$argon2id$"));
        assert!(verify_password(&u.hash, "correct horse"));
        assert!(!verify_password(&u.hash, "wrong horse"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the hashes");
        }
        let mut again = back.clone();
        assert!(!again.set("j.doe", Role::Engineer, "another pass").unwrap());
        assert_eq!(again.find("j.doe").unwrap().role, Role::Engineer);
    }
}
