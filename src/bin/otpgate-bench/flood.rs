//! `flood`: one RADIUS client floods the server with unknown-user PIN requests at a multiple
//! of its measured PIN-check capacity, while a legitimate user logs in repeatedly from a
//! second RADIUS client (another source address). Measures what the legitimate user sees:
//! whether the PIN step is answered within a NAS's retry window (retransmissions included),
//! how long the State + OTP answer takes and whether any is dropped, and how long after the
//! flood the flooding client's own PIN requests are answered normally again.
//!
//! Every unknown-user request costs one Argon2 run (decoy runs hide which users exist), so
//! the flood is pure PIN-thread work. The flood is fire-and-forget, as an attacker's is; its
//! replies are only counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otpgate::radius::packet::code;

use crate::capture::Capture;
use crate::client::{Client, Failure};
use crate::stats::{self, Samples};

#[derive(clap::Args, Clone)]
pub struct FloodArgs {
    /// The RADIUS server.
    #[arg(long, default_value = "127.0.0.1:1812")]
    server: SocketAddr,
    #[arg(long)]
    secret: String,
    /// Source address of the flooding client (a `[[client]]` of the server).
    #[arg(long, default_value = "127.0.0.1")]
    flood_from: IpAddr,
    /// Source address of the legitimate user's client (another `[[client]]`).
    #[arg(long, default_value = "127.0.0.2")]
    legit_from: IpAddr,
    /// How long the flood lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Flood rate as a multiple of the measured capacity.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// Flood at this many requests per second instead of factor x the measured capacity.
    #[arg(long)]
    flood_rate: Option<f64>,
    /// How long the capacity is measured (closed loop of unknown-user PIN requests).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    capacity_duration: Duration,
    /// Requests in flight while the capacity is measured (well inside the PIN queue).
    #[arg(long, default_value_t = 8)]
    capacity_concurrency: usize,
    /// The legitimate user (bench-NNNNNN, see `otpgate-bench users`), from --legit-from.
    #[arg(long, default_value_t = 0)]
    legit_user: usize,
    /// The user whose PIN requests from --flood-from tell when the server has recovered.
    #[arg(long, default_value_t = 1)]
    probe_user: usize,
    #[arg(long, default_value = "4711")]
    pin: String,
    /// Where the capture gateway listens (otpgate's http gateway posts SMS there).
    #[arg(long, default_value = "127.0.0.1:9925")]
    capture: SocketAddr,
    /// The NAS's retransmissions of the PIN step: sends, this far apart.
    #[arg(long, default_value_t = 3)]
    tries: u32,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    retry_interval: Duration,
    /// Recovered means a PIN request answered within 2 x its latency before the flood
    /// (median) + this margin.
    #[arg(long, default_value = "25ms", value_parser = humantime::parse_duration)]
    margin: Duration,
    /// Give up waiting for recovery after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    recovery_limit: Duration,
    /// The server's PID, for its resident size during the flood.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long)]
    json: bool,
}

/// What the legitimate user saw.
#[derive(Default)]
struct Legit {
    logins: u64,
    pin_failed: u64,
    /// PIN steps answered after 1, 2, ... sends.
    pin_after_sends: Vec<u64>,
    pin: Samples,
    answer: Samples,
    answers_dropped: u64,
    answers_rejected: u64,
    sms_missing: u64,
    /// Unexpected replies (a PIN step rejected, a reply failing its checks).
    errors: u64,
    first_error: Option<String>,
}

