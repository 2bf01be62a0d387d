//! STARK mixing proof: prove time, verify time and proof size against a same-run baseline.
//!
//! `cargo bench --bench stark` runs criterion on prove and verify for 4, 16, 64 and 256 KiB of
//! output (three 64-byte node contributions and one bulk contribution that carries the output),
//! then prints a table of medians: proven output bytes/s, verify time, proof size, and the
//! prove time as a multiple of SHAKE256 absorbing the same contributions (same run).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

use kirq::crypto::stark::{self, OUTPUT_BLOCK_BYTES, Part, PublicPart};
use kirq::secret::SecretBytes;

const SIZES_KIB: [usize; 4] = [4, 16, 64, 256];

const NODES: usize = 3;
const NODE_BYTES: usize = 64;

struct Case {
    round: u64,
    ids: Vec<String>,
    bytes: Vec<SecretBytes>,
    out_len: usize,
}

impl Case {
    /// `out_kib` KiB of output, rounded down to whole 56-byte blocks; the bulk contribution is
    /// exactly as long as the output.
    fn new(out_kib: usize) -> Case {
        let out_len = out_kib * 1024 / OUTPUT_BLOCK_BYTES * OUTPUT_BLOCK_BYTES;
        Case::with_output(out_len)
    }

    fn with_output(out_len: usize) -> Case {
        let mut seed = 0x1234_5678_u64;
        let mut fill = |n: usize| {
            SecretBytes::new(
                (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (seed >> 56) as u8
                    })
                    .collect(),
            )
        };
        let mut ids: Vec<String> = (0..NODES).map(|i| format!("node-{i}")).collect();
        ids.push("bulk".into());
        let mut bytes: Vec<SecretBytes> = (0..NODES).map(|_| fill(NODE_BYTES)).collect();
        bytes.push(fill(out_len));
        Case {
            round: 7,
            ids,
            bytes,
            out_len,
        }
    }

    fn parts(&self) -> Vec<Part<'_>> {
        self.ids
            .iter()
            .zip(&self.bytes)
            .map(|(id, b)| Part { id, bytes: b })
            .collect()
    }

    fn public(&self, proven: &stark::Proven) -> Vec<PublicPart> {
        self.ids
            .iter()
            .zip(&self.bytes)
            .zip(&proven.commitments)
            .map(|((id, b), c)| PublicPart {
                id: id.clone(),
                len: b.len(),
                commitment: *c,
            })
            .collect()
    }

    fn prove(&self) -> stark::Proven {
        stark::prove(self.round, &self.parts(), self.out_len).unwrap()
    }

    /// The baseline: SHAKE256 absorbing every contribution, squeezing the output.
    fn shake(&self) -> Vec<u8> {
        let mut h = Shake256::default();
        for b in &self.bytes {
            h.update(b.expose());
        }
        let mut out = vec![0u8; self.out_len];
        h.finalize_xof().read(&mut out);
        out
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stark");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    for kib in SIZES_KIB {
        let case = Case::new(kib);
        g.throughput(Throughput::Bytes(case.out_len as u64));
        g.measurement_time(Duration::from_secs(if kib >= 64 { 20 } else { 5 }));
        g.bench_with_input(BenchmarkId::new("shake256", kib), &case, |b, c| {
            b.iter(|| black_box(c.shake()))
        });
        g.bench_with_input(BenchmarkId::new("prove", kib), &case, |b, c| {
            b.iter(|| black_box(c.prove()))
        });
        let proven = case.prove();
        let public = case.public(&proven);
        g.measurement_time(Duration::from_secs(3));
        g.bench_with_input(BenchmarkId::new("verify", kib), &case, |b, c| {
            b.iter(|| {
                stark::verify(c.round, &public, proven.output.expose(), &proven.proof).unwrap()
            })
        });
    }
    g.finish();
}

/// CPU time of this process so far (all threads, user + system), from /proc: on a shared
/// machine it moves less than wall time when other work competes for the cores.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Medians of `runs` proofs and 5 x `runs` verifications per size, with the same-run baseline.
fn table(sizes: &[Case], runs: usize) {
    let (conj, proven) = stark::security_bits();
    println!(
        "\nSTARK mix proofs, medians of {runs} proves / {} verifies ({conj}-bit conjectured, \
         {proven}-bit proven security at the largest trace; {} cores):",
        runs * 5,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>9} {:>8} {:>10} {:>10} {:>12} {:>10} {:>11} {:>11}",
        "output", "rows", "prove", "prove cpu", "proven B/s", "verify", "proof B", "x shake256"
    );
    for case in sizes {
        let proven = case.prove();
        let public = case.public(&proven);
        let (walls, cpus): (Vec<Duration>, Vec<Duration>) = (0..runs)
            .map(|_| {
                let (t, c) = (Instant::now(), cpu_time());
                black_box(case.prove());
                (t.elapsed(), cpu_time() - c)
            })
            .unzip();
        let (prove, cpu) = (median(walls), median(cpus));
        let verify = median(
            (0..runs * 5)
                .map(|_| {
                    let t = Instant::now();
                    stark::verify(case.round, &public, proven.output.expose(), &proven.proof)
                        .unwrap();
                    t.elapsed()
                })
                .collect(),
        );
        let shake = median(
            (0..runs * 5)
                .map(|_| {
                    let t = Instant::now();
                    black_box(case.shake());
                    t.elapsed()
                })
                .collect(),
        );
        let blocks: usize = case.bytes.iter().map(|b| stark::blocks_for(b.len())).sum();
        let rows = 8 * (blocks + 2).next_power_of_two();
        println!(
            "{:>9} {:>8} {:>10.2?} {:>10.2?} {:>12.0} {:>10.2?} {:>11} {:>11.0}",
            case.out_len,
            rows,
            prove,
            cpu,
            case.out_len as f64 / prove.as_secs_f64(),
            verify,
            proven.proof.len(),
            prove.as_secs_f64() / shake.as_secs_f64()
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench` (debug build): prove
        // and verify one small statement and stop.
        let case = Case::with_output(OUTPUT_BLOCK_BYTES);
        let proven = case.prove();
        stark::verify(
            case.round,
            &case.public(&proven),
            proven.output.expose(),
            &proven.proof,
        )
        .unwrap();
        println!("benches/stark: prove and verify checked (run `cargo bench --bench stark`)");
        return;
    }
    let table_only = std::env::var_os("STARK_TABLE_ONLY").is_some();
    if !table_only {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
    // STARK_SIZES="4 64" (KiB) narrows the table; a size prefixed with `f` (e.g. `f12`) is the
    // layout that fills a trace of 2^k cycles: 2^k - 2 blocks in all.
    let spec = std::env::var("STARK_SIZES").unwrap_or_else(|_| "4 16 64 256 f12".into());
    let sizes: Vec<Case> = spec
        .split_whitespace()
        .map(|s| match s.strip_prefix('f') {
            Some(k) => Case::with_output(
                ((1 << k.parse::<u32>().unwrap())
                    - 2
                    - NODES * NODE_BYTES.div_ceil(OUTPUT_BLOCK_BYTES))
                    * OUTPUT_BLOCK_BYTES,
            ),
            None => Case::new(s.parse().unwrap()),
        })
        .collect();
    let runs = std::env::var("STARK_RUNS").map_or(5, |r| r.parse().unwrap());
    table(&sizes, runs);
}
