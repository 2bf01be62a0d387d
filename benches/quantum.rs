//! Timings of the `/quantum/*` primitives, against baselines measured in the same run.
//!
//! `cargo bench --bench quantum` runs criterion on VRF prove/verify (RFC 9381 TAI), Falcon-512
//! and ML-DSA-65 sign/verify for a 32-byte and a 64 KiB message, with SHA3-256 of the same message
//! and getrandom of the same size as baselines, then prints each primitive's time as a multiple of
//! SHA3-256 of the same message (a short second measurement, so the ratio is same-run), and the
//! key generation times and key and signature sizes of both signature algorithms.
//! `QUANTUM_RATIOS_ONLY=1` skips criterion and prints only that second part.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sha3::{Digest, Sha3_256};

use kirq::crypto::falcon::SigningKey;
use kirq::crypto::mldsa;
use kirq::quantum::vrf::{self, VrfKey};
use kirq::secret::SecretBytes;

const SIZES: [usize; 2] = [32, 64 * 1024];

struct Setup {
    vrf: VrfKey,
    falcon: SigningKey,
    mldsa: mldsa::SigningKey,
}

fn setup() -> Setup {
    Setup {
        vrf: VrfKey::from_secret(SecretBytes::new(vec![0x42; 32])).unwrap(),
        falcon: SigningKey::generate(),
        mldsa: mldsa::SigningKey::generate(),
    }
}

fn bench(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group("quantum");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for size in SIZES {
        let msg = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("sha3_256", size), &msg, |b, m| {
            b.iter(|| Sha3_256::digest(black_box(m)))
        });
        g.bench_with_input(BenchmarkId::new("getrandom", size), &msg, |b, m| {
            let mut buf = vec![0u8; m.len()];
            b.iter(|| getrandom::fill(black_box(&mut buf)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("vrf_prove", size), &msg, |b, m| {
            b.iter(|| s.vrf.prove(black_box(m)))
        });
        let out = s.vrf.prove(&msg);
        let pk = s.vrf.public_key();
        g.bench_with_input(BenchmarkId::new("vrf_verify", size), &msg, |b, m| {
            b.iter(|| assert!(vrf::verify(&pk, black_box(m), &out.pi).is_some()))
        });
        g.bench_with_input(BenchmarkId::new("falcon_sign", size), &msg, |b, m| {
            b.iter(|| s.falcon.sign(black_box(m)))
        });
        let sig = s.falcon.sign(&msg);
        let vk = s.falcon.verifying_key();
        g.bench_with_input(BenchmarkId::new("falcon_verify", size), &msg, |b, m| {
            b.iter(|| assert!(vk.verify(black_box(m), &sig)))
        });
        g.bench_with_input(BenchmarkId::new("mldsa65_sign", size), &msg, |b, m| {
            b.iter(|| s.mldsa.sign(black_box(m)))
        });
        let sig = s.mldsa.sign(&msg);
        let vk = s.mldsa.verifying_key();
        g.bench_with_input(BenchmarkId::new("mldsa65_verify", size), &msg, |b, m| {
            b.iter(|| assert!(vk.verify(black_box(m), &sig)))
        });
    }
    g.finish();
}

/// Best per-call time of `f` over a few rounds of `n` calls.
fn time(n: u32, f: &dyn Fn()) -> Duration {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed() / n
        })
        .min()
        .unwrap()
}

fn ratios(s: &Setup) {
    println!("\nSame-run ratios (best of 5 rounds; x = multiple of SHA3-256 of the same message):");
    for size in SIZES {
        let msg = vec![0xa5u8; size];
        let n = if size > 1024 { 50 } else { 500 };
        let base = time(n * 4, &|| {
            black_box(Sha3_256::digest(black_box(&msg)));
        });
        let out = s.vrf.prove(&msg);
        let pk = s.vrf.public_key();
        let sig = s.falcon.sign(&msg);
        let vk = s.falcon.verifying_key();
        let ml_sig = s.mldsa.sign(&msg);
        let ml_vk = s.mldsa.verifying_key();
        let rows: [(&str, Duration); 7] = [
            (
                "getrandom same size",
                time(n, &|| {
                    let mut buf = vec![0u8; msg.len()];
                    getrandom::fill(&mut buf).unwrap();
                    black_box(buf);
                }),
            ),
            (
                "vrf_prove",
                time(n, &|| {
                    black_box(s.vrf.prove(&msg));
                }),
            ),
            (
                "vrf_verify",
                time(n, &|| assert!(vrf::verify(&pk, &msg, &out.pi).is_some())),
            ),
            (
                "falcon_sign",
                time(n, &|| {
                    black_box(s.falcon.sign(&msg));
                }),
            ),
            ("falcon_verify", time(n, &|| assert!(vk.verify(&msg, &sig)))),
            (
                "mldsa65_sign",
                time(n, &|| {
                    black_box(s.mldsa.sign(&msg));
                }),
            ),
            (
                "mldsa65_verify",
                time(n, &|| assert!(ml_vk.verify(&msg, &ml_sig))),
            ),
        ];
        println!("  message {size} B: sha3_256 {base:?}");
        for (name, t) in rows {
            let x = t.as_secs_f64() / base.as_secs_f64();
            println!("    {name:<20} {t:>12.2?}  {x:>8.1}x");
        }
    }
    let falcon_keygen = time(20, &|| {
        black_box(SigningKey::generate());
    });
    let mldsa_keygen = time(200, &|| {
        black_box(mldsa::SigningKey::generate());
    });
    // Falcon signatures vary in length: the spread over many signatures of one message.
    let mut falcon_sigs: Vec<usize> = (0..2000).map(|_| s.falcon.sign(b"m").len()).collect();
    falcon_sigs.sort_unstable();
    println!("\nKey generation (best of 5 rounds) and sizes in bytes:");
    println!(
        "  falcon512  keygen {falcon_keygen:>10.2?}  public key {}  secret key {}  signature \
         {}..{} (median {}, of 2000)",
        s.falcon.verifying_key().as_bytes().len(),
        s.falcon.expose_secret().len(),
        falcon_sigs[0],
        falcon_sigs[falcon_sigs.len() - 1],
        falcon_sigs[falcon_sigs.len() / 2],
    );
    println!(
        "  ml-dsa-65  keygen {mldsa_keygen:>10.2?}  public key {}  secret key {} (seed; {} \
         expanded)  signature {} (fixed)",
        s.mldsa.verifying_key().as_bytes().len(),
        s.mldsa.expose_seed().len(),
        s.mldsa.expanded_secret_key().len(),
        s.mldsa.sign(b"m").len(),
    );
}

fn main() {
    let s = setup();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench` and with libtest flags
        // criterion does not know: check each operation once and stop.
        let out = s.vrf.prove(b"m");
        assert_eq!(
            vrf::verify(&s.vrf.public_key(), b"m", &out.pi),
            Some(out.beta)
        );
        assert!(s.falcon.verifying_key().verify(b"m", &s.falcon.sign(b"m")));
        assert!(s.mldsa.verifying_key().verify(b"m", &s.mldsa.sign(b"m")));
        println!(
            "benches/quantum: operations checked (run `cargo bench --bench quantum` to time them)"
        );
        return;
    }
    if std::env::var_os("QUANTUM_RATIOS_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, &s);
        c.final_summary();
    }
    ratios(&s);
}
