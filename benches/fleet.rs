//! What a fleet costs its hub: one kirq-hub process serving 200 kirqd processes (each its own
//! id and certificate, pull only, 4 KiB packets), all on this machine. Reports the hub's CPU
//! time (utime + stime from /proc) per delivered MB while the daemons fill their pools, and per
//! daemon-hour while each daemon is drained at the reseed rate of 4 KiB per minute (one 4 KiB
//! pull a minute, plus the daemon's reachability probe every 10 s). The same-run baseline is
//! the crypto a hub cannot avoid: Falcon-512 signing plus SHAKE256 over the same 4 KiB, in this
//! process.
//!
//! Run: `cargo bench --bench fleet` (about 4 minutes; `KIRQ_FLEET_DAEMONS`, `KIRQ_FLEET_SECS`
//! and `KIRQ_FLEET_AFTER_SECS` change the 200 daemons, the 120 s steady phase and the daemons'
//! `fallback.after_secs`, 30, which sets how often an idle daemon pulls a packet for liveness). From `cargo test` it runs 4 daemons for
//! 3 s as a smoke test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kirq::crypto::falcon::SigningKey;
use kirq::pki::{Ca, write_new};

const PACKET: usize = 4096;
const TARGET: u64 = 32 * 1024;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, config: &Path, log: &Path) -> Killed {
    let err = std::fs::File::create(log).unwrap();
    Killed(
        Command::new(bin)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(err)
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap(),
    )
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    ticks as f64 / hz
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn get(url: &str) -> String {
    reqwest::blocking::get(url).unwrap().text().unwrap()
}

/// The sum of every series of `name` in a Prometheus scrape.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn hub_config(root: &Path, port: u16, metrics: u16) -> PathBuf {
    let text = format!(
        r#"id = "hub-1"
signing_key = "hub-signing.key"
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics}"
push_interval_ms = 0
packet_bytes = {PACKET}
[tls]
cert = "hub-1.crt"
key = "hub-1.key"
daemon_ca = "daemon-ca.pem"
[limits]
connections_per_peer = 4096
[[sources]]
type = "local"
"#
    );
    let p = root.join("hub.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn daemon_config(root: &Path, dir: &Path, id: &str, ports: (u16, u16), hub: u16) -> PathBuf {
    let r = root.display();
    let after = std::env::var("KIRQ_FLEET_AFTER_SECS").unwrap_or_else(|_| "30".into());
    let text = format!(
        r#"id = "{id}"
[trust]
hub_keys = ["{r}/hub-signing.pub"]
replay_state_file = "kirqd.replay"
[receive]
listen = "127.0.0.1:{}"
cert = "{id}.crt"
key = "{id}.key"
hub_ca = "{r}/hub-ca.pem"
[http]
listen = "127.0.0.1:{}"
[pool]
capacity_bytes = 65536
high_watermark_bytes = {TARGET}
refill_bytes = {PACKET}
[fallback]
after_secs = {after}
[[hubs]]
url = "https://localhost:{hub}"
"#,
        ports.0, ports.1
    );
    let p = dir.join("kirqd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn free_port() -> u16 {
    kirq::demo::free_port().unwrap()
}

fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seconds of this thread's CPU per MB for Falcon-512 signing plus SHAKE256 over `PACKET` bytes.
fn crypto_baseline() -> f64 {
    use sha3::digest::{ExtendableOutput, Update};
    let key = SigningKey::generate();
    let data = vec![0x5au8; PACKET];
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(2) {
        let mut h = sha3::Shake256::default();
        h.update(&data);
        let mut out = [0u8; 32];
        h.finalize_xof_into(&mut out);
        std::hint::black_box(key.sign(&out));
        n += 1;
    }
    t.elapsed().as_secs_f64() / (n as f64 * PACKET as f64 / 1e6)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let daemons = if quick {
        4
    } else {
        env("KIRQ_FLEET_DAEMONS", 200)
    } as usize;
    let steady = Duration::from_secs(if quick {
        3
    } else {
        env("KIRQ_FLEET_SECS", 120)
    });
    if quick {
        println!("(smoke run from cargo test: numbers are meaningless; run cargo bench)");
    }
    let _ = kirq::util::raise_open_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hub_ca = Ca::new("bench hub CA").unwrap();
    let daemon_ca = Ca::new("bench daemon CA").unwrap();
    write_new(&root.join("hub-ca.pem"), hub_ca.cert_pem(), 0o644).unwrap();
    write_new(&root.join("daemon-ca.pem"), daemon_ca.cert_pem(), 0o644).unwrap();
    let write_leaf = |dir: &Path, name: &str, leaf: kirq::pki::Leaf| {
        write_new(&dir.join(format!("{name}.crt")), &leaf.cert_pem, 0o644).unwrap();
        write_new(&dir.join(format!("{name}.key")), &leaf.key_pem, 0o600).unwrap();
    };
    write_leaf(
        root,
        "hub-1",
        hub_ca.issue("hub-1", &["localhost"]).unwrap(),
    );
    SigningKey::generate()
        .write_pair(root, "hub-signing")
        .unwrap();
    let (port, mport) = (free_port(), free_port());
    let hub = spawn(
        env!("CARGO_BIN_EXE_kirq-hub"),
        &hub_config(root, port, mport),
        &root.join("hub.log"),
    );
    let metrics = format!("http://127.0.0.1:{mport}/metrics");
    wait(Duration::from_secs(30), "the hub", || {
        reqwest::blocking::get(&metrics).is_ok()
    });
    let hub_pid = hub.0.id();
    let delivered = || {
        sum(
            &get(&metrics),
            "kirq_hub_delivered_packets_total{class=\"pull\"}",
        ) * PACKET as f64
    };

    // Fill: every daemon starts empty and pulls its target.
    let (c0, b0, t0) = (cpu_seconds(hub_pid), delivered(), Instant::now());
    let mut shims = Vec::new();
    let mut procs = Vec::new();
    for i in 0..daemons {
        let id = format!("kirqd-{i:03}");
        let dir = root.join(&id);
        std::fs::create_dir(&dir).unwrap();
        write_leaf(&dir, &id, daemon_ca.issue(&id, &["localhost"]).unwrap());
        let http = free_port();
        let cfg = daemon_config(root, &dir, &id, (free_port(), http), port);
        procs.push(spawn(
            env!("CARGO_BIN_EXE_kirqd"),
            &cfg,
            &dir.join("kirqd.log"),
        ));
        shims.push(format!("http://127.0.0.1:{http}"));
    }
    let c = reqwest::blocking::Client::new();
    let pool = |url: &str| -> u64 {
        c.get(format!("{url}/api/rng/health"))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .map(|h| h["pool"]["total_bytes"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    wait(Duration::from_secs(300), "every daemon to fill", || {
        shims.iter().all(|u| pool(u) >= TARGET)
    });
    let (fill_secs, fill_cpu, fill_bytes) = (
        t0.elapsed().as_secs_f64(),
        cpu_seconds(hub_pid) - c0,
        delivered() - b0,
    );

    // Steady: each daemon is drained 4 KiB a minute (staggered), so it pulls one packet a
    // minute; its probe asks the hub for nothing every 10 s throughout.
    let (c1, b1, t1) = (cpu_seconds(hub_pid), delivered(), Instant::now());
    let period = Duration::from_secs(60);
    let mut next: Vec<Instant> = (0..daemons)
        .map(|i| t1 + period.mul_f64(i as f64 / daemons as f64))
        .collect();
    let body = serde_json::json!({"num_bytes": PACKET, "encoding": "base64"});
    let mut takes = 0u64;
    while t1.elapsed() < steady {
        for (i, u) in shims.iter().enumerate() {
            if Instant::now() >= next[i] {
                let r = c.post(format!("{u}/api/rng/random")).json(&body).send();
                assert_eq!(r.unwrap().status(), 200, "daemon {i} did not serve");
                takes += 1;
                next[i] += period;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (steady_secs, steady_cpu, steady_bytes) = (
        t1.elapsed().as_secs_f64(),
        cpu_seconds(hub_pid) - c1,
        delivered() - b1,
    );
    let text = get(&metrics);
    let rss = rss_mib(hub_pid);
    drop(procs);
    drop(hub);

    let base = crypto_baseline();
    let per_mb = fill_cpu / (fill_bytes / 1e6);
    let daemon_hours = daemons as f64 * steady_secs / 3600.0;
    println!("fleet: 1 hub, {daemons} kirqd, {PACKET} B packets, all on this machine");
    println!(
        "fill: {:.0} KB delivered in {fill_secs:.1} s; hub CPU {fill_cpu:.2} s = {per_mb:.3} s/MB \
         (crypto-only baseline {base:.3} s/MB, ratio {:.1})",
        fill_bytes / 1e3,
        per_mb / base
    );
    println!(
        "steady: {takes} takes of 4 KiB over {steady_secs:.0} s, {:.0} KB delivered; hub CPU \
         {steady_cpu:.2} s = {:.2} s per daemon-hour ({:.2} % of one core per 1,000 daemons); \
         hub RSS {rss:.0} MiB",
        steady_bytes / 1e3,
        steady_cpu / daemon_hours,
        100.0 * steady_cpu / steady_secs * 1000.0 / daemons as f64
    );
    println!(
        "steady: {:.0} packets delivered per daemon-hour, {:.0} of them for the reseed takes \
         (the rest: liveness pulls and top-ups)",
        steady_bytes / PACKET as f64 / daemon_hours,
        takes as f64 / daemon_hours
    );
    println!(
        "hub deliveries by outcome: {}",
        text.lines()
            .filter(|l| l.starts_with("kirq_hub_deliveries_total{"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
