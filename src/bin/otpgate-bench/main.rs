//! otpgate-bench: a RADIUS load generator. `status` sends Status-Server; `flow` runs the
//! whole SMS challenge-response per user (PIN -> Access-Challenge -> OTP from the capture
//! gateway -> State + OTP -> Access-Accept); `oneshot` sends the PIN, then PIN + OTP;
//! `flood` floods from one RADIUS client while a user logs in from another (`flood.rs`).
//! Closed loop (a number of workers flat out) or open loop (`--rate`, latency counted from
//! the scheduled start so a slow server cannot hide its queue). Works against any RADIUS
//! server for `status`.

mod capture;
mod client;
mod flood;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use otpgate::radius::packet::code;
use tokio::sync::Mutex;

use capture::Capture;
use client::{Client, Failure};
use stats::{CpuUse, Samples};

#[derive(Parser)]
#[command(
    name = "otpgate-bench",
    about = "RADIUS load generator for otpgate and other servers"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The RADIUS server.
    #[arg(long, default_value = "127.0.0.1:1812")]
    server: SocketAddr,
    #[arg(long)]
    secret: String,
    /// Workers (requests or flows in flight).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Operations per second to start (open loop); flat out when left out.
    #[arg(long)]
    rate: Option<f64>,
    /// Reply timeout per request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The server's PID, for CPU seconds and peak RSS from /proc; repeat it for several
    /// nodes (CPU is summed, RSS is the largest).
    #[arg(long)]
    pid: Vec<u32>,
    /// The PostgreSQL postmaster's PID: the database's CPU (every backend's) is reported
    /// beside the server's.
    #[arg(long)]
    database_pid: Option<u32>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(clap::Args, Clone)]
struct Users {
    /// Users bench-000000 ... with phones PHONE_BASE + index (see `otpgate-bench users`).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// First user index used (to run on a slice of the enrolled users).
    #[arg(long, default_value_t = 0)]
    first_user: usize,
    #[arg(long, default_value = "4711")]
    pin: String,
    /// Where the capture gateway listens (otpgate's http gateway posts SMS there).
    #[arg(long, default_value = "127.0.0.1:9925")]
    capture: SocketAddr,
    /// Besides the flows: this many more users, from --stalled-first on, whose gateway
    /// never answers, each sending its PIN once at --stalled-rate per second.
    #[arg(long, default_value_t = 0)]
    stalled_users: usize,
    #[arg(long, default_value_t = 0)]
    stalled_first: usize,
    #[arg(long, default_value_t = 50.0)]
    stalled_rate: f64,
    /// Send the answer step (State + OTP) to this server instead: another node sharing the
    /// first one's database.
    #[arg(long)]
    answer_server: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Mode {
    /// Status-Server with Message-Authenticator.
    Status(Common),
    /// The full SMS challenge-response flow.
    Flow {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        users: Users,
    },
    /// PIN -> SMS, then PIN + OTP.
    Oneshot {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        users: Users,
    },
    /// PIN only, once per user: leaves one open challenge per user (for memory figures).
    Challenges {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        users: Users,
    },
    /// Unknown-user PIN requests from one client at a multiple of the measured capacity,
    /// while a user logs in from another client; prints what that user saw and how long
    /// the server takes to recover.
    Flood(flood::FloodArgs),
    /// Time one Argon2id PIN verification with the given cost, as otpgate does it.
    Argon2 {
        #[arg(long, default_value_t = 19456)]
        memory_kib: u32,
        #[arg(long, default_value_t = 2)]
        iterations: u32,
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
        #[arg(long, default_value_t = 20)]
        count: u32,
    },
    /// Write users and tokens as CSV for `otpgate user import` / `token import`.
    Users {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "4711")]
        pin: String,
        #[arg(long)]
        users_csv: std::path::PathBuf,
        #[arg(long)]
        tokens_csv: std::path::PathBuf,
        /// Tokens of users from this index on send through this gateway.
        #[arg(long)]
        gateway_from: Option<usize>,
        #[arg(long, default_value = "stall")]
        gateway: String,
    },
}

