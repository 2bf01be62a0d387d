//! Unproven delivery near the crypto limit (issue 14, point 4), all in one run:
//!
//! - (a) the crypto-only baseline: one Falcon-512 signature of a 32-byte prehash plus SHAKE256
//!   (the `sha3` crate, as the mixer uses it) absorbing and squeezing the packet's bytes, on one
//!   core. Its MB/s is `size / (sign + shake)`: the most one core could build if nothing but the
//!   unavoidable crypto cost anything.
//! - (b) the hub's real build path, `PacketFactory::build` over one `local` source (fetch, health
//!   tests, commitment, SHAKE256 mix, encoding, SHA3-256 prehash, Falcon sign), on one task, with
//!   the per-stage costs beside it.
//! - (c) end to end: a hub pushing to a kirqd (and a kirqd pulling from a hub) over mutual TLS in
//!   this process, proofs off; the rate is the entropy the daemon admits per second after
//!   verifying every packet (decode, checks, health tests, Falcon verify, replay journal fsync).
//!
//! Every ratio is to (a) at the same packet size. Hub, daemon and load share this process and
//! the machine's cores; (c) is what two cores do with both ends of the link on them.
//!
//! Run: `cargo bench --bench delivery` (about a minute). From `cargo test` it runs a 1 s smoke
//! pass whose numbers mean nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kirq::crypto::falcon::SigningKey;
use kirq::hub::PacketFactory;
use kirq::metrics::HubMetrics;
use kirq::secret::SecretBytes;
use kirq::sources::SourceSettings;
use kirq::sources::local::LocalSource;
use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

const KIB: usize = 1024;

/// Mean seconds per call of `f` over at least `min` (and at least `reps` calls).
fn per_call(min: Duration, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut n = 0;
    while n < reps || t0.elapsed() < min {
        f();
        n += 1;
    }
    t0.elapsed().as_secs_f64() / n as f64
}

fn shake(bytes: &[u8], out: &mut [u8]) {
    let mut h = Shake256::default();
    h.update(bytes);
    h.finalize_xof().read(out);
}

/// (a): seconds per Falcon-512 signature of a prehash, and per SHAKE256 of `size` bytes.
fn crypto_baseline(key: &SigningKey, size: usize, min: Duration) -> (f64, f64) {
    let digest = kirq::wire::signing_digest(b"kirq delivery bench");
    let sign = per_call(min, 20, || {
        std::hint::black_box(key.sign(&digest));
    });
    let mut input = vec![0u8; size];
    getrandom::fill(&mut input).unwrap();
    let mut out = vec![0u8; size];
    let shake = per_call(min, 20, || {
        shake(&input, &mut out);
        std::hint::black_box(&out);
    });
    (sign, shake)
}

/// The stages of (b) timed alone, in seconds per packet.
struct Stages {
    fetch: f64,
    health: f64,
    commit: f64,
    mix: f64,
    encode: f64,
    prehash: f64,
    sign: f64,
}

fn stages(key: &SigningKey, size: usize, min: Duration) -> Stages {
    let mut raw = SecretBytes::zeroed(size);
    let fetch = per_call(min, 20, || getrandom::fill(raw.expose_mut()).unwrap());
    let fresh = kirq::health::HealthTester::new(30, 8.0);
    let health = per_call(min, 20, || {
        fresh.clone().feed(raw.expose()).unwrap();
    });
    let commit = per_call(min, 20, || {
        std::hint::black_box(kirq::crypto::commit_contribution("local", raw.expose()));
    });
    let part = [kirq::mix::Contribution {
        source_id: "local",
        bytes: &raw,
    }];
    let mix = per_call(min, 20, || {
        std::hint::black_box(kirq::mix::mix(&part, size));
    });
    let packet = kirq::wire::sample_packet(key, "bench", size, kirq::wire::SourceKind::Local);
    let encode = per_call(min, 20, || {
        std::hint::black_box(packet.encode_unsigned());
    });
    let unsigned = packet.encode_unsigned();
    let prehash = per_call(min, 20, || {
        std::hint::black_box(kirq::wire::signing_digest(&unsigned));
    });
    let digest = kirq::wire::signing_digest(&unsigned);
    let sign = per_call(min, 20, || {
        std::hint::black_box(key.sign(&digest));
    });
    Stages {
        fetch,
        health,
        commit,
        mix,
        encode,
        prehash,
        sign,
    }
}

/// (b): seconds per packet of the hub's real build path, one packet at a time.
async fn hub_build(key: &SigningKey, size: usize, min: Duration) -> f64 {
    let key = SigningKey::from_parts(
        SecretBytes::new(key.expose_secret().to_vec()),
        key.verifying_key().as_bytes(),
    )
    .unwrap();
    let factory = PacketFactory::new(
        key,
        vec![(
            Box::new(LocalSource::new("local")) as Box<dyn kirq::sources::Source>,
            SourceSettings::default(),
        )],
        30,
        // A false alarm (the repetition test's is about once per 4 GiB at alpha = 2^-30, and a
        // run tests about 1 GB) then costs one packet, not the rest of the run.
        Duration::ZERO,
        60_000,
        Default::default(),
    );
    let metrics = HubMetrics::new();
    let build = || async {
        for _ in 0..3 {
            if let Ok(p) = factory.build("bench", size, &metrics).await {
                return p;
            }
        }
        panic!("the local source failed its health tests three times running")
    };
    std::hint::black_box(build().await);
    let t0 = Instant::now();
    let mut n = 0;
    while n < 20 || t0.elapsed() < min {
        std::hint::black_box(build().await);
        n += 1;
    }
    t0.elapsed().as_secs_f64() / n as f64
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Push,
    Pull,
}

