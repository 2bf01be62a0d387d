use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::crypto::falcon::SigningKey;
use crate::verify::{Policy, Verifier};
use crate::wire::SourceKind;

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
}

impl Fixture {
    fn new() -> Self {
        let key = SigningKey::generate();
        let verifier = Verifier::new(
            Policy {
                recipient: "d".into(),
                max_skew_ms: 5000,
                require_proof: false,
                min_node_quorum: 0,
                replay_capacity: 100_000,
                alpha_exp: 30,
            },
            vec![key.verifying_key().clone()],
        );
        Self { key, verifier }
    }

    fn packet(&mut self, n: usize, kind: SourceKind) -> VerifiedPacket {
        let p = crate::wire::sample_packet(&self.key, "d", n, kind);
        self.verifier
            .verify(&p.encode_signed(&self.key), crate::util::now_ms())
            .unwrap()
    }
}

#[test]
fn concurrent_consumers_get_each_byte_once() {
    let mut f = Fixture::new();
    let pool = Arc::new(Pool::new(4 << 20, 1024));
    let mut admitted = 0;
    for _ in 0..64 {
        admitted += pool.admit(f.packet(16 * 1024, SourceKind::Qrng)).unwrap();
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut n = 1 + t * 37;
                loop {
                    match pool.take(n, Want::Any) {
                        Ok(taken) => got.push(taken.bytes.expose().to_vec()),
                        Err(PoolError::Insufficient { available, .. }) if available > 0 => {
                            n = available.min(n);
                            continue;
                        }
                        Err(_) => return got,
                    }
                    n = n % 4000 + 1;
                }
            })
        })
        .collect();
    let outputs: Vec<Vec<u8>> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let served: usize = outputs.iter().map(Vec::len).sum();
    assert_eq!(served, admitted, "every admitted byte served exactly once");
    assert_eq!(pool.snapshot().served_bytes_total, admitted as u64);
    let mut windows = HashSet::new();
    for o in &outputs {
        for w in o.windows(16) {
            assert!(
                windows.insert(w.to_vec()),
                "a 16-byte window was served twice"
            );
        }
    }
}

#[test]
fn exact_take_is_all_or_nothing() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 0);
    pool.admit(f.packet(100, SourceKind::Qrng)).unwrap();
    assert_eq!(
        pool.take(101, Want::Any).unwrap_err(),
        PoolError::Insufficient {
            available: 100,
            wanted: 101
        }
    );
    assert_eq!(pool.len(), 100, "a refused request consumes nothing");
    let mut buf = [0u8; 150];
    let by = pool.take_into(&mut buf, Want::Any, false).unwrap();
    assert_eq!(by.total(), 100, "a device read takes what there is");
    assert!(pool.is_empty());
}

#[test]
fn served_bytes_are_zeroed_in_the_pool() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 0);
    pool.admit(f.packet(64, SourceKind::Qrng)).unwrap();
    let a = pool.take(32, Want::Any).unwrap();
    let g = pool.lock();
    let chunk = g.queues[Provenance::Qrng as usize].front().unwrap();
    assert_eq!(chunk.pos, 32);
    assert!(chunk.data.expose()[..32].iter().all(|&b| b == 0));
    assert!(chunk.data.expose()[32..].iter().any(|&b| b != 0));
    assert!(a.bytes.expose().iter().any(|&b| b != 0));
}

#[test]
fn best_provenance_first_and_only_filters() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 0);
    let mut h = SourceHealth::new(30, 8.0, Duration::from_secs(1));
    assert_eq!(pool.fill_local(100, &mut h).unwrap(), 100);
    pool.admit(f.packet(100, SourceKind::Qrng)).unwrap();
    let t = pool.take(150, Want::Any).unwrap();
    assert_eq!(t.by_provenance[Provenance::Qrng as usize], 100);
    assert_eq!(t.by_provenance[Provenance::Local as usize], 50);
    assert_eq!(t.single_provenance(), None);
    assert_eq!(pool.snapshot().fallback_bytes, 50);
    assert!(matches!(
        pool.take(10, Want::Only(Provenance::Hsm)),
        Err(PoolError::Insufficient { available: 0, .. })
    ));
    let l = pool.take(50, Want::Only(Provenance::Local)).unwrap();
    assert_eq!(l.single_provenance(), Some(Provenance::Local));
    assert_eq!(pool.snapshot().fallback_bytes, 0);
}

