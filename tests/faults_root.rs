//! Fault injection with real processes and real faults: the hub killed mid-delivery and
//! restarted, the link between hub and daemon cut and restored (network namespaces and a veth
//! pair), the daemon's clock stepped ±2 minutes (libfaketime), the disk full when the pool is
//! sealed (a full tmpfs), SIGTERM while a device read blocks (the FUSE face).
//!
//! For each: what /api/rng/health and /metrics say during the fault, that no 16-byte window of
//! anything served repeats and served ≤ admitted, that the daemon recovers by itself, and how long
//! detection and recovery took (printed as `FAULT <name>: ...` lines, reported, not asserted as
//! timings beyond generous bounds).
//!
//! The clock step uses libfaketime (`LD_PRELOAD`, `FAKETIME_TIMESTAMP_FILE`), not a test knob in
//! kirqd: the daemon runs unchanged, and only its wall clock (CLOCK_REALTIME) moves, as an NTP
//! step would; its monotonic clock is left alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Takes small amounts over HTTP in a background thread until stopped; every answer must be a
/// 200 or the designed 503.
struct Consumer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<Vec<u8>>, u32)>>,
}

impl Consumer {
    fn start(f: &Fleet) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = f.http("/api/rng/random");
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let (mut out, mut unavailable) = (Vec::new(), 0);
            while !s.load(Ordering::Relaxed) {
                let r = match c
                    .post(&url)
                    .json(&serde_json::json!({ "num_bytes": 256 }))
                    .send()
                {
                    Ok(r) => r,
                    // The daemon may be restarting in some faults.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                match r.status().as_u16() {
                    200 => {
                        let v: serde_json::Value = r.json().unwrap();
                        out.push(hex::decode(v["random_data"].as_str().unwrap()).unwrap());
                    }
                    503 => unavailable += 1,
                    s => panic!("unexpected status {s}: {}", r.text().unwrap_or_default()),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (out, unavailable)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<Vec<u8>>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("consumer thread")
    }
}

fn health(f: &Fleet) -> serde_json::Value {
    get_json(&f.http("/api/rng/health"))
}

fn stats(f: &Fleet) -> serde_json::Value {
    get_json(&f.http("/api/rng/stats"))
}

/// The value of the first `/metrics` line starting with `prefix` (0 when absent).
fn daemon_metric(f: &Fleet, prefix: &str) -> f64 {
    metric(&scrape(&f.http("/metrics")), prefix).unwrap_or(0.0)
}

fn accepted(f: &Fleet) -> u64 {
    stats(f)["packets_accepted"].as_u64().unwrap()
}

fn fallback(f: &Fleet) -> bool {
    health(f)["fallback_active"].as_bool().unwrap()
}

/// Nothing served twice (within this run's HTTP takes) and served ≤ admitted (all consumers).
fn check_single_use(f: &Fleet, what: &str, outputs: &[Vec<u8>]) {
    assert_no_repeated_window(outputs);
    let s = stats(f);
    let (served, admitted) = (
        s["bytes_served_total"].as_u64().unwrap(),
        s["bytes_admitted_total"].as_u64().unwrap(),
    );
    assert!(
        served <= admitted,
        "{what}: served {served} > admitted {admitted}"
    );
    let http: usize = outputs.iter().map(Vec::len).sum();
    eprintln!(
        "FAULT {what}: no-repeat ok over {} HTTP answers ({http} bytes); served {served} <= admitted {admitted}",
        outputs.len()
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Promise: the hub dying mid-delivery and coming back costs the daemon nothing but time. The
/// hub pushes every 200 ms; SIGKILL lands in or between pushes. The daemon must go to the
/// local fallback (health degraded, `kirq_fallback_active 1`), and leave it by itself once the
/// restarted hub delivers again.
#[test]
fn hub_killed_mid_delivery_and_restarted() {
    let f = Fleet::new();
    let hub_cfg = f.hub_config(true);
    let d_cfg = f.daemon_config(true, "[fallback]\nafter_secs = 2\n");
    let _d = kirqd(&f, &d_cfg, &[]);
    let mut h = hub(&f, &hub_cfg, &[]);
    wait_for(Duration::from_secs(30), "pushed packets", || {
        accepted(&f) >= 3
    });
    let consumer = Consumer::start(&f);
    std::thread::sleep(Duration::from_millis(700));

    h.kill();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(20), "the fallback", || fallback(&f));
    let detect = t0.elapsed();
    let hh = health(&f);
    assert_ne!(hh["status"], "ok", "{hh}");
    assert_eq!(daemon_metric(&f, "kirq_fallback_active "), 1.0);
    let before = accepted(&f);

    let _h2 = hub(&f, &hub_cfg, &[]);
    let t1 = Instant::now();
    wait_for(Duration::from_secs(40), "delivery and no fallback", || {
        accepted(&f) > before && !fallback(&f)
    });
    let recover = t1.elapsed();
    assert_eq!(daemon_metric(&f, "kirq_fallback_active "), 0.0);
    std::thread::sleep(Duration::from_millis(500));
    let (out, unavailable) = consumer.finish();
    eprintln!(
        "FAULT hub-kill: fallback after {detect:?} (health {}, kirq_fallback_active 1), \
         recovered {recover:?} after the restart; {unavailable} answers were 503",
        hh["status"]
    );
    check_single_use(&f, "hub-kill", &out);
}

/// Removes the namespace (and with it the veth pair) even when the test fails.
struct Netns {
    name: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Replaces the daemon's certificate with one that also names `ip` (the hub reaches it there).
fn daemon_cert_for(f: &Fleet, ip: &str) {
    let ca = kirq::pki::Ca::new("Kirq fault-test daemon CA").unwrap();
    let leaf = ca
        .issue(DAEMON_ID, &["localhost", "127.0.0.1", ip])
        .unwrap();
    std::fs::write(f.path("daemon-ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(f.path(&format!("{DAEMON_ID}.crt")), &leaf.cert_pem).unwrap();
    std::fs::write(f.path(&format!("{DAEMON_ID}.key")), &*leaf.key_pem).unwrap();
}

/// Promise: a cut network link is a silence like any other. The hub runs in its own network
/// namespace, joined to the daemon's by a veth pair; the link goes down for a while and comes
/// back. The daemon falls back, says so, and resumes the hub's packets by itself.
#[test]
fn link_cut_between_namespaces_and_restored() {
    need_program("ip", "iproute2");
    let tag = std::process::id() % 100_000;
    let net = 1 + tag % 250;
    let ns = Netns {
        name: format!("kirqf{tag}"),
        host_if: format!("kqh{tag}"),
    };
    let peer_if = format!("kqp{tag}");
    let (host_ip, hub_ip) = (format!("10.231.{net}.1"), format!("10.231.{net}.2"));
    run("ip", &["netns", "add", &ns.name]);
    run(
        "ip",
        &[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ],
    );
    run("ip", &["link", "set", &peer_if, "netns", &ns.name]);
    run(
        "ip",
        &["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if],
    );
    run("ip", &["link", "set", &ns.host_if, "up"]);
    let in_ns = |args: &[&str]| {
        let mut a = vec!["netns", "exec", &ns.name, "ip"];
        a.extend_from_slice(args);
        run("ip", &a);
    };
    in_ns(&["addr", "add", &format!("{hub_ip}/30"), "dev", &peer_if]);
    in_ns(&["link", "set", &peer_if, "up"]);
    in_ns(&["link", "set", "lo", "up"]);

    let f = Fleet::new();
    daemon_cert_for(&f, &host_ip);
    let d_cfg = f.daemon_config(false, "[fallback]\nafter_secs = 2\n");
    let text = std::fs::read_to_string(&d_cfg).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", f.receive_port),
        &format!("listen = \"{host_ip}:{}\"", f.receive_port),
    );
    std::fs::write(&d_cfg, text).unwrap();
    let hub_cfg = f.hub_config(true);
    let text = std::fs::read_to_string(&hub_cfg)
        .unwrap()
        .replace(
            &format!("listen = \"127.0.0.1:{}\"", f.hub_port),
            &format!("listen = \"{hub_ip}:{}\"", f.hub_port),
        )
        .replace(
            &format!("https://localhost:{}", f.receive_port),
            &format!("https://{host_ip}:{}", f.receive_port),
        );
    std::fs::write(&hub_cfg, text).unwrap();

    let _d = kirqd(&f, &d_cfg, &[]);
    let _h = Proc::spawn(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_kirq-hub"),
            "run",
            "--config",
            hub_cfg.to_str().unwrap(),
        ],
        &f.path("hub-netns.log"),
        &[],
    );
    wait_for(
        Duration::from_secs(30),
        "packets pushed across the veth",
        || accepted(&f) >= 3,
    );
    let consumer = Consumer::start(&f);

    run("ip", &["link", "set", &ns.host_if, "down"]);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(20), "the fallback", || fallback(&f));
    let detect = t0.elapsed();
    let hh = health(&f);
    assert_ne!(hh["status"], "ok", "{hh}");
    let age = daemon_metric(&f, "kirq_hub_last_packet_age_seconds ");
    assert!(age >= 2.0, "last packet age {age}");
    std::thread::sleep(Duration::from_secs(3));
    let before = accepted(&f);

    run("ip", &["link", "set", &ns.host_if, "up"]);
    let t1 = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "delivery after the link is back",
        || accepted(&f) > before && !fallback(&f),
    );
    let recover = t1.elapsed();
    let (out, unavailable) = consumer.finish();
    eprintln!(
        "FAULT link-cut: fallback after {detect:?} (health {}, last packet age {age:.1} s), \
         recovered {recover:?} after the link came back; {unavailable} answers were 503",
        hh["status"]
    );
    check_single_use(&f, "link-cut", &out);
}

fn libfaketime() -> &'static str {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    need_path(
        LIB,
        "install it with `apt-get install libfaketime faketime`",
    );
    LIB
}

