//! The birth/death sequence number (`bdSeq`), kept across restarts.
//!
//! Every MQTT CONNECT carries an NDEATH will whose `bdSeq` is one more (mod 256) than the previous
//! CONNECT's, and the NBIRTH of that connection repeats it (specification 5.2, 6.4.18). A host uses it
//! to tell a late will of an old connection from the death of the current one, so a restart must not
//! start again at a number the host has just seen: the last value used lives in a small file in the
//! state directory, replaced atomically (write a temporary file, fsync, rename) before each CONNECT.

use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "sparkplug-bdseq";

#[derive(Debug, thiserror::Error)]
#[error("cannot persist the Sparkplug bdSeq in {path}: {source}")]
pub struct BdSeqError {
    path: PathBuf,
    source: std::io::Error,
}

#[derive(Debug, Clone)]
pub struct BdSeqFile {
    path: PathBuf,
}

impl BdSeqFile {
    pub fn in_dir(state_dir: &Path) -> Self {
        BdSeqFile {
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last bdSeq used, if a valid one was saved.
    pub fn last(&self) -> Option<u8> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        match text.trim().parse::<u8>() {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(path = %self.path.display(), "ignoring an unreadable Sparkplug bdSeq file");
                None
            }
        }
    }

    /// The bdSeq for the next CONNECT (one more than the last, 0 after 255 or on the very first
    /// start), saved before it is returned so a crash right after the CONNECT cannot reuse it.
    pub fn next(&self) -> Result<u8, BdSeqError> {
        let next = self.last().map_or(0, |v| v.wrapping_add(1));
        self.save(next)?;
        Ok(next)
    }

    fn save(&self, value: u8) -> Result<(), BdSeqError> {
        let err = |source| BdSeqError {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        writeln!(tmp, "{value}").map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_across_instances_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let f = BdSeqFile::in_dir(dir.path());
        assert_eq!(f.last(), None);
        assert_eq!(f.next().unwrap(), 0);
        assert_eq!(f.next().unwrap(), 1);
        // A new process reads what the previous one saved.
        let again = BdSeqFile::in_dir(dir.path());
        assert_eq!(again.next().unwrap(), 2);
        std::fs::write(again.path(), "255\n").unwrap();
        assert_eq!(again.next().unwrap(), 0, "255 wraps to 0");
        assert_eq!(again.last(), Some(0));
    }

    #[test]
    fn an_unreadable_file_starts_again_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let f = BdSeqFile::in_dir(dir.path());
        std::fs::write(f.path(), "garbage").unwrap();
        assert_eq!(f.next().unwrap(), 0);
        std::fs::write(f.path(), "300").unwrap();
        assert_eq!(f.next().unwrap(), 0);
    }
}
