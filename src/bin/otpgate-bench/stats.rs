//! Latency samples per step, operation counts, and the server's CPU time and peak RSS read
//! from /proc.

use std::time::Duration;

#[derive(Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    pub fn add(&mut self, elapsed: Duration) {
        self.micros
            .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// (p50, p90, p99, max) in milliseconds.
    pub fn percentiles(&self) -> Option<(f64, f64, f64, f64)> {
        if self.micros.is_empty() {
            return None;
        }
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let at =
            |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
        Some((at(0.50), at(0.90), at(0.99), at(1.0)))
    }
}

/// The server's CPU seconds at one moment: all of it, and the part outside Argon2.
#[derive(Clone, Copy, Default)]
pub struct CpuUse {
    pub total: f64,
    pub outside_argon2: Option<f64>,
}

impl CpuUse {
    pub fn of(pid: u32) -> Option<CpuUse> {
        Some(CpuUse {
            total: cpu_seconds(pid)?,
            outside_argon2: cpu_seconds_outside_argon2(pid),
        })
    }

    /// The sum over several processes (nodes); None if any cannot be read.
    pub fn of_all(pids: &[u32]) -> Option<CpuUse> {
        let mut sum: Option<CpuUse> = None;
        for pid in pids {
            let one = CpuUse::of(*pid)?;
            sum = Some(match sum {
                None => one,
                Some(s) => CpuUse {
                    total: s.total + one.total,
                    outside_argon2: s.outside_argon2.zip(one.outside_argon2).map(|(a, b)| a + b),
                },
            });
        }
        sum
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuUse) -> CpuUse {
        CpuUse {
            total: self.total - earlier.total,
            outside_argon2: self
                .outside_argon2
                .zip(earlier.outside_argon2)
                .map(|(now, then)| now - then),
        }
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Some((fields.ticks(11)? + fields.ticks(12)?) / clock_ticks())
}

/// CPU seconds a PostgreSQL cluster has used so far: its postmaster with the children it
/// reaped (cutime, cstime) and the children still running (the backends of the pool's
/// connections).
pub fn cluster_cpu_seconds(postmaster: u32) -> Option<f64> {
    let own = stat_fields(postmaster)?;
    let mut ticks = (11..=14).map(|i| own.ticks(i)).sum::<Option<f64>>()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The parent's pid is field 4 of stat, 2 after the name.
        if let Some(child) = stat_fields(pid).filter(|f| f.ticks(1) == Some(f64::from(postmaster)))
        {
            ticks += child.ticks(11).unwrap_or(0.0) + child.ticks(12).unwrap_or(0.0);
        }
    }
    Some(ticks / clock_ticks())
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
struct StatFields(Vec<String>);

impl StatFields {
    fn ticks(&self, i: usize) -> Option<f64> {
        self.0.get(i)?.parse().ok()
    }
}

fn stat_fields(pid: u32) -> Option<StatFields> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(StatFields(
        after.split_whitespace().map(str::to_string).collect(),
    ))
}

/// CPU seconds the server's threads outside its Argon2 pool have used so far: the request
/// path (receive loop, async workers, store thread), which the PIN hash would otherwise
/// hide. Read from each thread's schedstat (nanoseconds), since USER_HZ ticks are too
/// coarse for a fraction of a millisecond per flow. A thread that ends during the run takes
/// its time with it; otpgate's request threads live as long as the server.
fn cpu_seconds_outside_argon2(pid: u32) -> Option<f64> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if name.starts_with(otpgate::auth::pin_pool::THREAD_NAME_PREFIX) {
            continue;
        }
        let schedstat = match std::fs::read_to_string(path.join("schedstat")) {
            Ok(text) => text,
            Err(_) if !path.exists() => continue,
            // A kernel without CONFIG_SCHED_INFO has no schedstat: no figure then.
            Err(_) => return None,
        };
        nanos += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// Peak resident set size in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn clock_ticks() -> f64 {
    // Linux reports /proc times in USER_HZ, which is 100 on every mainstream architecture.
    100.0
}
