//! Packet verification throughput against a same-run baseline (getrandom of the same bytes).
//!
//! Run: `cargo bench --bench verify`. Prints packets/s and MB/s of verified entropy at 4 KiB and
//! 64 KiB packets, on one thread and on every core, and the ratio to the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kirq::crypto::falcon::SigningKey;
use kirq::verify::{Policy, Verifier};
use kirq::wire::{Packet, SourceKind, sample_packet};

fn packets(key: &SigningKey, size: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            sample_packet(key, "bench", size, SourceKind::Qrng)
                .encode_signed(key)
                .to_vec()
        })
        .collect()
}

fn verifier(key: &SigningKey) -> Verifier {
    Verifier::new(
        Policy {
            recipient: "bench".into(),
            max_skew_ms: 5000,
            require_proof: false,
            min_node_quorum: 0,
            replay_capacity: 10_000_000,
            alpha_exp: 30,
        },
        vec![key.verifying_key().clone()],
    )
}

/// Verifies every packet on `threads` threads; returns elapsed time.
fn run(key: &SigningKey, pkts: &Arc<Vec<Vec<u8>>>, threads: usize) -> Duration {
    let v = Arc::new(verifier(key));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (v, pkts) = (v.clone(), pkts.clone());
            std::thread::spawn(move || {
                let now = kirq::util::now_ms();
                for p in pkts.iter().skip(t).step_by(threads) {
                    let ok = v.verify(p, now).expect("bench packet verifies");
                    std::hint::black_box(ok);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t0.elapsed()
}

fn baseline(total: usize, chunk: usize) -> Duration {
    let mut buf = vec![0u8; chunk];
    let t0 = Instant::now();
    let mut done = 0;
    while done < total {
        getrandom::fill(&mut buf).unwrap();
        std::hint::black_box(&buf);
        done += chunk;
    }
    t0.elapsed()
}

fn main() {
    // `cargo test --benches` runs benches once with --bench absent: keep that fast.
    let quick = !std::env::args().any(|a| a == "--bench");
    let key = SigningKey::generate();
    if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("packet verification vs getrandom (same run, {cores} cores)");
    println!(
        "{:>8} {:>7} {:>12} {:>12} {:>14} {:>8}",
        "packet", "threads", "packets/s", "MB/s", "getrandom MB/s", "ratio"
    );
    for (size, count) in [(4096usize, 4000usize), (65536, 1500)] {
        let count = if quick { 20 } else { count };
        let pkts = Arc::new(packets(&key, size, count));
        let total = size * count;
        let base = baseline(total, size);
        let base_mbs = total as f64 / base.as_secs_f64() / 1e6;
        let t0 = Instant::now();
        for p in pkts.iter() {
            std::hint::black_box(Packet::decode(p).unwrap());
        }
        let decode = t0.elapsed();
        let t0 = Instant::now();
        let tester = kirq::health::HealthTester::new(30, 8.0);
        for p in pkts.iter() {
            let d = Packet::decode(p).unwrap();
            tester.clone().feed(d.packet.entropy.expose()).unwrap();
        }
        let health = t0.elapsed().saturating_sub(decode);
        let sig_us = {
            let d = Packet::decode(&pkts[0]).unwrap();
            let vk = key.verifying_key();
            let t0 = Instant::now();
            for _ in 0..200 {
                std::hint::black_box(
                    vk.verify(&kirq::wire::signing_digest(d.signed), &d.packet.signature),
                );
            }
            t0.elapsed().as_secs_f64() * 1e6 / 200.0
        };
        println!(
            "  per packet: decode {:.0} us, health tests {:.0} us, prehash + Falcon verify {:.0} us",
            decode.as_secs_f64() * 1e6 / count as f64,
            health.as_secs_f64() * 1e6 / count as f64,
            sig_us
        );
        for threads in [1, cores] {
            let el = run(&key, &pkts, threads);
            let mbs = total as f64 / el.as_secs_f64() / 1e6;
            println!(
                "{:>7}K {:>7} {:>12.0} {:>12.1} {:>14.1} {:>8.2}",
                size / 1024,
                threads,
                count as f64 / el.as_secs_f64(),
                mbs,
                base_mbs,
                mbs / base_mbs
            );
        }
    }
}