/// Promise: a stepped wall clock costs packets, never a replay. kirqd runs under libfaketime;
/// its clock steps 2 minutes ahead (every packet looks expired), back, 2 minutes behind (every
/// packet looks issued in the future), and back. Each step is refused by the named reason and
/// ends in the fallback; each return resumes delivery by itself. A packet admitted before the
/// forward step, resent after the clock came back inside its lifetime, must still be a replay.
#[test]
fn daemon_clock_stepped_two_minutes_both_ways() {
    let lib = libfaketime();
    let f = Fleet::new();
    let clock = f.path("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let d_cfg = f.daemon_config(false, "[fallback]\nafter_secs = 2\n");
    let env = [
        ("LD_PRELOAD", lib),
        ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_CACHE_DURATION", "1"),
    ];
    let _d = kirqd(&f, &d_cfg, &env);
    let _h = hub(&f, &f.hub_config(true), &[]);
    wait_for(Duration::from_secs(30), "pushed packets", || {
        accepted(&f) >= 3
    });
    let consumer = Consumer::start(&f);
    // A packet admitted now, kept to be resent after the steps.
    let early = f.packet(64).encode_signed(&f.key).to_vec();
    let (s, body) = f.push_raw(early.clone());
    assert_eq!(s, 200, "{body}");

    let mut report = Vec::new();
    for (step, reason) in [("+120", "expired"), ("-120", "issued_in_future")] {
        let refused = f.rejected(reason);
        std::fs::write(&clock, format!("{step}\n")).unwrap();
        let t0 = Instant::now();
        wait_for(Duration::from_secs(20), "packets refused", || {
            f.rejected(reason) >= refused + 3
        });
        let refused_after = t0.elapsed();
        wait_for(Duration::from_secs(20), "the fallback", || fallback(&f));
        let detect = t0.elapsed();
        let hh = health(&f);
        assert_ne!(hh["status"], "ok", "{hh}");
        let m = daemon_metric(
            &f,
            &format!("kirq_packets_rejected_total{{reason=\"{reason}\"}} "),
        );
        assert!(m >= (refused + 3) as f64);
        if step == "+120" {
            // A hub whose clock made the same step: its packets are valid by the daemon's
            // clock, so the daemon prunes its replay cache by that clock.
            let mut p = f.packet(64);
            p.issued_at_ms += 120_000;
            p.expires_at_ms += 120_000;
            let (s, body) = f.push(&p);
            assert_eq!(s, 200, "a packet valid by the stepped clock: {body}");
        }

        let before = accepted(&f);
        std::fs::write(&clock, "+0\n").unwrap();
        let t1 = Instant::now();
        wait_for(
            Duration::from_secs(30),
            "delivery after the clock is back",
            || accepted(&f) > before && !fallback(&f),
        );
        let recover = t1.elapsed();
        report.push(format!(
            "{step} s: refused as {reason} within {refused_after:?}, fallback after {detect:?} \
             (health {}), recovered {recover:?} after the clock came back",
            hh["status"]
        ));
        if step == "+120" {
            // Still inside its 60 s lifetime by the restored clock: a replay, not a packet.
            let (s, body) = f.push_raw(early.clone());
            assert_eq!(
                (s, body["reason"].as_str()),
                (400, Some("replayed")),
                "a packet admitted before the clock step was admitted again: {body}"
            );
        }
    }
    let (out, unavailable) = consumer.finish();
    for r in &report {
        eprintln!("FAULT clock-step {r}");
    }
    eprintln!("FAULT clock-step: {unavailable} answers were 503");
    check_single_use(&f, "clock-step", &out);
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        need_program("mount", "mount");
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "kirq-fault",
                dir.path().to_str().unwrap(),
            ],
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the last byte.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8]);
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", self.dir.path().to_str().unwrap()])
            .status();
    }
}