#[test]
fn capacity_is_a_hard_bound() {
    let mut f = Fixture::new();
    let pool = Pool::new(1000, 0);
    pool.admit(f.packet(800, SourceKind::Hsm)).unwrap();
    assert_eq!(
        pool.admit(f.packet(300, SourceKind::Hsm)).unwrap_err(),
        PoolError::Full {
            free: 200,
            wanted: 300
        }
    );
    assert_eq!(pool.len(), 800);
    let mut h = SourceHealth::new(30, 8.0, Duration::from_secs(1));
    assert_eq!(
        pool.fill_local(500, &mut h).unwrap(),
        200,
        "fallback fills only the free room"
    );
}

#[test]
fn debug_shows_no_bytes() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 0);
    pool.admit(f.packet(64, SourceKind::Qrng)).unwrap();
    assert_eq!(
        format!("{pool:?}"),
        "Pool { capacity: 1048576, len: 64, .. }"
    );
}

#[test]
fn hybrid_class() {
    assert_eq!(
        Provenance::of_sources([SourceKind::Qrng, SourceKind::Hsm]),
        Provenance::Hybrid
    );
    assert_eq!(
        Provenance::of_sources([SourceKind::Hsm, SourceKind::Hsm]),
        Provenance::Hsm
    );
}

#[test]
fn chunks_live_in_secret_memory_where_the_kernel_allows() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 0);
    let available = secretmem::SecretRegion::available();
    assert_eq!(pool.secret_memory(), available);
    pool.admit(f.packet(4096, SourceKind::Qrng)).unwrap();
    {
        let g = pool.lock();
        let chunk = g.queues[Provenance::Qrng as usize].front().unwrap();
        assert_eq!(matches!(chunk.data, ChunkBuf::Secret(_)), available);
    }
    // Served bytes come out whole and once, whichever memory held them.
    let t = pool.take(4096, Want::Any).unwrap();
    assert!(t.bytes.expose().iter().any(|&b| b != 0));
    assert!(pool.is_empty());
}

#[test]
fn refill_plan_tops_up_to_the_high_watermark_and_counts_unmet_requests() {
    let mut f = Fixture::new();
    let pool = Pool::new(1 << 20, 1024).with_high_watermark(256 * 1024);
    // Empty: below the low watermark, so fill to the high watermark.
    assert_eq!(pool.refill_plan(64 * 1024), 256 * 1024);
    for _ in 0..6 {
        pool.admit(f.packet(32 * 1024, SourceKind::Qrng)).unwrap();
    }
    // 192 KiB held: 64 KiB missing is exactly one chunk, so top up.
    assert_eq!(pool.refill_plan(64 * 1024), 64 * 1024);
    pool.admit(f.packet(32 * 1024, SourceKind::Qrng)).unwrap();
    // 224 KiB held: 32 KiB missing is less than a chunk and above the low watermark: no pull.
    assert_eq!(pool.refill_plan(64 * 1024), 0);
    // A 64 KiB request the pool cannot serve whole is counted into the next pull (the bug was
    // that a pool "above the low watermark" never refilled for it).
    let mut f2 = Fixture::new();
    let small = Pool::new(1 << 20, 1024).with_high_watermark(32 * 1024);
    small.admit(f2.packet(30 * 1024, SourceKind::Qrng)).unwrap();
    assert_eq!(small.refill_plan(64 * 1024), 0);
    assert!(small.take(64 * 1024, Want::Any).is_err());
    assert_eq!(small.refill_plan(64 * 1024), 2 * 1024 + 64 * 1024);
    // The plan is taken once.
    assert_eq!(small.refill_plan(64 * 1024), 0);
    // Never more than the free space; fallback bytes do not count as held.
    let full = Pool::new(64 * 1024, 1024).with_high_watermark(1 << 20);
    let mut h = SourceHealth::new(30, 8.0, Duration::from_secs(1));
    full.fill_local(60 * 1024, &mut h).unwrap();
    assert_eq!(full.refill_plan(1024), 4 * 1024);
}
