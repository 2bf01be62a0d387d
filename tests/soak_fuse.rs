//! Soak: a real hub pushing to a real kirqd while 64 HTTP connections, two readers of the FUSE
//! device file and the kernel feeder all draw from the pool, for `KIRQ_SOAK_SECS` seconds (60 in
//! the normal suite; `scripts/soak.sh` runs 600). kirqd's RSS is sampled every second.
//!
//! Asserted: RSS flat after warm-up (the mean of the last ten samples within 5 % of the first
//! ten after warm-up), no HTTP answer other than 200 and the designed 503 (empty pool) and 429
//! (rate limit), every 16-byte window of everything served over HTTP and the device distinct,
//! served ≤ admitted. The result table is printed (and written to `KIRQ_SOAK_REPORT` if set).

mod common;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CONNECTIONS: usize = 64;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    unavailable: AtomicU64,
    limited: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

#[test]
fn soak_http_device_and_kernel_feeder_under_a_pushing_hub() {
    need_path(
        "/dev/fuse",
        "the kernel's FUSE (CONFIG_FUSE_FS) and a /dev/fuse node",
    );
    let secs: u64 = std::env::var("KIRQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let warmup = (secs / 5).max(10);
    let f = Fleet::new();
    let mnt = f.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let d_cfg = f.daemon_config(
        false,
        &format!(
            "[device]\nmode = \"fuse\"\nmountpoint = \"{}\"\n[kernel]\nenabled = true\n",
            mnt.display()
        ),
    );
    let mut d = kirqd(&f, &d_cfg, &[]);
    let pid = d.child.id();
    let _h = hub(&f, &f.hub_config_with(true, "packet_bytes = 8192", ""), &[]);
    let dev = mnt.join("kirq-rng");
    wait_for(
        Duration::from_secs(30),
        "the device and a first packet",
        || dev.exists() && f.pool().1 > 0,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let served: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let mut threads = Vec::new();
    for i in 0..CONNECTIONS {
        let (stop, counts, served, url) = (
            stop.clone(),
            counts.clone(),
            served.clone(),
            f.http("/api/rng/random"),
        );
        threads.push(std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut n = 32 + i * 16;
            while !stop.load(Ordering::Relaxed) {
                n = 32 + (n * 7 + 13) % 1000;
                let r = c
                    .post(&url)
                    .json(&serde_json::json!({ "num_bytes": n }))
                    .send();
                match r.as_ref().map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        let v: serde_json::Value = r.unwrap().json().unwrap();
                        let b = hex::decode(v["random_data"].as_str().unwrap()).unwrap();
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        counts.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        served.lock().unwrap().push(b);
                    }
                    Ok(503) => {
                        counts.unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(429) => {
                        counts.limited.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let device_bytes = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (dev, served, device_bytes) = (dev.clone(), served.clone(), device_bytes.clone());
        readers.push(std::thread::spawn(move || {
            let mut file = std::fs::File::open(&dev).unwrap();
            let mut buf = vec![0u8; 4096];
            // Ends when kirqd stops (EIO) after the soak.
            while let Ok(k) = file.read(&mut buf) {
                if k == 0 {
                    break;
                }
                device_bytes.fetch_add(k as u64, Ordering::Relaxed);
                served.lock().unwrap().push(buf[..k].to_vec());
            }
        }));
    }

    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        rss.push(rss_kib(pid));
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let stats = get_json(&f.http("/api/rng/stats"));
    let health = get_json(&f.http("/api/rng/health"));
    assert!(d.terminate().success(), "{}", d.log_text());
    for r in readers {
        r.join().unwrap();
    }

    let outputs = served.lock().unwrap();
    let mut seen = HashSet::new();
    let hasher = std::hash::RandomState::new();
    let mut windows = 0u64;
    for o in outputs.iter() {
        for w in o.windows(16) {
            let mut h = hasher.build_hasher();
            h.write(w);
            assert!(seen.insert(h.finish()), "a served 16-byte window repeats");
            windows += 1;
        }
    }
    let after: Vec<u64> = rss.iter().skip(warmup as usize).copied().collect();
    assert!(
        after.len() >= 20,
        "run the soak for at least warm-up + 20 s"
    );
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64;
    let (first, last) = (mean(&after[..10]), mean(&after[after.len() - 10..]));
    let (lo, hi) = (*after.iter().min().unwrap(), *after.iter().max().unwrap());
    let growth = (last - first) / first * 100.0;
    let served_total = stats["bytes_served_total"].as_u64().unwrap();
    let admitted_total = stats["bytes_admitted_total"].as_u64().unwrap();
    let c = &counts;
    let table = format!(
        "| soak ({secs} s, warm-up {warmup} s) | value |\n|---|---|\n\
         | RSS after warm-up (KiB): first 10 s mean / last 10 s mean | {first:.0} / {last:.0} ({growth:+.2} %) |\n\
         | RSS after warm-up (KiB): min / max | {lo} / {hi} ({:.2} % spread) |\n\
         | HTTP answers: 200 / 503 / 429 / other | {} / {} / {} / {} |\n\
         | bytes served: HTTP / device / kernel feeder / all | {} / {} / {} / {served_total} |\n\
         | bytes admitted | {admitted_total} |\n\
         | 16-byte windows checked (HTTP + device), repeats | {windows}, 0 |\n\
         | packets accepted / refused | {} / {} |\n\
         | health at the end | {} |\n",
        (hi - lo) as f64 / lo as f64 * 100.0,
        c.ok.load(Ordering::Relaxed),
        c.unavailable.load(Ordering::Relaxed),
        c.limited.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed),
        device_bytes.load(Ordering::Relaxed),
        stats["bytes_served"]["kernel"],
        stats["packets_accepted"],
        stats["packets_rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        health["status"],
    );
    eprintln!("{table}");
    if let Ok(p) = std::env::var("KIRQ_SOAK_REPORT") {
        std::fs::write(p, &table).unwrap();
    }
    assert_eq!(c.errors.load(Ordering::Relaxed), 0, "errors beyond 503/429");
    assert!(
        c.ok.load(Ordering::Relaxed) > 0,
        "HTTP consumers were served"
    );
    assert!(
        device_bytes.load(Ordering::Relaxed) > 0,
        "device readers were served"
    );
    assert!(
        stats["bytes_served"]["kernel"].as_u64().unwrap() > 0,
        "the kernel feeder was served"
    );
    assert!(served_total <= admitted_total);
    assert!(
        growth.abs() <= 5.0,
        "RSS not flat after warm-up: {growth:+.2} %"
    );
}