fn kirqd_proc(f: &Fleet, cfg: &Path, log: &str) -> Proc {
    let p = Proc::spawn(
        env!("CARGO_BIN_EXE_kirqd"),
        &["run", "--config", cfg.to_str().unwrap()],
        &f.path(log),
        &[],
    );
    wait_for_shim(f);
    p
}

/// Promise: a disk that is full when the pool is sealed loses the unserved bytes, and nothing
/// else. kirqd seals into a full tmpfs on SIGTERM: it must say so (exit status and log), leave
/// no file that a restart would restore, and start again and serve (the disk still full); with
/// room again, the next seal and restore work, and nothing served in any run repeats.
#[test]
fn disk_full_when_sealing_the_pool() {
    let fs = Tmpfs::mount("64k");
    let f = Fleet::new();
    let key = f.path("pool.key");
    std::fs::write(&key, hex::encode([0x5au8; 32])).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let sealed = fs.path().join("pool.sealed");
    let persist = format!(
        "[fallback]\nenabled = false\n[persist]\nstate_file = \"{}\"\nkey_file = \"{}\"\n",
        sealed.display(),
        key.display()
    );
    let cfg = f.daemon_config(false, &persist);
    let mut outputs = Vec::new();

    let mut d = kirqd_proc(&f, &cfg, "kirqd-1.log");
    f.feed(4, 4096);
    outputs.extend(f.drain(65_536).into_iter().take(1)); // serve some, leave the rest unserved
    f.feed(2, 4096);
    let held = f.pool().0;
    assert!(held > 0);
    let filler = fs.fill();
    let t0 = Instant::now();
    let status = d.terminate();
    let stop = t0.elapsed();
    let log = d.log_text();
    assert!(
        !status.success(),
        "a failed seal must fail the stop: {status:?}\n{log}"
    );
    assert!(
        log.contains("No space left") || log.contains("space"),
        "the log names the cause: {log}"
    );
    assert!(!sealed.exists(), "no sealed file after a failed seal");
    let leftovers: Vec<_> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler")
        .collect();
    // A partial temporary file would keep the disk full (and hold sealed entropy).
    assert!(
        leftovers.is_empty(),
        "files left by the failed seal: {leftovers:?}"
    );

    // Restart with the disk still full: nothing to restore, and the daemon serves.
    let t1 = Instant::now();
    let mut d = kirqd_proc(&f, &cfg, "kirqd-2.log");
    let h = health(&f);
    assert_eq!(h["pool"]["total_bytes"], 0, "nothing restored: {h}");
    f.feed(2, 4096);
    outputs.extend(f.drain(65_536));
    let recover = t1.elapsed();

    // Room again: this stop seals, the next start restores, and those bytes are new too.
    std::fs::remove_file(&filler).unwrap();
    f.feed(2, 4096);
    let held2 = f.pool().0;
    assert!(d.terminate().success(), "{}", d.log_text());
    assert!(sealed.exists());
    let _d = kirqd_proc(&f, &cfg, "kirqd-3.log");
    assert_eq!(f.pool().0, held2, "the sealed bytes are restored");
    outputs.extend(f.drain(65_536));
    assert_no_repeated_window(&outputs);
    eprintln!(
        "FAULT disk-full: SIGTERM with {held} unserved bytes and a full disk: exit {status:?} \
         after {stop:?}, those bytes discarded, files left on the tmpfs: {leftovers:?}; \
         restarted and served again in {recover:?}; with room the next seal restored {held2} \
         bytes; no-repeat ok over {} answers",
        outputs.len()
    );
}

