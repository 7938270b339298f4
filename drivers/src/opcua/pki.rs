//! The client's PKI directory: `own/cert.der` and `private/private.pem` (the agent's application instance
//! certificate, created on first use), `trusted/` (server certificates the operator accepted) and
//! `rejected/` (server certificates seen but not trusted). Unknown server certificates are rejected by
//! default; `lineside opcua trust` moves one from `rejected/` to `trusted/`, which takes effect at the
//! driver's next connect attempt without a restart.

use std::fs;
use std::path::{Path, PathBuf};

use opcua::crypto::X509;

pub const TRUSTED: &str = "trusted";
pub const REJECTED: &str = "rejected";

/// Where a certificate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    Trusted,
    Rejected,
}

impl CertState {
    pub fn name(self) -> &'static str {
        match self {
            CertState::Trusted => "trusted",
            CertState::Rejected => "rejected",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            CertState::Trusted => TRUSTED,
            CertState::Rejected => REJECTED,
        }
    }
}

/// A server certificate in the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertEntry {
    #[serde(serialize_with = "ser_state")]
    pub state: CertState,
    pub path: PathBuf,
    /// SHA-1 thumbprint in hex (how OPC UA tools identify certificates).
    pub thumbprint: String,
    pub subject: String,
    pub not_after: Option<String>,
    /// Set when the file could not be parsed as a certificate.
    pub error: Option<String>,
}

fn ser_state<S: serde::Serializer>(state: &CertState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.name())
}

/// Creates the directory layout (the library does too, but `trust` may run before the first connect).
pub fn ensure_layout(pki_dir: &Path) -> Result<(), String> {
    for sub in ["own", "private", TRUSTED, REJECTED] {
        let dir = pki_dir.join(sub);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // The private key must not be readable by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = pki_dir.join("private");
        let _ = fs::set_permissions(&private, fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Lists trusted and rejected server certificates.
pub fn list(pki_dir: &Path) -> Result<Vec<CertEntry>, String> {
    let mut out = Vec::new();
    for state in [CertState::Trusted, CertState::Rejected] {
        let dir = pki_dir.join(state.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "der" || x == "pem"))
            .collect();
        files.sort();
        for path in files {
            out.push(describe(state, path));
        }
    }
    Ok(out)
}

fn describe(state: CertState, path: PathBuf) -> CertEntry {
    let parsed = fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            let is_pem = path.extension().is_some_and(|x| x == "pem");
            let cert = if is_pem {
                X509::from_pem(&bytes)
            } else {
                X509::from_der(&bytes)
            };
            cert.map_err(|e| format!("{e:?}"))
        });
    match parsed {
        Ok(cert) => CertEntry {
            state,
            thumbprint: cert.thumbprint().as_hex_string().to_ascii_lowercase(),
            subject: cert.subject_name(),
            not_after: cert.not_after().ok().map(|t| t.to_rfc3339()),
            error: None,
            path,
        },
        Err(e) => CertEntry {
            state,
            thumbprint: String::new(),
            subject: String::new(),
            not_after: None,
            error: Some(format!("unreadable certificate: {e}")),
            path,
        },
    }
}

/// Moves the one rejected certificate matching `selector` (a thumbprint prefix of at least 8 hex digits,
/// or the file name) to `trusted/`. Returns the new path.
pub fn trust(pki_dir: &Path, selector: &str) -> Result<PathBuf, String> {
    move_one(pki_dir, selector, CertState::Rejected, CertState::Trusted)
}

/// The reverse of [`trust`]: moves a trusted certificate back to `rejected/`.
pub fn untrust(pki_dir: &Path, selector: &str) -> Result<PathBuf, String> {
    move_one(pki_dir, selector, CertState::Trusted, CertState::Rejected)
}

fn move_one(
    pki_dir: &Path,
    selector: &str,
    from: CertState,
    to: CertState,
) -> Result<PathBuf, String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err("give a thumbprint (at least 8 hex digits) or a file name".into());
    }
    let candidates: Vec<CertEntry> = list(pki_dir)?
        .into_iter()
        .filter(|c| c.state == from)
        .collect();
    let wanted = selector.to_ascii_lowercase();
    let is_prefix = wanted.len() >= 8 && wanted.chars().all(|c| c.is_ascii_hexdigit());
    let matches: Vec<&CertEntry> = candidates
        .iter()
        .filter(|c| {
            c.path
                .file_name()
                .is_some_and(|n| n.to_string_lossy() == selector)
                || (is_prefix && c.thumbprint.starts_with(&wanted))
        })
        .collect();
    let entry = match matches.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<String> = candidates
                .iter()
                .map(|c| format!("  {} {}", c.thumbprint, c.subject))
                .collect();
            return Err(if known.is_empty() {
                format!(
                    "no {} certificates in {}",
                    from.name(),
                    pki_dir.join(from.dir()).display()
                )
            } else {
                format!(
                    "no {} certificate matches {selector:?}; {} certificates are:\n{}",
                    from.name(),
                    from.name(),
                    known.join("\n")
                )
            });
        }
        many => {
            return Err(format!(
                "{selector:?} matches {} certificates; give more of the thumbprint",
                many.len()
            ));
        }
    };
    let file_name = entry
        .path
        .file_name()
        .ok_or_else(|| format!("{} has no file name", entry.path.display()))?;
    let target_dir = pki_dir.join(to.dir());
    fs::create_dir_all(&target_dir)
        .map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;
    let target = target_dir.join(file_name);
    fs::rename(&entry.path, &target).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            entry.path.display(),
            target.display()
        )
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::crypto::{CertificateStore, X509Data};

    fn make_cert(dir: &Path, name: &str) -> X509 {
        let mut data = X509Data::sample_cert();
        data.common_name = name.to_string();
        data.key_size = 2048;
        let (cert, _) = CertificateStore::create_certificate_and_key(
            &data,
            true,
            &dir.join(REJECTED).join(format!("{name}.der")),
            &dir.join("private").join(format!("{name}.pem")),
        )
        .unwrap();
        cert
    }

    #[test]
    fn trust_moves_exactly_one_rejected_certificate() {
        let dir = tempfile::tempdir().unwrap();
        ensure_layout(dir.path()).unwrap();
        let a = make_cert(dir.path(), "server-a");
        make_cert(dir.path(), "server-b");
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .all(|c| c.state == CertState::Rejected && c.error.is_none())
        );

        let thumb = a.thumbprint().as_hex_string().to_ascii_lowercase();
        assert!(
            trust(dir.path(), "abc")
                .unwrap_err()
                .contains("no rejected certificate")
        );
        let moved = trust(dir.path(), &thumb[..10].to_ascii_uppercase()).unwrap();
        assert!(moved.starts_with(dir.path().join(TRUSTED)));
        let listed = list(dir.path()).unwrap();
        assert_eq!(
            listed
                .iter()
                .filter(|c| c.state == CertState::Trusted)
                .count(),
            1
        );
        assert!(trust(dir.path(), &thumb[..10]).is_err(), "already trusted");

        untrust(dir.path(), "server-a.der").unwrap();
        assert!(
            list(dir.path())
                .unwrap()
                .iter()
                .all(|c| c.state == CertState::Rejected)
        );
    }
}
