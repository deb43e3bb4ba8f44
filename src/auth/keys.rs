//! The key file and what is derived from it: the AES-256-GCM key that seals HOTP seeds at
//! rest, and the pepper that Argon2 takes as its secret input (DESIGN section 4), so a copy of
//! the database alone allows neither reading seeds nor guessing PINs offline.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Keys derived from the key file. `Debug` prints nothing secret.
#[derive(Clone)]
pub struct Keys {
    seal: [u8; 32],
    pepper: [u8; 32],
    /// Keys the MAC of a challenge's code, which the store compares (`code_mac`).
    code: [u8; 32],
    /// Derives each user's PIN salt (`pin_salt`).
    salt: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("a sealed seed could not be opened (wrong key file or damaged database)")]
    Unseal,
    #[error("the operating system gave no randomness: {0}")]
    Random(String),
}

impl Keys {
    /// Reads the key file, creating it (mode 0600, 32 random bytes as hex) if it is missing.
    /// A key file that group or others may read or write is refused: whoever reads it can
    /// unseal every seed from a copy of the database.
    pub fn load_or_create(path: &Path) -> Result<Keys, KeyError> {
        let problem = |problem: String| KeyError::File {
            path: path.display().to_string(),
            problem,
        };
        match read_private(path) {
            Ok(Err(mode)) => Err(problem(format!(
                "open to group or others (mode {mode:04o}), but it unseals every seed; \
                 run `chmod 600 {}`",
                path.display()
            ))),
            Ok(Ok(text)) => {
                let master = hex::decode(text.trim()).map_err(|_| problem("not hex".into()))?;
                if master.len() != 32 {
                    return Err(problem(format!(
                        "holds {} bytes, expected 32",
                        master.len()
                    )));
                }
                Ok(Keys::derive(&master))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut master = [0u8; 32];
                random(&mut master)?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| problem(format!("cannot create folder: {e}")))?;
                }
                write_private(path, hex::encode(master).as_bytes())
                    .map_err(|e| problem(format!("cannot create: {e}")))?;
                tracing::info!(path = %path.display(), "created key file");
                Ok(Keys::derive(&master))
            }
            Err(e) => Err(problem(format!("cannot read: {e}"))),
        }
    }

    fn derive(master: &[u8]) -> Keys {
        Keys {
            seal: derive(master, b"otpgate seed seal v1"),
            pepper: derive(master, b"otpgate pin pepper v1"),
            code: derive(master, b"otpgate code mac v1"),
            salt: derive(master, b"otpgate pin salt v1"),
        }
    }

    /// Keys for tests, from a fixed master key.
    pub fn for_tests() -> Keys {
        Keys::derive(&[42u8; 32])
    }

    /// The Argon2 secret input.
    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }

    /// The MAC a challenge stores in place of its code, and an answer is compared by. Keyed,
    /// so a copy of the database does not give the codes of open challenges away (a
    /// 6-digit code is found from an unkeyed hash at once); bound to the user, so one user's
    /// MAC is no other's.
    pub fn code_mac(&self, user: &str, code: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.code)
            .expect("HMAC takes keys of any length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        mac.finalize().into_bytes().to_vec()
    }

    /// The Argon2 salt of every PIN of `user`. One salt per user, not per token, so that
    /// one Argon2 run checks a password against all of the user's tokens: what a login costs
    /// does not tell how many tokens a user has (DESIGN section 8, equal outside view).
    /// Derived with a key, so it is unique per deployment and user all the same.
    pub fn pin_salt(&self, user: &str) -> [u8; 16] {
        let full = derive(&self.salt, user.as_bytes());
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&full[..16]);
        salt
    }

    /// Encrypts a seed: 12-byte random nonce followed by ciphertext and tag.
    pub fn seal(&self, seed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let cipher = Aes256Gcm::new((&self.seal).into());
        let mut nonce = [0u8; 12];
        random(&mut nonce)?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), seed)
            .map_err(|_| KeyError::Unseal)?;
        Ok([&nonce[..], &sealed].concat())
    }

    /// Decrypts what `seal` produced.
    pub fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (nonce, ciphertext) = sealed.split_at_checked(12).ok_or(KeyError::Unseal)?;
        let cipher = Aes256Gcm::new((&self.seal).into());
        cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| KeyError::Unseal)
    }
}

fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (RFC 2104).
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The key file's text, or its mode if group or others have access to it. The mode is read
/// from the open file, so it is the mode of the file that would have been read.
fn read_private(path: &Path) -> std::io::Result<Result<String, u32>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    if crate::files::is_open_to_others(mode) {
        return Ok(Err(mode));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Ok(text))
}

/// Fills `buf` from the OS CSPRNG.
pub fn random(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Random(e.to_string()))
}

/// Creates a file readable only by its owner; fails if it exists.
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_file_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/otpgate.key");
        let first = Keys::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let second = Keys::load_or_create(&path).unwrap();
        assert_eq!(first.pepper(), second.pepper());
        let sealed = first.seal(b"seed").unwrap();
        assert_eq!(second.unseal(&sealed).unwrap(), b"seed");
    }

    #[test]
    fn a_tampered_or_foreign_seed_does_not_open() {
        let keys = Keys::for_tests();
        let mut sealed = keys.seal(b"0123456789abcdefghij").unwrap();
        assert_ne!(&sealed[12..32], b"0123456789abcdefghij");
        sealed[20] ^= 1;
        assert!(keys.unseal(&sealed).is_err());
        assert!(keys.unseal(&[1, 2, 3]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let other = Keys::load_or_create(&dir.path().join("k")).unwrap();
        assert!(other.unseal(&keys.seal(b"x").unwrap()).is_err());
    }

    #[test]
    fn a_key_file_open_to_group_or_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        Keys::load_or_create(&path).unwrap();
        for loose in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = Keys::load_or_create(&path).unwrap_err().to_string();
            let fix = format!("run `chmod 600 {}`", path.display());
            assert!(
                err.starts_with(&path.display().to_string()) && err.contains(&fix),
                "{err}"
            );
            assert!(err.contains(&format!("mode {loose:04o}")), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            Keys::load_or_create(&path).is_ok(),
            "read-only for the owner is fine"
        );
    }

    #[test]
    fn a_broken_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_private(&path, b"zz").unwrap();
        let err = Keys::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("not hex") && err.contains(&path.display().to_string()),
            "{err}"
        );
    }
}