pub async fn run(args: FloodArgs) -> anyhow::Result<()> {
    let capture = Capture::default();
    capture.start(args.capture).await?;
    let (legit_name, legit_phone) = crate::user(args.legit_user);
    let (probe_name, _) = crate::user(args.probe_user);
    let timeout = Duration::from_secs(5);

    // Before the flood: the capacity, the probe's usual latency, and a few normal logins.
    let capacity = capacity(&args).await?;
    let rate = args.flood_rate.unwrap_or(capacity * args.factor);
    let mut probe =
        Client::connect_from(args.server, Some(args.flood_from), &args.secret, timeout).await?;
    let mut usual = Samples::default();
    for _ in 0..7 {
        let started = Instant::now();
        let reply = probe.access(&probe_name, &args.pin, None).await?;
        anyhow::ensure!(
            reply.code == code::ACCESS_CHALLENGE,
            "the probe user's PIN was not challenged (code {})",
            reply.code
        );
        usual.add(started.elapsed());
    }
    let usual_ms = usual.percentiles().map_or(0.0, |(p50, ..)| p50);
    let normal = Duration::from_secs_f64(usual_ms * 2.0 / 1000.0) + args.margin;
    let mut legit =
        Client::connect_from(args.server, Some(args.legit_from), &args.secret, timeout).await?;
    let mut before = Legit::default();
    for _ in 0..3 {
        login(
            &mut legit,
            &capture,
            &args,
            &legit_name,
            &legit_phone,
            &mut before,
        )
        .await?;
    }
    anyhow::ensure!(
        before.logins == 3 && before.answer.len() == 3,
        "the legitimate user cannot log in without a flood: {}",
        before.first_error.as_deref().unwrap_or("answers lost")
    );

    // The flood, with the legitimate user logging in beside it.
    let flooding = Arc::new(AtomicBool::new(true));
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = args.pid.map(|pid| {
        let (flooding, rss_max) = (flooding.clone(), rss_max.clone());
        tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                if let Some(kib) = resident_kib(pid) {
                    rss_max.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let flood_started = Instant::now();
    let flood_end = flood_started + args.duration;
    let flooder = {
        let args = args.clone();
        tokio::spawn(async move { flood(&args, rate, flood_end).await })
    };
    let legit_task = {
        let (args, capture, flooding) = (args.clone(), capture.clone(), flooding.clone());
        tokio::spawn(async move {
            let mut during = Legit::default();
            while flooding.load(Ordering::Relaxed) && Instant::now() < flood_end {
                login(
                    &mut legit,
                    &capture,
                    &args,
                    &legit_name,
                    &legit_phone,
                    &mut during,
                )
                .await?;
            }
            anyhow::Ok(during)
        })
    };
    let (sent, answered) = flooder.await??;
    let flood_stopped = Instant::now();
    flooding.store(false, Ordering::Relaxed);

    // Recovery: the flooding client's own PIN requests, each given `normal` to be answered,
    // until one is.
    let mut probes = 0u64;
    let recovered = loop {
        if flood_stopped.elapsed() > args.recovery_limit {
            break None;
        }
        let request = match probe.prepare_access(&probe_name, &args.pin, None) {
            Ok(request) => request,
            Err(e) => anyhow::bail!("cannot build a probe: {e}"),
        };
        probe.send(&request).await?;
        probes += 1;
        let deadline = tokio::time::Instant::now() + normal;
        match probe.reply_to(&request, deadline).await {
            Ok(reply) if reply.code == code::ACCESS_CHALLENGE => {
                break Some(flood_stopped.elapsed());
            }
            Ok(reply) => anyhow::bail!("the probe got code {} after the flood", reply.code),
            Err(Failure::Timeout) => continue,
            Err(e) => anyhow::bail!("probe: {e}"),
        }
    };
    let during = legit_task.await??;
    if let Some(sampler) = sampler {
        sampler.await?;
    }
    let flood_seconds = flood_stopped.duration_since(flood_started).as_secs_f64();

    let pin_steps = during.logins + during.pin_failed;
    let pct = |samples: &Samples| samples.percentiles().unwrap_or_default();
    let (pin_p50, _, pin_p99, pin_max) = pct(&during.pin);
    let (answer_p50, _, answer_p99, answer_max) = pct(&during.answer);
    let (before_pin_p50, ..) = pct(&before.pin);
    let (before_answer_p50, ..) = pct(&before.answer);
    let summary = serde_json::json!({
        "mode": "flood",
        "capacity_per_second": capacity,
        "flood_rate": rate,
        "flood_factor": rate / capacity,
        "flood_seconds": flood_seconds,
        "flood_sent": sent,
        "flood_answered": answered,
        "flood_answered_per_second": answered as f64 / flood_seconds,
        // PIN checks the server completed per second during the flood (the flood's answered
        // requests and the user's PIN steps): the flood's real multiple of the capacity, when
        // the machine's neighbours changed it after it was measured.
        "served_per_second": (answered + during.logins) as f64 / flood_seconds,
        "legit_pin_steps": pin_steps,
        "legit_pin_ok": during.logins,
        "legit_pin_failed": during.pin_failed,
        "legit_pin_success_rate": if pin_steps > 0 { during.logins as f64 / pin_steps as f64 } else { 0.0 },
        "legit_pin_after_sends": during.pin_after_sends,
        "legit_pin_p50_ms": pin_p50,
        "legit_pin_p99_ms": pin_p99,
        "legit_pin_max_ms": pin_max,
        "legit_answers": during.answer.len(),
        "legit_answers_dropped": during.answers_dropped,
        "legit_answers_rejected": during.answers_rejected,
        "legit_sms_missing": during.sms_missing,
        "legit_errors": during.errors,
        "first_error": during.first_error,
        "answer_p50_ms": answer_p50,
        "answer_p99_ms": answer_p99,
        "answer_max_ms": answer_max,
        "before_pin_p50_ms": before_pin_p50,
        "before_answer_p50_ms": before_answer_p50,
        "probe_usual_ms": usual_ms,
        "recovered_within_ms": normal.as_secs_f64() * 1000.0,
        "recovery_seconds": recovered.map(|d| d.as_secs_f64()),
        "recovery_probes": probes,
        "server_rss_max_mib": args.pid.map(|_| rss_max.load(Ordering::Relaxed) as f64 / 1024.0),
        "server_peak_rss_mib": args.pid.and_then(stats::peak_rss_mib),
    });
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "capacity {capacity:.1} PIN checks/s; flood {rate:.0}/s for {flood_seconds:.1}s: {sent} sent, {answered} answered"
    );
    println!(
        "legitimate user: PIN step {}/{} answered within {} tries ({:?} after 1, 2, ... sends), p50 {pin_p50:.1} ms, p99 {pin_p99:.1} ms",
        during.logins, pin_steps, args.tries, during.pin_after_sends
    );
    println!(
        "  answer p50 {answer_p50:.2} ms, p99 {answer_p99:.2} ms, max {answer_max:.2} ms; {} dropped, {} rejected, {} SMS missing",
        during.answers_dropped, during.answers_rejected, during.sms_missing
    );
    match recovered {
        Some(d) => println!(
            "recovered {:.2}s after the flood (a PIN answered within {:.0} ms, {probes} probes)",
            d.as_secs_f64(),
            normal.as_secs_f64() * 1000.0
        ),
        None => println!("not recovered within {:?}", args.recovery_limit),
    }
    Ok(())
}

/// Unknown-user PIN requests answered per second, closed loop from the flooding client.
async fn capacity(args: &FloodArgs) -> anyhow::Result<f64> {
    let timeout = Duration::from_secs(5);
    let run = |duration: Duration| async move {
        let deadline = Instant::now() + duration;
        let mut workers = Vec::new();
        for worker in 0..args.capacity_concurrency.max(1) {
            let (server, source, secret) = (args.server, args.flood_from, args.secret.clone());
            workers.push(tokio::spawn(async move {
                let mut client =
                    Client::connect_from(server, Some(source), &secret, timeout).await?;
                let mut answered = 0u64;
                while Instant::now() < deadline {
                    let reply = client
                        .access(&format!("nobody-{worker}"), "4711", None)
                        .await
                        .map_err(|e| anyhow::anyhow!("capacity: {e}"))?;
                    anyhow::ensure!(
                        reply.code == code::ACCESS_REJECT,
                        "an unknown user was not rejected"
                    );
                    answered += 1;
                }
                anyhow::Ok(answered)
            }));
        }
        let started = Instant::now();
        let mut answered = 0;
        for worker in workers {
            answered += worker.await??;
        }
        anyhow::Ok(answered as f64 / started.elapsed().as_secs_f64())
    };
    // A short untimed round first: the PIN threads map their Argon2 memory on first use.
    run(Duration::from_millis(300)).await?;
    run(args.capacity_duration).await
}

/// Unknown-user PIN requests at `rate` per second until `end`, not waiting for replies;
/// returns (sent, answered).
async fn flood(args: &FloodArgs, rate: f64, end: Instant) -> anyhow::Result<(u64, u64)> {
    let mut client = Client::connect_from(
        args.server,
        Some(args.flood_from),
        &args.secret,
        args.duration,
    )
    .await?;
    let started = Instant::now();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < end {
        ticker.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let request = client
                .prepare_access(&format!("flood-{}", sent % 100_000), "4711", None)
                .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
            client
                .send(&request)
                .await
                .map_err(|e| anyhow::anyhow!("flood: {e}"))?;
            sent += 1;
        }
        while let Some(reply) = client.try_receive_code() {
            answered += u64::from(reply == code::ACCESS_REJECT);
        }
    }
    Ok((sent, answered))
}

/// One login as a NAS runs it: the PIN (retransmitted up to `tries` times), the OTP from
/// the SMS, then State + OTP, sent once and given one retry interval to be answered.
async fn login(
    client: &mut Client,
    capture: &Capture,
    args: &FloodArgs,
    name: &str,
    phone: &str,
    tally: &mut Legit,
) -> anyhow::Result<()> {
    let sms = capture.expect(phone);
    let started = Instant::now();
    let first = match client
        .access_retrying(name, &args.pin, None, args.tries, args.retry_interval)
        .await
    {
        Ok((reply, sends)) if reply.code == code::ACCESS_CHALLENGE => {
            let slot = sends as usize - 1;
            if tally.pin_after_sends.len() <= slot {
                tally.pin_after_sends.resize(slot + 1, 0);
            }
            tally.pin_after_sends[slot] += 1;
            reply
        }
        Ok((reply, _)) => {
            tally.errors += 1;
            tally
                .first_error
                .get_or_insert_with(|| format!("PIN step answered with code {}", reply.code));
            return Ok(());
        }
        Err(Failure::Timeout) => {
            tally.pin_failed += 1;
            return Ok(());
        }
        Err(e) => {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| e.to_string());
            return Ok(());
        }
    };
    tally.pin.add(started.elapsed());
    tally.logins += 1;
    let Ok(Ok(otp)) = tokio::time::timeout(Duration::from_secs(10), sms).await else {
        tally.sms_missing += 1;
        return Ok(());
    };
    let answer_started = Instant::now();
    let request = client
        .prepare_access(name, &otp, first.state.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    client
        .send(&request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = tokio::time::Instant::now() + args.retry_interval;
    match client.reply_to(&request, deadline).await {
        Ok(reply) if reply.code == code::ACCESS_ACCEPT => {
            tally.answer.add(answer_started.elapsed())
        }
        Ok(_) => tally.answers_rejected += 1,
        Err(Failure::Timeout) => tally.answers_dropped += 1,
        Err(e) => {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| e.to_string());
        }
    }
    Ok(())
}

/// The server's resident size now (VmRSS), KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
