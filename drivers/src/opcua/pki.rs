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

/// A PKI directory operation that failed; the text says what to do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The usual cause: a PKI created by a commissioning command run as root.
    #[error(
        "cannot read {}: permission denied; the PKI directory belongs to another user (a commissioning \
         command run with sudo?): give it to the agent's user, e.g. `sudo chown -R lineside: {}`",
        file.display(),
        pki_dir.display()
    )]
    NotReadable { file: PathBuf, pki_dir: PathBuf },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} does not belong to the owner of the state directory (uid {uid}) and cannot be given to it \
         ({source}); run the command as that user (e.g. `sudo -u lineside lineside opcua ...`) or \
         `sudo chown -R {uid}:{gid} {}`",
        path.display(),
        pki_dir.display()
    )]
    Chown {
        path: PathBuf,
        pki_dir: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("cannot list {}: {source}", dir.display())]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("give a thumbprint (at least 8 hex digits) or a file name")]
    NoSelector,
    #[error("no {} certificates in {}", state.name(), dir.display())]
    NoCertificates { state: CertState, dir: PathBuf },
    #[error(
        "no {} certificate matches {selector:?}; {} certificates are:\n{}",
        state.name(),
        state.name(),
        known.join("\n")
    )]
    NoMatch {
        state: CertState,
        selector: String,
        known: Vec<String>,
    },
    #[error("{selector:?} matches {count} certificates; give more of the thumbprint")]
    Ambiguous { selector: String, count: usize },
    #[error("{} has no file name", .0.display())]
    NoFileName(PathBuf),
    #[error("cannot move {} to {}: {source}", from.display(), to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
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
pub fn ensure_layout(pki_dir: &Path) -> Result<(), PkiError> {
    for sub in ["own", "private", TRUSTED, REJECTED] {
        let dir = pki_dir.join(sub);
        fs::create_dir_all(&dir).map_err(|source| PkiError::CreateDir { path: dir, source })?;
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

/// Checks that the files of the PKI that exist can be read, and explains the usual cause when they cannot:
/// a PKI created by a commissioning command run as root, which the agent's user cannot use.
pub fn check_readable(pki_dir: &Path, files: &[&Path]) -> Result<(), PkiError> {
    for file in files {
        match fs::File::open(file) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(PkiError::NotReadable {
                    file: file.to_path_buf(),
                    pki_dir: pki_dir.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(PkiError::Read {
                    file: file.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Who files in a PKI directory must belong to: the owner of the directory that holds it (the agent's
/// state directory), or of its nearest existing ancestor. Not the PKI directory's own owner: a PKI that an
/// earlier command run as root left behind is given back too.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[cfg(unix)]
pub fn owner_of(pki_dir: &Path) -> Option<Owner> {
    use std::os::unix::fs::MetadataExt;
    let mut at = match pki_dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    };
    while let Some(p) = at {
        if let Ok(m) = fs::metadata(p) {
            return Some(Owner {
                uid: m.uid(),
                gid: m.gid(),
            });
        }
        at = p.parent();
    }
    None
}

/// Gives everything under `pki_dir` (itself included) that belongs to someone else to `owner`, so that a
/// commissioning command run as root leaves files the agent's user can use. Returns how many paths
/// changed owner. Fails (saying what to run instead) when that is not allowed, i.e. when the command ran
/// as a third user.
#[cfg(unix)]
pub fn give_to(pki_dir: &Path, owner: Owner) -> Result<usize, PkiError> {
    use std::os::unix::fs::MetadataExt;
    let mut changed = 0;
    let mut stack = vec![pki_dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
        if meta.uid() != owner.uid || meta.gid() != owner.gid {
            std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid)).map_err(
                |source| PkiError::Chown {
                    path: path.clone(),
                    pki_dir: pki_dir.to_path_buf(),
                    uid: owner.uid,
                    gid: owner.gid,
                    source,
                },
            )?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Lists trusted and rejected server certificates.
pub fn list(pki_dir: &Path) -> Result<Vec<CertEntry>, PkiError> {
    let mut out = Vec::new();
    for state in [CertState::Trusted, CertState::Rejected] {
        let dir = pki_dir.join(state.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PkiError::List { dir, source }),
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
pub fn trust(pki_dir: &Path, selector: &str) -> Result<PathBuf, PkiError> {
    move_one(pki_dir, selector, CertState::Rejected, CertState::Trusted)
}

/// The reverse of [`trust`]: moves a trusted certificate back to `rejected/`.
pub fn untrust(pki_dir: &Path, selector: &str) -> Result<PathBuf, PkiError> {
    move_one(pki_dir, selector, CertState::Trusted, CertState::Rejected)
}

fn move_one(
    pki_dir: &Path,
    selector: &str,
    from: CertState,
    to: CertState,
) -> Result<PathBuf, PkiError> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err(PkiError::NoSelector);
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
                PkiError::NoCertificates {
                    state: from,
                    dir: pki_dir.join(from.dir()),
                }
            } else {
                PkiError::NoMatch {
                    state: from,
                    selector: selector.to_string(),
                    known,
                }
            });
        }
        many => {
            return Err(PkiError::Ambiguous {
                selector: selector.to_string(),
                count: many.len(),
            });
        }
    };
    let file_name = entry
        .path
        .file_name()
        .ok_or_else(|| PkiError::NoFileName(entry.path.clone()))?;
    let target_dir = pki_dir.join(to.dir());
    fs::create_dir_all(&target_dir).map_err(|source| PkiError::CreateDir {
        path: target_dir.clone(),
        source,
    })?;
    let target = target_dir.join(file_name);
    fs::rename(&entry.path, &target).map_err(|source| PkiError::Move {
        from: entry.path.clone(),
        to: target.clone(),
        source,
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
                .to_string()
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

    /// A commissioning command run as root in a state directory owned by the agent's user leaves files
    /// that user owns. Needs root to run; as another user it only checks the refusal message.
    #[cfg(unix)]
    #[test]
    fn files_made_as_root_go_to_the_state_dir_owner() {
        use std::os::unix::fs::MetadataExt;
        let state = tempfile::tempdir().unwrap();
        let pki = state.path().join("opcua-pki");
        let me = fs::metadata(state.path()).unwrap().uid();
        if me != 0 {
            // Not root: giving files to another user is refused with what to run instead.
            ensure_layout(&pki).unwrap();
            let e = give_to(
                &pki,
                Owner {
                    uid: me + 1,
                    gid: me + 1,
                },
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("run the command as that user"), "{e}");
            return;
        }
        std::os::unix::fs::chown(state.path(), Some(4321), Some(4321)).unwrap();
        let owner = owner_of(&pki).unwrap();
        assert_eq!(
            owner,
            Owner {
                uid: 4321,
                gid: 4321
            }
        );
        ensure_layout(&pki).unwrap();
        make_cert(&pki, "server-a");
        let changed = give_to(&pki, owner).unwrap();
        assert!(
            changed >= 6,
            "the dir, four subdirs and the files: {changed}"
        );
        let mut stack = vec![pki.clone()];
        while let Some(p) = stack.pop() {
            let m = fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (4321, 4321), "{}", p.display());
            if m.is_dir() {
                stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        assert_eq!(give_to(&pki, owner).unwrap(), 0, "nothing left to change");
    }
}
