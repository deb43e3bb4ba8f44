//! PIN hashing with Argon2id, keyed with the pepper from the key file (DESIGN section 4).
//! Hashing is slow on purpose: the server runs it on its own threads (`pin_pool`), never on
//! the receive loop.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::keys::Keys;
use crate::config::{MAX_MEMORY_KIB, PinConfig};

/// Hashes and verifies PINs with one cost setting and pepper.
#[derive(Clone)]
pub struct PinHasher {
    keys: Keys,
    params: Params,
}

/// What Argon2 made of one password candidate for one user: the hash part of the PHC string
/// every token of the user with this PIN holds. Wiped when dropped.
pub struct Digest(zeroize::Zeroizing<Vec<u8>>);

/// How a token's PIN hash relates to a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    Match,
    NoMatch,
    /// Not made with the user's salt and the current cost (a hash from before per-user
    /// salts, or from another `[pin]` setting): it needs an Argon2 run of its own.
    OwnRun,
}

impl PinHasher {
    pub fn new(keys: Keys, config: &PinConfig) -> Result<Self, String> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| format!("Argon2 parameters: {e}"))?;
        Ok(PinHasher { keys, params })
    }

    /// Argon2 keyed with the pepper. None only if the pepper were over Argon2's secret limit,
    /// which a 32-byte pepper is not.
    fn argon2(&self, algorithm: Algorithm, version: Version, params: Params) -> Option<Argon2<'_>> {
        Argon2::new_with_secret(self.keys.pepper(), algorithm, version, params).ok()
    }

    /// The PHC string for `user`'s PIN: Argon2id with the current cost and the user's salt.
    pub fn hash_for(&self, user: &str, pin: &str) -> Result<String, String> {
        let salt = SaltString::encode_b64(&self.keys.pin_salt(user)).map_err(|e| e.to_string())?;
        self.argon2(Algorithm::Argon2id, Version::V0x13, self.params.clone())
            .ok_or("the pepper does not fit Argon2")?
            .hash_password(pin.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| format!("cannot hash PIN: {e}"))
    }

    /// One Argon2 run: `candidate` as `user`'s PIN, with the current cost. The same run
    /// whether or not the user exists, so an unknown user costs what a known one does.
    pub fn digest(&self, user: &str, candidate: &[u8], memory: &mut WorkingMemory) -> Digest {
        let mut output = zeroize::Zeroizing::new(vec![0u8; self.params.output_len().unwrap_or(32)]);
        let salt = self.keys.pin_salt(user);
        let blocks = memory.blocks(self.params.block_count());
        let computed = self
            .argon2(Algorithm::Argon2id, Version::V0x13, self.params.clone())
            .is_some_and(|argon2| {
                argon2
                    .hash_password_into_with_memory(candidate, &salt, &mut output[..], blocks)
                    .is_ok()
            });
        if !computed {
            // Cannot happen with checked parameters; an empty digest matches nothing.
            output.clear();
        }
        Digest(output)
    }

    /// Whether `hash` (a token's PHC string) is `digest`, compared in constant time.
    pub fn compare(&self, user: &str, digest: &Digest, hash: &str) -> Compared {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return Compared::NoMatch;
        };
        let same_setting = Algorithm::try_from(parsed.algorithm) == Ok(Algorithm::Argon2id)
            && parsed.version == Some(Version::V0x13 as u32)
            && Params::try_from(&parsed).is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    == (
                        self.params.m_cost(),
                        self.params.t_cost(),
                        self.params.p_cost(),
                    )
                    && p.output_len() == Some(self.params.output_len().unwrap_or(32))
            });
        let mut salt_bytes = [0u8; 64];
        let same_salt = parsed
            .salt
            .and_then(|salt| salt.decode_b64(&mut salt_bytes).ok())
            .is_some_and(|salt| salt == self.keys.pin_salt(user));
        if !(same_setting && same_salt) {
            return Compared::OwnRun;
        }
        match parsed.hash {
            Some(expected) if !digest.0.is_empty() => {
                if bool::from(expected.as_bytes().ct_eq(&digest.0)) {
                    Compared::Match
                } else {
                    Compared::NoMatch
                }
            }
            _ => Compared::NoMatch,
        }
    }

    /// Whether `pin` matches `hash`, with working memory allocated for this call only.
    pub fn verify(&self, pin: &[u8], hash: &str) -> bool {
        self.verify_in(pin, hash, &mut WorkingMemory::default())
    }

    /// Whether `pin` matches `hash`. Uses the cost stored in the hash, so changing `[pin]`
    /// affects new PINs only. A damaged hash never matches. `memory` is reused across calls:
    /// allocating Argon2's memory per call costs about ten times the page faults (the
    /// allocator gives much of it back in between), and on a busy server those faults
    /// contend on the kernel's address-space lock (see BENCHMARKS.md).
    pub fn verify_in(&self, pin: &[u8], hash: &str, memory: &mut WorkingMemory) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from) {
            None => Version::V0x13,
            Some(Ok(version)) => version,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        if params.m_cost() > MAX_MEMORY_KIB {
            return false;
        }
        let mut salt_bytes = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let blocks = params.block_count();
        let Some(argon2) = self.argon2(algorithm, version, params) else {
            return false;
        };
        let blocks = memory.blocks(blocks);
        let mut computed = [0u8; 64];
        let Some(computed) = computed.get_mut(..expected.len()) else {
            return false;
        };
        argon2
            .hash_password_into_with_memory(pin, salt, computed, blocks)
            .is_ok()
            && bool::from(computed.ct_eq(expected.as_bytes()))
    }
}

