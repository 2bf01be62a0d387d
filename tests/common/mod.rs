//! Shared fixtures for the integration tests: a throwaway fleet (keys, PKI, configs) and real
//! kirqd / kirq-hub processes on loopback, waits, metric scrapes, node processes ([`nodes`]), the
//! source tests' loopback HTTPS servers ([`sources`]), the .deb ([`deb`]) and the one qemu VM
//! harness ([`vm`]).
//!
//! Naming: `tests/<what>[_<component>].rs`. `<what>` is what the file tests (`source_` for a
//! source adapter, e.g. `source_rest`); the suffix names the real component it needs beyond cargo
//! and Kirq's own binaries on loopback. Without the component the test fails with an install
//! hint (`need_program`, `need_path`); it never skips.
//!
//! | suffix      | needs |
//! |-------------|-------|
//! | (none)      | nothing more (at most util-linux, e.g. prlimit); any user |
//! | `_vm`       | a qemu VM: qemu-system-x86, busybox-static, cpio, the Debian kernel package (apt) |
//! | `_fuse`     | root and /dev/fuse (a FUSE mount), and the tools that read it |
//! | `_root`     | root for the host kernel: RNDADDENTROPY, network namespaces, mounts |
//! | `_softhsm`  | SoftHSM2 |
//! | `_curl`     | curl |
//! | `_promtool` | promtool (prometheus) |
//! | `_python`   | Python tools from scripts/pip-packages.txt (`./scripts/test.sh` installs them) |
//! | `_k8s`      | PyYAML from scripts/pip-packages.txt (`packaging_k8s`: the manifests, no cluster) |
//! | `_dpkg`     | cargo-deb, dpkg, systemd-analyze, selinux-policy-dev |
//! | `_nspawn`   | root, systemd-nspawn (systemd as PID 1), cargo-deb, dpkg |
#![allow(dead_code)]

pub mod deb;
pub mod nodes;
pub mod sources;
pub mod vm;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kirq::crypto::falcon::SigningKey;
use kirq::wire::{Packet, SourceKind};

pub const DAEMON_ID: &str = "kirqd-1";
pub const HUB_ID: &str = "hub-1";

pub fn free_port() -> u16 {
    kirq::demo::free_port().expect("a free loopback port")
}

/// Keys, certificates and config files for one hub and one daemon.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub receive_port: u16,
    pub http_port: u16,
    pub hub_port: u16,
}

