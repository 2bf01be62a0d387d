//! Restarts with a real kirqd process: a clean stop seals the pool and a restart serves the rest,
//! `kill -9` never leads to a repeated byte, a wrong at-rest key refuses to start, and SIGHUP
//! reloads the trusted hub keys while keeping the pool.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

const PERSIST: &str = "[fallback]\nenabled = false\n[persist]\nstate_file = \"pool.sealed\"\nkey_file = \"pool.key\"\n";

fn write_key(f: &Fleet, byte: u8) {
    let p = f.path("pool.key");
    std::fs::write(&p, hex::encode([byte; 32])).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn pool_bytes(f: &Fleet) -> u64 {
    get_json(&f.http("/api/rng/health"))["pool"]["total_bytes"]
        .as_u64()
        .unwrap()
}

/// Takes everything left, in 4 KiB requests (then smaller), as raw bytes.
fn drain(f: &Fleet) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let left = pool_bytes(f);
        if left == 0 {
            return out;
        }
        let (s, b) = random(f, serde_json::json!({ "num_bytes": left.min(4096) }));
        assert_eq!(s, 200, "{b}");
        out.push(hex::decode(b["random_data"].as_str().unwrap()).unwrap());
    }
}

fn windows(chunks: &[Vec<u8>]) -> HashSet<Vec<u8>> {
    chunks
        .iter()
        .flat_map(|c| c.windows(16).map(<[u8]>::to_vec))
        .collect()
}

#[test]
fn clean_restart_keeps_the_unserved_bytes_and_never_repeats() {
    let f = Fleet::new();
    write_key(&f, 1);
    let cfg = f.daemon_config(false, PERSIST);
    let mut d = kirqd(&f, &cfg, &[]);
    f.feed(10, 4096);
    let (s, first) = random(&f, serde_json::json!({ "num_bytes": 1000 }));
    assert_eq!(s, 200);
    let before = vec![hex::decode(first["random_data"].as_str().unwrap()).unwrap()];
    assert_eq!(pool_bytes(&f), 40_960 - 1000);
    let status = d.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(f.path("pool.sealed").exists());
    assert!(d.log_text().contains("unserved entropy sealed"));
    drop(d);

    let d2 = kirqd(&f, &cfg, &[]);
    assert_eq!(
        pool_bytes(&f),
        39_960,
        "a clean restart keeps the unserved byte count"
    );
    assert!(
        !f.path("pool.sealed").exists(),
        "the sealed file is destroyed at start"
    );
    let after = drain(&f);
    assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 39_960);
    let seen = windows(&before);
    assert!(
        windows(&after).is_disjoint(&seen),
        "a window served before was served again"
    );
    drop(d2);
}

#[test]
fn kill_9_under_load_never_repeats_a_window() {
    let f = Fleet::new();
    write_key(&f, 2);
    let cfg = f.daemon_config(false, PERSIST);
    let mut d = kirqd(&f, &cfg, &[]);
    f.feed(64, 16 * 1024);
    // Three readers at full speed; kill -9 in the middle.
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let url = f.http("/api/rng/random");
            let served = served.clone();
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                let mut got = Vec::new();
                while let Ok(r) = c
                    .post(&url)
                    .json(&serde_json::json!({ "num_bytes": 512 }))
                    .send()
                {
                    if r.status() != 200 {
                        break;
                    }
                    let Ok(b) = r.json::<serde_json::Value>() else {
                        break;
                    };
                    got.push(hex::decode(b["random_data"].as_str().unwrap()).unwrap());
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                got
            })
        })
        .collect();
    wait_for(Duration::from_secs(20), "readers under way", || {
        served.load(std::sync::atomic::Ordering::Relaxed) >= 30
    });
    d.kill();
    let before: Vec<Vec<u8>> = readers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(!before.is_empty(), "the readers got bytes before the kill");
    assert!(!f.path("pool.sealed").exists(), "kill -9 writes nothing");
    drop(d);

    let _d2 = kirqd(&f, &cfg, &[]);
    assert_eq!(pool_bytes(&f), 0, "after a crash the pool starts empty");
    f.feed(8, 4096);
    let after = drain(&f);
    assert!(windows(&after).is_disjoint(&windows(&before)));
}

#[test]
fn wrong_key_refuses_to_start_and_leaves_the_file() {
    let f = Fleet::new();
    write_key(&f, 3);
    let cfg = f.daemon_config(false, PERSIST);
    let mut d = kirqd(&f, &cfg, &[]);
    f.feed(2, 4096);
    assert!(d.terminate().success());
    drop(d);
    let sealed = std::fs::read(f.path("pool.sealed")).unwrap();
    write_key(&f, 4);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kirqd"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed with a different key"), "{err}");
    assert_eq!(
        std::fs::read(f.path("pool.sealed")).unwrap(),
        sealed,
        "file untouched"
    );
}

#[test]
fn corrupted_file_is_refused_and_not_served() {
    let f = Fleet::new();
    write_key(&f, 5);
    let cfg = f.daemon_config(false, PERSIST);
    let mut d = kirqd(&f, &cfg, &[]);
    f.feed(2, 4096);
    assert!(d.terminate().success());
    drop(d);
    let p = f.path("pool.sealed");
    let mut data = std::fs::read(&p).unwrap();
    let n = data.len();
    data.truncate(n - 100);
    std::fs::write(&p, data).unwrap();
    let d2 = kirqd(&f, &cfg, &[]);
    assert_eq!(pool_bytes(&f), 0);
    assert!(f.path("pool.sealed.corrupt").exists());
    assert!(
        d2.log_text().contains("corrupted or truncated"),
        "{}",
        d2.log_text()
    );
}

#[test]
fn sighup_trusts_a_new_hub_key_and_keeps_the_pool() {
    let f = Fleet::new();
    let cfg = f.daemon_config(false, "[fallback]\nenabled = false");
    let d = kirqd(&f, &cfg, &[]);
    f.feed(1, 4096);
    let new_key = kirq::crypto::falcon::SigningKey::generate();
    new_key.write_pair(f.dir.path(), "hub-new").unwrap();
    let send_new = || {
        f.push_raw(
            packet_for(&new_key, DAEMON_ID, 2048)
                .encode_signed(&new_key)
                .to_vec(),
        )
        .0
    };
    assert_eq!(send_new(), 400, "unknown key before the reload");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "hub_keys = [\"hub-signing.pub\"]",
        "hub_keys = [\"hub-signing.pub\", \"hub-new.pub\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(Duration::from_secs(5), "the reload", || {
        d.log_text().contains("keys reloaded")
    });
    assert_eq!(pool_bytes(&f), 4096, "the pool is kept across SIGHUP");
    assert_eq!(send_new(), 200, "the new key is trusted after SIGHUP");
    assert_eq!(pool_bytes(&f), 6144);
}
