//! The `/quantum/*` endpoints and the OpenAPI contract against the real `kirqd` binary.
//!
//! Each test runs `kirqd demo` (a hub feeding a daemon over mutual TLS, all on loopback) as a
//! child process: key persistence across restarts, key files' modes, a wrong at-rest key, key
//! rotation by command, and schemathesis against the served OpenAPI document. schemathesis comes
//! from PyPI (scripts/pip-packages.txt; scripts/test.sh installs it and puts it on PATH); without
//! it the test fails and says how to install it.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::wait_exit;
use serde_json::Value;

const KIRQD: &str = env!("CARGO_BIN_EXE_kirqd");

/// A running `kirqd demo`, killed (by its own handle) when dropped.
struct Demo {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn demo(dir: &Path, keys: Option<(&Path, &Path)>) -> Demo {
    let port = kirq::demo::free_port().unwrap();
    let log = dir.join(format!("demo-{port}.log"));
    let mut cmd = Command::new(KIRQD);
    cmd.args(["demo", "--listen", &format!("127.0.0.1:{port}")]);
    if let Some((state, key)) = keys {
        cmd.arg("--state-dir").arg(state);
        cmd.arg("--at-rest-key-file").arg(key);
    }
    let out = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(out)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    Demo { child, port, log }
}

/// A minimal HTTP/1.1 exchange on loopback: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn json(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (s, b) = http(port, method, path, body).unwrap();
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// Waits until the VRF key exists (the demo hub's packets reached the pool); returns both public
/// keys (VRF, Falcon) in hex.
fn wait_for_keys(d: &mut Demo) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = d.child.try_wait().unwrap() {
            panic!(
                "kirqd exited ({status}): {}",
                std::fs::read_to_string(&d.log).unwrap()
            );
        }
        if let Ok((200, b)) = http(d.port, "GET", "/quantum/vrf/public-key", "") {
            let vrf: Value = serde_json::from_str(&b).unwrap();
            let (s, f) = json(d.port, "GET", "/quantum/falcon-public-key", "");
            assert_eq!(s, 200);
            return (
                vrf["public_key"].as_str().unwrap().to_owned(),
                f["public_key"].as_str().unwrap().to_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no VRF key after 60 s: {}",
        std::fs::read_to_string(&d.log).unwrap()
    );
}

fn write_key(path: &Path, byte: u8) {
    std::fs::write(path, [byte; 32]).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn keys_persist_rotate_and_refuse_a_wrong_at_rest_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let key = dir.path().join("at-rest.key");
    write_key(&key, 0x11);

    // First start: both keys made, sealed, private.
    let mut d = demo(dir.path(), Some((&state, &key)));
    let (vrf1, falcon1) = wait_for_keys(&mut d);
    let (s, sig) = json(
        d.port,
        "POST",
        "/quantum/falcon-signature",
        r#"{"message":"00ff"}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(sig["public_key"], falcon1.as_str());
    drop(d);
    assert_eq!(mode(&state), 0o700);
    for f in ["vrf.sealed", "falcon512.sealed", "ml-dsa-65.sealed"] {
        let p = state.join(f);
        assert_eq!(mode(&p) & 0o077, 0, "{f} must not be readable by others");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("kirq-sealed-v1"), "{f}");
    }

    // Restart: the same keys, and the old signature still verifies.
    let mut d = demo(dir.path(), Some((&state, &key)));
    assert_eq!(wait_for_keys(&mut d), (vrf1.clone(), falcon1.clone()));
    let body = format!(
        r#"{{"message":"00ff","signature":"{}"}}"#,
        sig["signature"].as_str().unwrap()
    );
    let (_, v) = json(d.port, "POST", "/quantum/falcon-verify", &body);
    assert_eq!(v["valid"], true);
    drop(d);

    // A wrong at-rest key: kirqd refuses to start, says why, and changes no file.
    let before = snapshot(&state);
    let wrong = dir.path().join("wrong.key");
    write_key(&wrong, 0x22);
    let mut d = demo(dir.path(), Some((&state, &wrong)));
    let status = wait_exit(
        &mut d.child,
        Duration::from_secs(30),
        "kirqd kept running with a wrong at-rest key",
    );
    assert!(!status.success());
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("wrong at-rest key"), "{log}");
    assert!(log.contains("left untouched"), "{log}");
    assert_eq!(snapshot(&state), before, "no sealed file may change");

    // Rotation by command: new Falcon and ML-DSA keys, the VRF key kept; the old files kept aside.
    let cfg = dir.path().join("kirqd.toml");
    std::fs::write(
        &cfg,
        format!(
            "id = \"d\"\n[trust]\nhub_keys = [\"hub.pub\"]\n[receive]\nlisten = \"127.0.0.1:1\"\n\
             cert = \"c\"\nkey = \"k\"\nhub_ca = \"ca\"\n[quantum]\nstate_dir = {:?}\n\
             at_rest_key_file = {:?}\n",
            state, key
        ),
    )
    .unwrap();
    let out = Command::new(KIRQD)
        .args(["rotate-keys", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restart kirqd"));
    assert!(state.join("falcon512.sealed.prev").exists());
    assert!(state.join("ml-dsa-65.sealed.prev").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ML-DSA-65 service key rotated"));
    let mut d = demo(dir.path(), Some((&state, &key)));
    let (vrf2, falcon2) = wait_for_keys(&mut d);
    assert_eq!(vrf2, vrf1);
    assert_ne!(falcon2, falcon1);
}

/// Finds `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let st = on_path("schemathesis").unwrap_or_else(|| {
        panic!(
            "schemathesis is not on PATH. Run ./scripts/test.sh (it installs \
             scripts/pip-packages.txt into target/test-venv and puts it on PATH), or: \
             python3 -m venv target/test-venv && target/test-venv/bin/pip install schemathesis \
             && export PATH=$PWD/target/test-venv/bin:$PATH"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let mut d = demo(dir.path(), None);
    wait_for_keys(&mut d);

    // The served document is the committed one.
    let (s, served) = http(d.port, "GET", "/openapi.json", "").unwrap();
    assert_eq!(s, 200);
    assert!(
        served == include_str!("../openapi.json"),
        "served /openapi.json != openapi.json"
    );

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/schemathesis_hooks.py");
    let url = format!("http://127.0.0.1:{}/openapi.json", d.port);
    let mut child = Command::new(st)
        .args([
            "run",
            &url,
            "--max-examples",
            "25",
            "--seed",
            "20261128",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "20", "--no-color"])
        // A private working directory: no stray schemathesis.toml, hypothesis db kept out of git.
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis took over 300 s:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let output = reader.join().unwrap();
    assert!(
        status.success(),
        "schemathesis found problems ({status}):\n{output}\n{err}"
    );
    assert!(output.contains("passed"), "{output}");
}