impl Fleet {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        key.write_pair(dir.path(), "hub-signing").unwrap();
        kirq::pki::write_dev_pki(dir.path(), &[HUB_ID], &[DAEMON_ID]).unwrap();
        Self {
            dir,
            key,
            receive_port: free_port(),
            http_port: free_port(),
            hub_port: free_port(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes kirqd.toml. `extra` is appended (TOML tables: [fallback], [pool], ...).
    pub fn daemon_config(&self, with_hub: bool, extra: &str) -> PathBuf {
        self.daemon_config_trust(with_hub, "", extra)
    }

    /// Like [`Self::daemon_config`], with `trust` lines added to the `[trust]` table. The
    /// daemon keeps its replay journal in `kirqd.replay` unless `trust` names another.
    pub fn daemon_config_trust(&self, with_hub: bool, trust: &str, extra: &str) -> PathBuf {
        let trust = if trust.contains("replay_state_file") {
            trust.to_owned()
        } else {
            format!("replay_state_file = \"kirqd.replay\"\n{trust}")
        };
        let hubs = if with_hub {
            format!("[[hubs]]\nurl = \"https://localhost:{}\"\n", self.hub_port)
        } else {
            String::new()
        };
        let text = format!(
            r#"id = "{DAEMON_ID}"
[trust]
hub_keys = ["hub-signing.pub"]
{trust}
[receive]
listen = "127.0.0.1:{}"
cert = "{DAEMON_ID}.crt"
key = "{DAEMON_ID}.key"
hub_ca = "hub-ca.pem"
[http]
listen = "127.0.0.1:{}"
{hubs}
{extra}
"#,
            self.receive_port, self.http_port
        );
        let p = self.path("kirqd.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn hub_config(&self, push: bool) -> PathBuf {
        self.hub_config_with(push, "", "")
    }

    /// Like [`Self::hub_config`], with `top` lines added to the top-level keys and `tables`
    /// (TOML tables: [proof], [decentralized], ...) appended.
    pub fn hub_config_with(&self, push: bool, top: &str, tables: &str) -> PathBuf {
        let text = format!(
            r#"id = "{HUB_ID}"
signing_key = "hub-signing.key"
listen = "127.0.0.1:{}"
push_interval_ms = {}
{top}
[tls]
cert = "{HUB_ID}.crt"
key = "{HUB_ID}.key"
daemon_ca = "daemon-ca.pem"
[[daemons]]
id = "{DAEMON_ID}"
url = "https://localhost:{}"
[[sources]]
type = "local"
{tables}
"#,
            self.hub_port,
            if push { 200 } else { 0 },
            self.receive_port
        );
        let p = self.path("kirq-hub.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// The hub's TLS certificate and key.
    pub fn hub_identity(&self) -> kirq::tls::Identity {
        kirq::tls::Identity::load(
            &self.path(&format!("{HUB_ID}.crt")),
            &self.path(&format!("{HUB_ID}.key")),
        )
        .unwrap()
    }

    /// An HTTPS client holding the hub's certificate, for talking to the receive listener.
    pub fn hub_client(&self) -> reqwest::blocking::Client {
        mtls_client(self.dir.path(), HUB_ID, &self.path("daemon-ca.pem"))
    }

    pub fn receive_url(&self) -> String {
        format!("https://localhost:{}/api/rng/receive", self.receive_port)
    }

    /// Signs `pkt` with the fleet's hub key and POSTs it to the receive listener as the hub.
    pub fn push(&self, pkt: &Packet) -> (u16, serde_json::Value) {
        self.push_raw(pkt.encode_signed(&self.key).to_vec())
    }

    /// POSTs raw bytes to the receive listener with the hub's client certificate.
    pub fn push_raw(&self, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = self
            .hub_client()
            .post(self.receive_url())
            .header(
                kirq::wire::refill::TRANSPORT_HEADER,
                kirq::wire::refill::TRANSPORT_VERSION,
            )
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// Pushes `count` fresh packets of `size` bytes, each of which must be accepted.
    pub fn feed(&self, count: usize, size: usize) {
        for _ in 0..count {
            let (status, body) = self.push(&self.packet(size));
            assert_eq!(status, 200, "{body}");
        }
    }

    /// A valid packet for this daemon, signed by the fleet's hub key.
    pub fn packet(&self, n: usize) -> Packet {
        packet_for(&self.key, DAEMON_ID, n)
    }

    /// The daemon's pool: (bytes held, bytes ever admitted).
    pub fn pool(&self) -> (u64, u64) {
        let h = get_json(&self.http("/api/rng/health"));
        (
            h["pool"]["total_bytes"].as_u64().unwrap(),
            h["pool"]["admitted_bytes_total"].as_u64().unwrap(),
        )
    }

    /// POSTs `{"num_bytes": n}` to /api/rng/random: the bytes on 200, None on 503 (the pool
    /// cannot serve `n` now); any other answer fails the test.
    pub fn take(&self, client: &reqwest::blocking::Client, n: usize) -> Option<Vec<u8>> {
        let r = client
            .post(self.http("/api/rng/random"))
            .json(&serde_json::json!({ "num_bytes": n }))
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let v: serde_json::Value = r.json().unwrap();
                Some(hex::decode(v["random_data"].as_str().unwrap()).unwrap())
            }
            503 => None,
            s => panic!("unexpected status {s}: {}", r.text().unwrap()),
        }
    }

    /// Takes everything the pool holds (requests of at most `max_request` bytes), until it is
    /// empty; a 503 is asked again.
    pub fn drain(&self, max_request: u64) -> Vec<Vec<u8>> {
        let c = reqwest::blocking::Client::new();
        let mut out = Vec::new();
        loop {
            let (left, _) = self.pool();
            if left == 0 {
                return out;
            }
            if let Some(b) = self.take(&c, usize::try_from(left.min(max_request)).unwrap()) {
                out.push(b);
            }
        }
    }

    /// Packets refused for `reason`, as `/api/rng/stats` counts them.
    pub fn rejected(&self, reason: &str) -> u64 {
        get_json(&self.http("/api/rng/stats"))["packets_rejected"][reason]
            .as_u64()
            .unwrap()
    }

    /// Packets refused for `reason`, as `/metrics` counts them.
    pub fn rejected_metric(&self, reason: &str) -> u64 {
        let m = reqwest::blocking::get(self.http("/metrics"))
            .unwrap()
            .text()
            .unwrap();
        let prefix = format!("kirq_packets_rejected_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no metric for {reason}"))
            .parse()
            .unwrap()
    }

    /// Pushes `body`; expects it refused with `status` and `reason`, counted once in stats and
    /// metrics, and the pool unchanged.
    pub fn expect_reject(&self, what: &str, body: Vec<u8>, status: u16, reason: &str) {
        let before = self.pool();
        let count = self.rejected(reason);
        let (s, resp) = self.push_raw(body);
        assert_eq!(s, status, "{what}: {resp}");
        assert_eq!(resp["reason"], reason, "{what}: {resp}");
        assert!(resp["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(self.rejected(reason), count + 1, "{what}: counted in stats");
        assert_eq!(
            self.rejected_metric(reason),
            count + 1,
            "{what}: counted in metrics"
        );
        assert_eq!(self.pool(), before, "{what}: the pool must not change");
    }
}

/// An HTTPS client holding `name`'s certificate and key (`NAME.crt`, `NAME.key` in `dir`) that
/// trusts the CA certificates in `ca`.
pub fn mtls_client(dir: &Path, name: &str, ca: &Path) -> reqwest::blocking::Client {
    let id = kirq::tls::Identity::load(
        &dir.join(format!("{name}.crt")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap();
    let ca = kirq::tls::load_certs(ca).unwrap();
    let cfg = kirq::tls::client_config(&id, &ca, false).unwrap();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(cfg)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn packet_for(key: &SigningKey, recipient: &str, n: usize) -> Packet {
    kirq::wire::sample_packet(key, recipient, n, SourceKind::Qrng)
}

/// A child process killed on drop, its stderr collected in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &str, args: &[&str], log: &Path, env: &[(&str, &str)]) -> Self {
        let err = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(err)
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Self {
            child,
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_exit(
            &mut self.child,
            Duration::from_secs(10),
            "process ignored SIGTERM",
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn kirqd(fleet: &Fleet, config: &Path, env: &[(&str, &str)]) -> Proc {
    kirqd_with(fleet, config, &[], &[], env)
}

/// `kirqd run --config CONFIG EXTRA...`, started under `wrapper` (e.g. `prlimit ... --`,
/// `setpriv ... --`) when it is not empty; waits for the HTTP shim. Logs to `kirqd.log`.
pub fn kirqd_with(
    fleet: &Fleet,
    config: &Path,
    wrapper: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.extend([
        env!("CARGO_BIN_EXE_kirqd"),
        "run",
        "--config",
        config.to_str().unwrap(),
    ]);
    argv.extend(extra);
    let (program, args) = argv.split_first().expect("a program");
    let p = Proc::spawn(program, args, &fleet.path("kirqd.log"), env);
    wait_for_shim(fleet);
    p
}

pub fn hub(fleet: &Fleet, config: &Path, env: &[(&str, &str)]) -> Proc {
    hub_with(fleet, config, &[], env)
}

/// `kirq-hub run --config CONFIG` under `wrapper` (e.g. `prlimit ... --`) when it is not empty;
/// waits for the pull listener.
pub fn hub_with(fleet: &Fleet, config: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = fleet.path(&format!("hub-{}.log", free_port()));
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.extend([
        env!("CARGO_BIN_EXE_kirq-hub"),
        "run",
        "--config",
        config.to_str().unwrap(),
    ]);
    let (program, args) = argv.split_first().expect("a program");
    let p = Proc::spawn(program, args, &log, env);
    wait_for_port(
        fleet.hub_port,
        Duration::from_secs(20),
        "kirq-hub pull listener",
    );
    p
}

/// Waits (`limit` at most, else fails with `failure`) until `child` exits; its status.
pub fn wait_exit(child: &mut Child, limit: Duration, failure: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (20 s at most) until the fleet's kirqd answers on its HTTP shim.
pub fn wait_for_shim(fleet: &Fleet) {
    wait_for(Duration::from_secs(20), "kirqd HTTP shim", || {
        reqwest::blocking::get(fleet.http("/api/rng/health")).is_ok()
    });
}

/// Waits until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    wait_for(limit, what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Polls `ok` every 50 ms until it holds; fails after `limit`, naming `what`.
pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `ok` every `every` for at most `limit`, without failing: whether it came to hold.
pub fn wait_at_most(limit: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// The Prometheus text that `url` serves.
pub fn scrape(url: &str) -> String {
    reqwest::blocking::get(url)
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("scrape {url}: {e}"))
}

/// The value on the first line of a Prometheus text scrape that starts with `prefix` (the
/// series with its labels and the space before the value, e.g. `kirq_x_total{reason="y"} `);
/// None when no line does.
pub fn metric<T: std::str::FromStr>(text: &str, prefix: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{prefix}{v}: not a number: {e:?}"))
    })
}

pub fn get_json(url: &str) -> serde_json::Value {
    reqwest::blocking::get(url).unwrap().json().unwrap()
}

/// POSTs `{"num_bytes": n, ...}` to /api/rng/random; returns (status, body).
pub fn random(fleet: &Fleet, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .post(fleet.http("/api/rng/random"))
        .json(&body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Fails (never skips) when a program the test needs is missing, naming the Debian package.
pub fn need_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "this test needs `{program}`: install it with `apt-get install {package}` \
         (scripts/test.sh installs scripts/apt-packages.txt)"
    );
}

pub fn need_path(path: &str, hint: &str) {
    assert!(Path::new(path).exists(), "this test needs {path}: {hint}");
}

/// Runs `sh -c script` under coreutils `timeout` (so a hung read cannot hang the test); returns
/// (exit code, stdout, stderr). Runs on a blocking thread: std::process, not tokio's, so a child
/// is reaped no matter which test runtime is alive.
pub async fn sh(script: &str, limit: Duration) -> (i32, Vec<u8>, String) {
    let script = script.to_owned();
    let secs = limit.as_secs().max(1).to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["-k", "5", &secs, "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .map(|o| (o, script))
    })
    .await
    .expect("join")
    .expect("spawn timeout/sh");
    let (o, script) = out;
    let code = o.status.code().unwrap_or(-1);
    assert!(
        code != 124 && code != 137,
        "{script:?} did not finish within {limit:?}"
    );
    (
        code,
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts no 16-byte window occurs twice within or across the outputs.
pub fn assert_no_repeated_window(outputs: &[Vec<u8>]) {
    let mut seen = std::collections::HashSet::new();
    for (i, o) in outputs.iter().enumerate() {
        for w in o.windows(16) {
            let key: [u8; 16] = w.try_into().expect("16 bytes");
            assert!(seen.insert(key), "a 16-byte window repeats (output {i})");
        }
    }
}

/// Signs, as honest nodes do at reveal, every listed node's receipt over the packet's whole
/// commitment set for `recipient` (epoch 1, `sequence`). `keys`: node id → signing key.
pub fn sign_receipts(p: &mut Packet, keys: &[(&str, &SigningKey)], recipient: &str, sequence: u64) {
    let set = kirq::wire::commitment_set(&p.provenance);
    let round = p.round;
    for s in p.provenance.iter_mut().filter(|s| s.contributes()) {
        if let Some((_, k)) = keys.iter().find(|(id, _)| *id == s.id) {
            let digest = kirq::crypto::node_receipt_digest(round, recipient, 1, sequence, &set);
            s.receipt = Some(kirq::wire::NodeReceipt {
                epoch: 1,
                sequence,
                signature: k.sign(&digest),
            });
        }
    }
}

/// Raises this test process's soft open-file limit (it holds a flood's sockets itself).
pub fn raise_own_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limit");
    if soft < 4096 {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard)
            .expect("raise this test's open-file limit");
    }
}

/// A round number as hubs make them (the clock in microseconds), plus `offset`.
pub fn fresh_round(offset: u64) -> u64 {
    kirq::util::now_ms() * 1000 + offset
}
