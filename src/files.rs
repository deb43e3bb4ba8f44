//! File modes of what otpgate keeps on disk. The database (with its `-wal` and `-shm` files)
//! and the key file are the owner's only: the database holds PIN hashes, sealed seeds and the
//! audit trail, the key file what unseals them. Unix only, as the rest of otpgate (the
//! listener needs IP_PKTINFO).

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Owner read and write, nothing for group or others.
pub const PRIVATE: u32 = 0o600;

/// Permission bits that give group or others any access.
const GROUP_OR_OTHERS: u32 = 0o077;

/// Prepares an SQLite database's files before SQLite opens them: creates the database file
/// as 0600 if it is missing (SQLite would create it 0644 and give its `-wal` and `-shm` files
/// the database file's mode), and sets the database, `-wal` and `-shm` files that exist to
/// 0600 if group or others have access, with a warning. A file that cannot be tightened
/// (another user owns it) is left as it is, with a warning too: refusing to open would
/// change nothing about who can read it.
pub fn private_database(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(path)
    {
        Ok(_) => {}
        // Existing: left for SQLite, which may open it read-only if that is all we may do.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for file in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        match tighten(&file) {
            Ok(None) => {}
            Ok(Some(was)) => {
                tracing::warn!(path = %file.display(), was = %format!("{was:04o}"), "database file was open to group or others; mode set to 0600");
            }
            Err(e) => {
                tracing::warn!(path = %file.display(), error = %e, "database file is open to group or others and its mode cannot be changed");
            }
        }
    }
    Ok(())
}

/// Sets `path` to 0600 if group or others have access to it; returns the mode it had then.
/// A missing file is fine (None).
fn tighten(path: &Path) -> io::Result<Option<u32>> {
    let mode = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !is_open_to_others(mode) {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE))?;
    Ok(Some(mode))
}

/// Whether a mode gives group or others any access.
pub fn is_open_to_others(mode: u32) -> bool {
    mode & GROUP_OR_OTHERS != 0
}

/// `path` with `suffix` appended to its file name, as SQLite names its side files.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_file_is_private_and_loose_side_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db");
        private_database(&path).unwrap();
        assert_eq!(mode(&path), 0o600);

        let wal = sibling(&path, "-wal");
        std::fs::write(&wal, b"").unwrap();
        for (file, loose) in [(&path, 0o644), (&wal, 0o640)] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(loose)).unwrap();
        }
        private_database(&path).unwrap();
        assert_eq!((mode(&path), mode(&wal)), (0o600, 0o600));
        assert!(
            !sibling(&path, "-shm").exists(),
            "missing side files stay missing"
        );
    }
}
