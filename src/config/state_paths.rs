//! The paths `run` creates or opens at start — the state directory, the database and the high-water
//! marks beside it — checked against what is on disk now, so `check` refuses a state directory that is
//! a file or a database path that is some other file (found by tests/config_fuzz.rs:
//! `state_dir = "../../../../etc/passwd"` passed `check` and stopped `run`). Permissions are not judged
//! here: `check` may run as another user than the service.

use std::io::Read;
use std::path::Path;

use super::checker::Checker;

impl Checker<'_> {
    pub(super) fn check_state_paths(&mut self, state_dir: &Path, db: &Path) {
        if let Err(e) = creatable_dir(state_dir) {
            self.push("agent.state_dir", e);
        }
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = creatable_dir(parent)
        {
            self.push("store.path", e);
        }
        if let Err(e) = sqlite_or_absent(db) {
            self.push("store.path", e);
        }
        let marks = crate::store::marks_path(db);
        if marks.is_dir() {
            self.push(
                "store.path",
                format!(
                    "{} (the high-water marks beside the database) is a directory",
                    marks.display()
                ),
            );
        }
    }
}

/// `path` is a directory, or can be made one: it and every ancestor that exists are directories.
fn creatable_dir(path: &Path) -> Result<(), String> {
    for p in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) if p == path => {
                return Err(format!("{} exists and is not a directory", path.display()));
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be created: {} is not a directory",
                    path.display(),
                    p.display()
                ));
            }
            // Not there (yet): `run` creates it below the nearest ancestor that is there.
            Err(_) => continue,
        }
    }
    Ok(())
}

/// The database file is absent, empty, or an SQLite database (its 16-byte magic header).
fn sqlite_or_absent(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Err(format!(
            "{} exists and is not a regular file",
            path.display()
        ));
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = [0u8; 16];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) if &head == b"SQLite format 3\0" => Ok(()),
        Ok(()) => Err(format!("{} is not an SQLite database", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(format!("{} is not an SQLite database", path.display()))
        }
        // Unreadable to the user running `check`: `run` (as the service user) reports it itself.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            creatable_dir(&file)
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(
            creatable_dir(&file.join("below"))
                .unwrap_err()
                .contains("cannot be created")
        );
        assert!(creatable_dir(&dir.path().join("new/deeper")).is_ok());
        assert!(creatable_dir(dir.path()).is_ok());
    }

    #[test]
    fn a_database_path_must_be_absent_empty_or_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lineside.db");
        assert!(sqlite_or_absent(&db).is_ok());
        std::fs::write(&db, b"").unwrap();
        assert!(sqlite_or_absent(&db).is_ok());
        std::fs::write(&db, b"root:x:0:0:root:/root:/bin/bash\n").unwrap();
        assert!(sqlite_or_absent(&db).unwrap_err().contains("not an SQLite"));
        std::fs::write(&db, b"SQLite format 3\0rest of the header").unwrap();
        assert!(sqlite_or_absent(&db).is_ok());
        assert!(
            sqlite_or_absent(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
