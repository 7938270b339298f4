//! Reading the files a config consists of or names, safely: only regular files (a FIFO would block the
//! reader, a device such as /dev/zero never ends), and only up to a size cap, so `check` and `run` can
//! neither hang nor run out of memory on a stray special file in conf.d.

use std::io::Read;
use std::path::Path;

/// Largest config file read (main or conf.d).
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads a regular file of at most `cap` bytes. Symlinks are followed; what they point to must be a
/// regular file too. The error says what is wrong without the file's content.
pub fn bounded(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    regular(&meta, cap)?;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    // Checked again on the open file, in case it was replaced in between.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    regular(&meta, cap)?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("is larger than {} bytes (it grew while read)", cap));
    }
    Ok(bytes)
}

/// [`bounded`], as UTF-8 text.
pub fn bounded_text(path: &Path, cap: u64) -> Result<String, String> {
    String::from_utf8(bounded(path, cap)?).map_err(|_| "is not UTF-8 text".to_string())
}

fn regular(meta: &std::fs::Metadata, cap: u64) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("a special file")
    };
    if let Some(kind) = kind {
        return Err(format!("is {kind}, not a regular file"));
    }
    if meta.len() > cap {
        return Err(format!(
            "is {} bytes, more than the {} bytes allowed",
            meta.len(),
            cap
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_and_oversized_files_are_refused_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(
            bounded(&zero, MAX_CONFIG_FILE)
                .unwrap_err()
                .contains("a device")
        );
        let fifo = dir.path().join("fifo.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(
            bounded(&fifo, MAX_CONFIG_FILE)
                .unwrap_err()
                .contains("a FIFO")
        );
        assert!(
            bounded(dir.path(), MAX_CONFIG_FILE)
                .unwrap_err()
                .contains("a directory")
        );
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2000]).unwrap();
        assert!(bounded(&big, 1000).unwrap_err().contains("2000 bytes"));
        assert_eq!(bounded(&big, 2000).unwrap().len(), 2000);
    }
}