/// Phone numbers of bench users: +49150 followed by the index, 8 digits.
fn user(index: usize) -> (String, String) {
    (format!("bench-{index:06}"), format!("+49150{index:08}"))
}

/// What one worker measured.
#[derive(Default)]
struct Tally {
    completed: u64,
    errors: u64,
    timeouts: u64,
    steps: [Samples; 4],
    /// The first error, to say what went wrong.
    first_error: Option<String>,
    /// Replies without a Message-Authenticator.
    unsigned: u64,
    /// Flows of users whose gateway stalls: challenges received.
    stalled: u64,
}

const STEP_NAMES: [&str; 4] = ["first reply", "sms", "answer", "total"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.mode {
        Mode::Users {
            count,
            pin,
            users_csv,
            tokens_csv,
            gateway_from,
            gateway,
        } => write_users(
            count,
            &pin,
            &users_csv,
            &tokens_csv,
            gateway_from.map(|from| (from, gateway.as_str())),
        ),
        Mode::Argon2 {
            memory_kib,
            iterations,
            parallelism,
            count,
        } => {
            let pins = otpgate::auth::pin::PinHasher::new(
                otpgate::auth::keys::Keys::for_tests(),
                &otpgate::config::PinConfig {
                    memory_kib,
                    iterations,
                    parallelism,
                },
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let hash = pins
                .hash_for("bench", "4711")
                .map_err(|e| anyhow::anyhow!(e))?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            // One thread, as otpgate's PIN threads run it: memory kept between verifications.
            let each = 1.0 / verifications_per_second(&pins, &hash, count, 1, Memory::Kept);
            // The same verifications on every core at once: what the machine really sustains
            // when memory bandwidth and caches are shared.
            let parallel = verifications_per_second(&pins, &hash, count, cores, Memory::Kept);
            // For comparison: fresh memory for each verification (`PinHasher::verify`, a new
            // mapping each time), what kept memory saves.
            let fresh = verifications_per_second(&pins, &hash, count, cores, Memory::Fresh);
            println!(
                "{}",
                serde_json::json!({
                    "verify_ms": each * 1000.0,
                    "cores": cores,
                    "bound_per_second": cores as f64 / each,
                    "parallel_per_second": parallel,
                    "parallel_fresh_memory_per_second": fresh,
                })
            );
            Ok(())
        }
        Mode::Challenges { common, users } => {
            runtime.block_on(run(common, Some(users), Kind::Challenges))
        }
        Mode::Status(common) => runtime.block_on(run(common, None, Kind::Status)),
        Mode::Flood(args) => runtime.block_on(flood::run(args)),
        Mode::Flow { common, users } => runtime.block_on(run(common, Some(users), Kind::Flow)),
        Mode::Oneshot { common, users } => {
            runtime.block_on(run(common, Some(users), Kind::Oneshot))
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Memory {
    Kept,
    Fresh,
}

/// Runs `count` verifications on each of `threads` threads (after one untimed warm-up each)
/// and returns verifications per second over all of them.
fn verifications_per_second(
    pins: &otpgate::auth::pin::PinHasher,
    hash: &str,
    count: u32,
    threads: usize,
    memory: Memory,
) -> f64 {
    let barrier = std::sync::Barrier::new(threads + 1);
    let started = std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut kept = otpgate::auth::pin::WorkingMemory::default();
                pins.verify_in(b"4711", hash, &mut kept);
                barrier.wait();
                for _ in 0..count {
                    match memory {
                        Memory::Kept => pins.verify_in(b"4711", hash, &mut kept),
                        Memory::Fresh => pins.verify(b"4711", hash),
                    };
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    f64::from(count) * threads as f64 / started.elapsed().as_secs_f64()
}

fn write_users(
    count: usize,
    pin: &str,
    users_csv: &std::path::Path,
    tokens_csv: &std::path::Path,
    gateway: Option<(usize, &str)>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut users = std::io::BufWriter::new(std::fs::File::create(users_csv)?);
    let mut tokens = std::io::BufWriter::new(std::fs::File::create(tokens_csv)?);
    writeln!(users, "name,phone")?;
    writeln!(tokens, "user,pin,gateway")?;
    for index in 0..count {
        let (name, phone) = user(index);
        writeln!(users, "{name},{phone}")?;
        let own = gateway
            .filter(|(from, _)| index >= *from)
            .map_or("", |(_, g)| g);
        writeln!(tokens, "{name},{pin},{own}")?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Status,
    Flow,
    Oneshot,
    Challenges,
}

async fn run(common: Common, users: Option<Users>, kind: Kind) -> anyhow::Result<()> {
    let capture = Capture::default();
    let tls = tls::TlsOptions::from_args(&common.tls)?;
    if let Some(users) = &users {
        anyhow::ensure!(
            users.users >= common.concurrency,
            "--users must be at least --concurrency"
        );
        // Another bench process may already serve the capture gateway on this port (two
        // loads side by side); then SMS go there, and this one only waits for replies.
        match capture.start(users.capture).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && kind == Kind::Challenges => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cpu_before = CpuUse::of_all(&common.pid);
    let database_cpu_before = common.database_pid.and_then(stats::cluster_cpu_seconds);
    let started = Instant::now();
    let deadline = started + common.duration;
    // Open loop: a ticker hands out start times; workers take them in turn.
    let schedule = common.rate.map(|rate| {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Instant>(1_000_000);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        tokio::spawn(async move {
            let mut next = Instant::now();
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                if sender.send(next).await.is_err() {
                    break;
                }
                next += interval;
            }
        });
        Arc::new(Mutex::new(receiver))
    });
    let lost = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..common.concurrency {
        let (common, users, capture, schedule, lost, tls) = (
            common.clone(),
            users.clone(),
            capture.clone(),
            schedule.clone(),
            lost.clone(),
            tls.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut client = Client::open(
                common.server,
                tls.as_deref(),
                &common.secret,
                common.timeout,
            )
            .await?;
            let mut answer_client = match users.as_ref().and_then(|u| u.answer_server) {
                Some(server) => Some(
                    Client::open(server, tls.as_deref(), &common.secret, common.timeout).await?,
                ),
                None => None,
            };
            let mut tally = Tally::default();
            let mut round = 0usize;
            loop {
                let start = match &schedule {
                    Some(schedule) => match schedule.lock().await.recv().await {
                        Some(at) => at,
                        None => break,
                    },
                    None if Instant::now() >= deadline => break,
                    None => Instant::now(),
                };
                // Worker w takes users w, w + concurrency, ...
                let offset = worker + round * common.concurrency;
                if kind == Kind::Challenges && users.as_ref().is_some_and(|u| offset >= u.users) {
                    break;
                }
                // Wrap within this worker's own users (index = worker mod concurrency), so that
                // two workers never run the same user, whose SMS would then go astray.
                let index = users.as_ref().map(|u| {
                    let mine = u
                        .users
                        .saturating_sub(worker)
                        .div_ceil(common.concurrency)
                        .max(1);
                    u.first_user + worker + (round % mine) * common.concurrency
                });
                round += 1;
                let outcome = match (kind, &users, index) {
                    (Kind::Status, _, _) => one_status(&mut client, start, &mut tally).await,
                    (_, Some(users), Some(index)) => {
                        one_flow(
                            &mut client,
                            answer_client.as_mut(),
                            &capture,
                            users,
                            index,
                            kind,
                            start,
                            &mut tally,
                            &common,
                        )
                        .await
                    }
                    _ => Err(Failure::Invalid("no users")),
                };
                match outcome {
                    Ok(()) => tally.completed += 1,
                    Err(Failure::Timeout) => {
                        tally.timeouts += 1;
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let stalled = users.as_ref().filter(|u| u.stalled_users > 0).map(|u| {
        let (common, u) = (common.clone(), u.clone());
        tokio::spawn(async move { stall_load(&common, &u, deadline).await })
    });
    let mut total = Tally::default();
    if let Some(stalled) = stalled {
        let tally = stalled.await??;
        total.stalled = tally.completed;
        total.timeouts += tally.timeouts;
        total.errors += tally.errors;
        total.first_error = tally.first_error;
    }
    for worker in workers {
        let tally = worker.await??;
        total.completed += tally.completed;
        total.errors += tally.errors;
        total.timeouts += tally.timeouts;
        total.first_error = total.first_error.or(tally.first_error);
        total.unsigned += tally.unsigned;
        total.stalled += tally.stalled;
        for (all, mine) in total.steps.iter_mut().zip(tally.steps) {
            all.merge(mine);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(CpuUse::of_all(&common.pid))
        .map(|(before, after)| after.since(before));
    let database_cpu = database_cpu_before
        .zip(common.database_pid.and_then(stats::cluster_cpu_seconds))
        .map(|(before, after)| after - before);
    report(&common, kind, &total, elapsed, cpu, database_cpu);
    Ok(())
}

/// PIN requests of users whose gateway never answers, one per user at a fixed rate; each
/// must still get its challenge (after `reply_within`).
async fn stall_load(common: &Common, users: &Users, deadline: Instant) -> anyhow::Result<Tally> {
    let interval = Duration::from_secs_f64(1.0 / users.stalled_rate.max(0.001));
    let mut tasks = Vec::new();
    let mut next = Instant::now();
    for index in users.stalled_first..users.stalled_first + users.stalled_users {
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let (common, pin) = (common.clone(), users.pin.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(common.server, &common.secret, common.timeout).await?;
            let (name, _) = user(index);
            anyhow::Ok(client.access(&name, &pin, None).await.map(|r| r.code))
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        match task.await?? {
            Ok(code::ACCESS_CHALLENGE) => tally.completed += 1,
            Ok(_) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| "a stalled user got no challenge".into());
            }
            Err(Failure::Timeout) => tally.timeouts += 1,
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(tally)
}

async fn one_status(client: &mut Client, start: Instant, tally: &mut Tally) -> Result<(), Failure> {
    let reply = client.status().await?;
    tally.unsigned += u64::from(!reply.signed);
    if reply.code != code::ACCESS_ACCEPT {
        return Err(Failure::Invalid("Status-Server not accepted"));
    }
    tally.steps[0].add(start.elapsed());
    tally.steps[3].add(start.elapsed());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_flow(
    client: &mut Client,
    answer_client: Option<&mut Client>,
    capture: &Capture,
    users: &Users,
    index: usize,
    kind: Kind,
    start: Instant,
    tally: &mut Tally,
    common: &Common,
) -> Result<(), Failure> {
    let (name, phone) = user(index);
    if kind == Kind::Challenges {
        let first = client.access(&name, &users.pin, None).await?;
        if first.code != code::ACCESS_CHALLENGE {
            return Err(Failure::Invalid("unexpected reply to the PIN"));
        }
        tally.steps[0].add(start.elapsed());
        return Ok(());
    }
    let sms = capture.expect(&phone);
    let first = client.access(&name, &users.pin, None).await?;
    let expected = if kind == Kind::Flow {
        code::ACCESS_CHALLENGE
    } else {
        code::ACCESS_REJECT
    };
    if first.code != expected && !(kind == Kind::Oneshot && first.code == code::ACCESS_CHALLENGE) {
        return Err(Failure::Invalid("unexpected reply to the PIN"));
    }
    tally.steps[0].add(start.elapsed());
    let sms_started = Instant::now();
    let otp = tokio::time::timeout(common.timeout, sms)
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|_| Failure::Timeout)?;
    tally.steps[1].add(sms_started.elapsed());
    let answer_started = Instant::now();
    let reply = match kind {
        Kind::Flow => {
            answer_client
                .unwrap_or(client)
                .access(&name, &otp, first.state.as_deref())
                .await?
        }
        _ => {
            client
                .access(&name, &format!("{}{otp}", users.pin), None)
                .await?
        }
    };
    if reply.code != code::ACCESS_ACCEPT {
        return Err(Failure::Invalid("the OTP was not accepted"));
    }
    tally.steps[2].add(answer_started.elapsed());
    tally.steps[3].add(start.elapsed());
    Ok(())
}

fn report(
    common: &Common,
    kind: Kind,
    total: &Tally,
    elapsed: f64,
    cpu: Option<CpuUse>,
    database_cpu: Option<f64>,
) {
    let mode = match kind {
        Kind::Status => "status",
        Kind::Flow => "flow",
        Kind::Oneshot => "oneshot",
        Kind::Challenges => "challenges",
    };
    let rate = total.completed as f64 / elapsed;
    let rss = common
        .pid
        .iter()
        .filter_map(|pid| stats::peak_rss_mib(*pid))
        .reduce(f64::max);
    let per_op_ms =
        |seconds: f64| (total.completed > 0).then(|| seconds * 1000.0 / total.completed as f64);
    let cpu_per_op_ms = cpu.and_then(|c| per_op_ms(c.total));
    let outside_argon2_per_op_ms = cpu.and_then(|c| c.outside_argon2).and_then(per_op_ms);
    let steps: Vec<serde_json::Value> = STEP_NAMES
        .iter()
        .zip(&total.steps)
        .filter(|(_, s)| s.len() > 0)
        .map(|(name, samples)| {
            let (p50, p90, p99, max) = samples.percentiles().unwrap_or_default();
            serde_json::json!({"step": name, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max})
        })
        .collect();
    let summary = serde_json::json!({
        "mode": mode,
        "completed": total.completed,
        "errors": total.errors,
        "timeouts": total.timeouts,
        "seconds": elapsed,
        "ops_per_second": rate,
        "server_cpu_seconds": cpu.map(|c| c.total),
        "server_cpu_ms_per_op": cpu_per_op_ms,
        "server_cpu_ms_per_op_outside_argon2": outside_argon2_per_op_ms,
        "server_peak_rss_mib": rss,
        "database_cpu_seconds": database_cpu,
        "database_cpu_ms_per_op": database_cpu.and_then(per_op_ms),
        "steps": steps,
        "first_error": total.first_error,
        "replies_without_message_authenticator": total.unsigned,
        "stalled_challenges": total.stalled,
    });
    if common.json {
        println!("{summary}");
        return;
    }
    println!(
        "{mode}: {} completed, {} errors, {} timeouts in {elapsed:.1}s = {rate:.0}/s",
        total.completed, total.errors, total.timeouts
    );
    if let Some(error) = &total.first_error {
        println!("first error: {error}");
    }
    if let Some(cpu) = cpu {
        println!(
            "server cpu {:.2}s = {:.3} ms per operation ({:.3} ms outside the Argon2 threads)",
            cpu.total,
            cpu_per_op_ms.unwrap_or_default(),
            outside_argon2_per_op_ms.unwrap_or_default()
        );
    }
    if let Some(rss) = rss {
        println!("server peak rss {rss:.1} MiB");
    }
    for step in &steps {
        println!(
            "  {:<12} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            step["step"].as_str().unwrap_or(""),
            step["p50_ms"].as_f64().unwrap_or_default(),
            step["p90_ms"].as_f64().unwrap_or_default(),
            step["p99_ms"].as_f64().unwrap_or_default(),
            step["max_ms"].as_f64().unwrap_or_default()
        );
    }
}