/// Blocks to reserve at least; see `WorkingMemory::blocks`.
const MAPPED_BLOCKS: usize = 32 * 1024 + 1;

/// Argon2's memory, kept by a thread between verifications and wiped when given back.
///
/// Between two verifications it holds the last one's final state. With the default two or
/// more passes every block has been rewritten from the whole first pass, so testing a PIN
/// guess against it costs a full Argon2 run; with one pass (a cheap setting for tests) the
/// first blocks are cheap to reproduce.
#[derive(Default)]
pub struct WorkingMemory {
    blocks: Vec<Block>,
    /// Bytes held, summed over the memories that share the gauge.
    gauge: Option<Arc<AtomicUsize>>,
}

impl WorkingMemory {
    /// Memory that adds what it holds to `gauge`, and takes it off again when released.
    pub fn counted(gauge: Arc<AtomicUsize>) -> WorkingMemory {
        WorkingMemory {
            blocks: Vec::new(),
            gauge: Some(gauge),
        }
    }

    /// At least `count` blocks; grows, never shrinks, until released.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.release();
            // Reserving more than glibc's largest mmap threshold (32 MiB) makes the memory a
            // mapping of its own, which `release` hands back to the kernel. Smaller blocks can
            // come from a malloc arena that keeps the pages after free, and an idle server
            // would keep cores x 19 MiB resident. The reserve past `count` is never touched,
            // so it is address space, not memory.
            let mut blocks = Vec::with_capacity(count.max(MAPPED_BLOCKS));
            blocks.resize(count, Block::default());
            self.blocks = blocks;
            if let Some(gauge) = &self.gauge {
                gauge.fetch_add(self.bytes(), Ordering::Relaxed);
            }
        }
        &mut self.blocks[..count]
    }

    /// Wipes and frees the memory; the next verification allocates it again.
    pub fn release(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.fetch_sub(self.bytes(), Ordering::Relaxed);
        }
        self.blocks.iter_mut().for_each(Zeroize::zeroize);
        self.blocks = Vec::new();
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }
}

impl Drop for WorkingMemory {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PinConfig {
        PinConfig {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn verifies_the_right_pin_only() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash_for("alice", "1234").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify(b"1234", &hash));
        assert!(!hasher.verify(b"1235", &hash));
        assert!(!hasher.verify(b"1234", "garbage"));
    }

    #[test]
    fn the_pepper_is_part_of_the_hash() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash_for("alice", "1234").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other_keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let other = PinHasher::new(other_keys, &cheap()).unwrap();
        assert!(!other.verify(b"1234", &hash));
    }

    /// Every PHC variant argon2's own `verify_password` accepted still verifies (otpgate now
    /// computes the hash itself to reuse the memory), and nothing else does.
    #[test]
    fn verifies_every_argon2_variant_with_kept_memory() {
        use argon2::password_hash::PasswordHasher;
        let keys = Keys::for_tests();
        let hasher = PinHasher::new(keys.clone(), &cheap()).unwrap();
        let mut memory = WorkingMemory::default();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for (algorithm, version, memory_kib, output) in [
            (Algorithm::Argon2id, Version::V0x13, 64, 32),
            (Algorithm::Argon2i, Version::V0x13, 16, 16),
            (Algorithm::Argon2d, Version::V0x10, 128, 64),
            (Algorithm::Argon2id, Version::V0x10, 8, 32),
        ] {
            let params = Params::new(memory_kib, 2, 1, Some(output)).unwrap();
            let argon2 =
                Argon2::new_with_secret(keys.pepper(), algorithm, version, params).unwrap();
            let phc = argon2.hash_password(b"2468", &salt).unwrap().to_string();
            assert!(hasher.verify_in(b"2468", &phc, &mut memory), "{phc}");
            assert!(!hasher.verify_in(b"2469", &phc, &mut memory), "{phc}");
            assert!(hasher.verify(b"2468", &phc), "{phc}");
        }
        assert_eq!(memory.bytes(), 128 * 1024, "grown to the largest cost seen");
        memory.release();
        assert_eq!(memory.bytes(), 0);
        let greedy = Params::new(MAX_MEMORY_KIB + 8, 1, 1, None).unwrap();
        let greedy =
            Argon2::new_with_secret(keys.pepper(), Algorithm::Argon2id, Version::V0x13, greedy)
                .unwrap();
        let phc = hasher.hash_for("alice", "2468").unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        let mut forged = parsed.clone();
        forged.params = argon2::password_hash::ParamsString::try_from(greedy.params()).unwrap();
        assert!(!hasher.verify_in(b"2468", &forged.to_string(), &mut memory));
        assert_eq!(
            memory.bytes(),
            0,
            "a hash asking for too much memory allocates none"
        );
        let without_hash = hasher.hash_for("alice", "2468").unwrap();
        let without_hash = &without_hash[..without_hash.rfind('$').unwrap()];
        assert!(!hasher.verify_in(b"2468", without_hash, &mut memory));
    }

    #[test]
    fn old_hashes_verify_after_the_cost_changes() {
        let hasher = PinHasher::new(Keys::for_tests(), &cheap()).unwrap();
        let hash = hasher.hash_for("alice", "1234").unwrap();
        let costlier = PinHasher::new(
            Keys::for_tests(),
            &PinConfig {
                memory_kib: 64,
                iterations: 2,
                parallelism: 1,
            },
        )
        .unwrap();
        assert!(costlier.verify(b"1234", &hash));
    }
}
