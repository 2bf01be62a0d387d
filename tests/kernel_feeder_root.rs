//! The kernel feeder against the host's /dev/random: RNDADDENTROPY and RNDRESEEDCRNG succeed as
//! root; without CAP_SYS_ADMIN the error names the capability and no pool byte is lost.

mod common;

use kirq::config::KernelFeedConfig;
use kirq::demo::testing::{fill, local_daemon};
use kirq::kernel::{FeedError, Feeder, KernelFeed};

#[test]
fn feeds_and_reseeds_the_host_kernel() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test feeds the host's /dev/random: run it as root (CAP_SYS_ADMIN)"
    );
    let (_dir, d) = local_daemon();
    fill(&d, 1024);
    let f = Feeder::open().expect("open /dev/random");
    let before = f.entropy_count().expect("RNDGETENTCNT");
    assert!((0..=4096).contains(&before));
    let feed = KernelFeed {
        cfg: KernelFeedConfig::default(),
        ..d.kernel_feed()
    };
    // Local bytes from this same kernel: mixed in, credited nothing.
    let fed = f
        .feed_from_pool(&feed, 64, true)
        .expect("RNDADDENTROPY")
        .expect("pool had bytes");
    assert_eq!((fed.bytes, fed.bits), (64, 0));
    f.reseed().expect("RNDRESEEDCRNG");
    assert_eq!(d.pool.len(), 1024 - 64);
    let served = d
        .metrics
        .served_bytes
        .get_or_create(&[("consumer", "kernel".into())])
        .get();
    assert_eq!(served, 64);
    // Crediting bytes whose provenance allows it is accepted too (the 5.18+ driver ignores the
    // credit once the CRNG is ready).
    f.add(&[0x5a; 32], 128).expect("RNDADDENTROPY with credit");
}

#[test]
fn without_cap_sys_admin_the_error_says_so() {
    if std::env::var_os("KIRQ_FEEDER_UNPRIVILEGED_CHILD").is_some() {
        // Child: runs as `nobody`; /dev/random is writable by all but the ioctl is not.
        let f = Feeder::open().expect("open /dev/random");
        match f.add(&[0u8; 8], 0) {
            Err(e @ FeedError::NotPermitted { .. }) => println!("ERROR: {e}"),
            other => panic!("expected NotPermitted, got {other:?}"),
        }
        // A refused feed costs the pool nothing: the kernel is asked before bytes are taken.
        let (_dir, d) = local_daemon();
        fill(&d, 64);
        let feed = KernelFeed {
            cfg: KernelFeedConfig::default(),
            ..d.kernel_feed()
        };
        let r = f.feed_from_pool(&feed, 64, false);
        assert!(matches!(r, Err(FeedError::NotPermitted { .. })), "{r:?}");
        assert_eq!(d.pool.len(), 64, "a refused feed took pool bytes");
        println!("POOL KEPT");
        return;
    }
    common::need_program("setpriv", "util-linux");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "without_cap_sys_admin_the_error_says_so",
            "--nocapture",
        ])
        .env("KIRQ_FEEDER_UNPRIVILEGED_CHILD", "1")
        .output()
        .expect("run setpriv");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RNDADDENTROPY on /dev/random was refused")
            && text.contains("needs CAP_SYS_ADMIN")
            && text.contains("POOL KEPT"),
        "{text}"
    );
}