/// CPU time this process has used (user + system), both ends of the link and the bench.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// (c): admitted bytes per second over `dur`, after the first admitted packet, for one
/// hub/daemon pair in `mode`, and the cores this process kept busy meanwhile (CPU seconds per
/// second: below 2 on 2 cores means waiting, or other work on the machine taking the rest).
async fn end_to_end(size: usize, mode: Mode, dur: Duration) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], kirq::demo::free_port().unwrap()));
    let (mut hub, mut daemon) = kirq::demo::configs(dir.path(), Some(http)).unwrap();
    hub.packet_bytes = size;
    // A health false alarm (see hub_build) drops one packet instead of stalling the source.
    hub.health.quarantine_secs = 0;
    // The share that bounds one daemon is policy, not a cost: lifted so the path is measured.
    hub.limits.daemon_bytes_per_second = 1 << 40;
    hub.limits.daemon_burst_bytes = 1 << 40;
    // Room for everything delivered in the run, so the pool never says full.
    daemon.pool.capacity_bytes = 2 << 30;
    match mode {
        Mode::Push => {
            hub.push_interval_ms = 1;
            daemon.hubs.clear();
        }
        Mode::Pull => {
            hub.push_interval_ms = 0;
            daemon.pool.high_watermark_bytes = Some(1 << 30);
            daemon.pool.refill_bytes = (4 << 20).max(size);
        }
    }
    let key = SigningKey::load(&hub.signing_key).unwrap();
    let d = kirq::daemon::start(
        daemon,
        kirq::secret::Hardening {
            no_core_dumps: false,
            memory_locked: false,
        },
    )
    .await
    .unwrap();
    let h = kirq::hub::start(hub, key).await.unwrap();
    let admitted = || d.daemon.pool.snapshot().admitted_bytes_total;
    let start = Instant::now();
    while admitted() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (b0, t0, c0) = (admitted(), Instant::now(), cpu_time());
    tokio::time::sleep(dur).await;
    let (b1, t1, c1) = (admitted(), Instant::now(), cpu_time());
    h.stop();
    d.stop();
    let secs = (t1 - t0).as_secs_f64();
    ((b1 - b0) as f64 / secs, (c1 - c0).as_secs_f64() / secs)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    // DELIVERY_SIZES=65536,262144 measures only those sizes (bytes).
    let chosen: Option<Vec<usize>> = std::env::var("DELIVERY_SIZES").ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().parse().expect("a size in bytes"))
            .collect()
    });
    let (sizes, min, dur): (&[usize], _, _) = if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
        (&[4 * KIB], Duration::ZERO, Duration::from_millis(300))
    } else {
        (
            &[4 * KIB, 64 * KIB, 256 * KIB],
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let key = SigningKey::generate();
    println!("unproven delivery vs the crypto-only baseline (same run, {cores} cores)");
    let mut rows = Vec::new();
    // DELIVERY_ONLY=push (or pull) runs only that end-to-end mode, for a profiler.
    if let Ok(only) = std::env::var("DELIVERY_ONLY") {
        let mode = if only == "pull" {
            Mode::Pull
        } else {
            Mode::Push
        };
        for &size in chosen.as_deref().unwrap_or(sizes) {
            let (rate, cores) = rt.block_on(end_to_end(size, mode, dur));
            println!(
                "{only} {} KiB: {:.1} MB/s, {cores:.2} cores busy",
                size / KIB,
                rate / 1e6
            );
        }
        return;
    }
    for &size in chosen.as_deref().unwrap_or(sizes) {
        let (sign, shake) = crypto_baseline(&key, size, min);
        let s = stages(&key, size, min);
        let build = rt.block_on(hub_build(&key, size, min));
        let (push, push_cores) = rt.block_on(end_to_end(size, Mode::Push, dur));
        let (pull, pull_cores) = rt.block_on(end_to_end(size, Mode::Pull, dur));
        let us = |x: f64| x * 1e6;
        println!(
            "  {} KiB per packet: Falcon sign {:.0} us, SHAKE256 {:.0} us | stages: fetch {:.0}, \
             health {:.0}, commit {:.0}, mix {:.0}, encode {:.0}, prehash {:.0}, sign {:.0} us \
             (sum {:.0}); hub build {:.0} us",
            size / KIB,
            us(sign),
            us(shake),
            us(s.fetch),
            us(s.health),
            us(s.commit),
            us(s.mix),
            us(s.encode),
            us(s.prehash),
            us(s.sign),
            us(s.fetch + s.health + s.commit + s.mix + s.encode + s.prehash + s.sign),
            us(build)
        );
        rows.push((
            size,
            sign + shake,
            build,
            (push, push_cores),
            (pull, pull_cores),
        ));
    }
    println!();
    println!(
        "| packet | (a) crypto MB/s | (b) hub build MB/s | (b)/(a) | (c) push MB/s | push/(a) \
         | push cores busy | (c) pull MB/s | pull/(a) | pull cores busy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (size, crypto, build, (push, push_cores), (pull, pull_cores)) in rows {
        let base = size as f64 / crypto;
        let built = size as f64 / build;
        println!(
            "| {} KiB | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
            size / KIB,
            base / 1e6,
            built / 1e6,
            built / base,
            push / 1e6,
            push / base,
            push_cores,
            pull / 1e6,
            pull / base,
            pull_cores
        );
        assert!(push > 0.0 && pull > 0.0, "nothing delivered");
    }
}