/// Promise: SIGTERM while a consumer is blocked in read() on the device ends both: the daemon
/// exits promptly and cleanly, the reader gets an error or end of file instead of hanging, the
/// mount is gone, and a restarted daemon serves the device again.
#[test]
fn sigterm_during_a_blocked_device_read() {
    need_path(
        "/dev/fuse",
        "the kernel's FUSE (CONFIG_FUSE_FS) and a /dev/fuse node",
    );
    need_program("dd", "coreutils");
    let f = Fleet::new();
    let mnt = f.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cfg = f.daemon_config(
        false,
        &format!(
            "[fallback]\nenabled = false\n[device]\nmode = \"fuse\"\nmountpoint = \"{}\"\n",
            mnt.display()
        ),
    );
    let dev = mnt.join("kirq-rng");
    let mut d = kirqd_proc(&f, &cfg, "kirqd-1.log");
    wait_for(Duration::from_secs(20), "the FUSE file", || dev.exists());
    let mut reader = Command::new("dd")
        .arg(format!("if={}", dev.display()))
        .args(["bs=64", "count=1", "status=none"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        reader.try_wait().unwrap().is_none(),
        "the read should block on an empty pool"
    );

    let t0 = Instant::now();
    let status = d.terminate();
    let stop = t0.elapsed();
    assert!(status.success(), "{status:?}: {}", d.log_text());
    let reader_status = wait_exit(
        &mut reader,
        Duration::from_secs(10),
        "the blocked reader hangs after SIGTERM",
    );
    let released = t0.elapsed();
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "no bytes for a read the daemon never filled"
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let stale = mounts.contains(mnt.to_str().unwrap());
    if stale {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    }
    assert!(
        !stale,
        "the mount is gone after the stop ({status:?}): {}",
        d.log_text()
    );

    let t1 = Instant::now();
    let mut d = kirqd_proc(&f, &cfg, "kirqd-2.log");
    wait_for(Duration::from_secs(20), "the FUSE file again", || {
        dev.exists()
    });
    f.feed(2, 4096);
    let got = Command::new("dd")
        .arg(format!("if={}", dev.display()))
        .args(["bs=1024", "count=2", "iflag=fullblock", "status=none"])
        .output()
        .unwrap();
    assert_eq!(
        got.stdout.len(),
        2048,
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let recover = t1.elapsed();
    let http = f.drain(65_536);
    let mut all = http.clone();
    all.push(got.stdout);
    assert_no_repeated_window(&all);
    // A clean stop with no reader unmounts (the SIGKILL of a drop would leave the mount).
    assert!(d.terminate().success());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()));
    eprintln!(
        "FAULT sigterm-read: kirqd exited {status:?} {stop:?} after SIGTERM; the blocked dd \
         ended ({reader_status:?}, stderr {:?}) {released:?} after it; mount gone; restarted \
         and read 2048 bytes from the device in {recover:?}; no-repeat ok",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