/// `kirqd run` with the feeder on: after the first seeding of the host kernel it tells systemd
/// READY=1 (through $NOTIFY_SOCKET), and /api/rng/health shows the feeder running.
#[test]
fn kirqd_run_feeds_the_kernel_and_signals_ready() {
    use std::io::Write;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (CAP_SYS_ADMIN)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (_hub, d) = kirq::demo::configs(dir.path(), None).expect("configs");
    let http = kirq::demo::free_port().expect("port");
    let cfg = dir.path().join("kirqd.toml");
    let mut f = std::fs::File::create(&cfg).expect("config");
    write!(
        f,
        r#"id = "{id}"
[trust]
hub_keys = ["hub-signing.pub"]
[receive]
listen = "{listen}"
cert = "demo-kirqd.crt"
key = "demo-kirqd.key"
hub_ca = "hub-ca.pem"
[fallback]
after_secs = 1
[http]
listen = "127.0.0.1:{http}"
[device]
mode = "off"
[kernel]
enabled = true
"#,
        id = d.id,
        listen = d.receive.listen,
    )
    .expect("write config");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kirqd"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start kirqd");
    let mut buf = [0u8; 512];
    let got = sock
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let health = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{http}/api/rng/health"),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let got = got.expect("no sd_notify datagram within 20 s");
    assert!(
        got.starts_with("READY=1\nSTATUS=kernel CRNG reseeded"),
        "{got}"
    );
    let health: serde_json::Value =
        serde_json::from_str(&health.expect("curl")).expect("health JSON");
    assert_eq!(health["kernel_feeder"]["state"], "running", "{health}");
    assert!(
        health["kernel_feeder"]["reseeds_total"].as_u64() >= Some(1),
        "{health}"
    );
    assert_eq!(health["device"]["mode"], "off", "{health}");
}

/// The kernel feeder never throws entropy away: kirqd with the feeder on but without
/// CAP_SYS_ADMIN (dropped from its bounding and inheritable sets by setpriv), while a hub
/// delivers, says why the feeder is off, takes no byte for the kernel, keeps its pool, and does
/// not repeat the error in a loop.
#[test]
fn without_cap_sys_admin_the_feeder_takes_no_bytes_and_says_why() {
    use common::*;
    use std::time::Duration;

    need_program("setpriv", "util-linux");
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root: the test drops CAP_SYS_ADMIN from a root kirqd"
    );
    let f = Fleet::new();
    let config = f.daemon_config(
        true,
        "[fallback]\nenabled = false\n[device]\nmode = \"off\"\n[kernel]\nenabled = true\n",
    );
    let d = kirqd_with(
        &f,
        &config,
        &[
            "setpriv",
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            "--",
        ],
        &[],
        &[],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .expect("kirqd's /proc status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    assert_eq!(
        cap_eff & (1 << 21),
        0,
        "setpriv left CAP_SYS_ADMIN: {status}"
    );
    let _h = hub(&f, &f.hub_config(true), &[]);
    wait_for(Duration::from_secs(20), "packets from the hub", || {
        get_json(&f.http("/api/rng/stats"))["packets_accepted"].as_u64() >= Some(5)
    });
    // A few more seconds of deliveries for a spinning feeder to show itself.
    std::thread::sleep(Duration::from_secs(3));
    let health = get_json(&f.http("/api/rng/health"));
    let metrics = reqwest::blocking::get(f.http("/metrics"))
        .expect("metrics")
        .text()
        .expect("metrics text");
    let kernel_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("entropy_served_bytes_total{consumer=\"kernel\"} "))
        .map_or(0, |v| v.trim().parse().expect("a number"));
    let log = d.log_text();
    let repeats = log.matches("needs CAP_SYS_ADMIN").count();
    let (held, admitted) = (
        health["pool"]["total_bytes"].as_u64().expect("total_bytes"),
        health["pool"]["admitted_bytes_total"]
            .as_u64()
            .expect("admitted"),
    );
    let summary = format!(
        "feeder {}; kernel consumer bytes {kernel_bytes}; pool holds {held} of {admitted} \
         admitted; the capability error logged {repeats} times",
        health["kernel_feeder"]
    );
    println!("{summary}");
    assert!(
        matches!(
            health["kernel_feeder"]["state"].as_str(),
            Some("failed" | "off")
        ),
        "{summary}"
    );
    assert!(
        health["kernel_feeder"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("CAP_SYS_ADMIN")),
        "the feeder must say what to grant: {summary}"
    );
    assert_eq!(
        kernel_bytes, 0,
        "bytes taken for a kernel that refuses them: {summary}"
    );
    assert_eq!(health["kernel_feeder"]["bytes_fed_total"], 0, "{summary}");
    assert!(
        admitted > 0 && held == admitted,
        "the pool was drained: {summary}"
    );
    assert_eq!(
        repeats, 1,
        "the error is logged once, not in a loop: {summary}"
    );
}
