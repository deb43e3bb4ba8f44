//! The PIN threads' Argon2 memory goes back to the kernel when released, not only to the
//! allocator: an idle server must not keep cores x `[pin] memory_kib` resident. Its own test
//! binary, so no other test allocates while the resident size is read.

use otpgate::auth::keys::Keys;
use otpgate::auth::pin::{PinHasher, WorkingMemory};
use otpgate::config::PinConfig;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn released_argon2_memory_leaves_the_process() {
    for memory_kib in [19_456, 65_536] {
        let pins = PinHasher::new(
            Keys::for_tests(),
            &PinConfig {
                memory_kib,
                iterations: 1,
                parallelism: 1,
            },
        )
        .unwrap();
        let hash = pins.hash_for("alice", "2468").unwrap();
        let mut memory = WorkingMemory::default();
        // Twice: the second allocation is the one a reused malloc arena would serve.
        for _ in 0..2 {
            assert!(pins.verify_in(b"2468", &hash, &mut memory));
            let holding = resident_kib();
            memory.release();
            let released = resident_kib();
            assert!(
                holding - released >= u64::from(memory_kib) * 9 / 10,
                "{memory_kib} KiB: resident {holding} KiB while held, {released} KiB after release"
            );
        }
    }
}
