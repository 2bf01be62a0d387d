//! Two share-nothing hubs (each its own signing key) serving one daemon that lists both: when
//! the hub it pulls from hangs (SIGSTOP: connections are accepted by the kernel and never
//! answered, the worst way for a hub to fail), the daemon moves to the other hub and keeps its
//! consumers served, without the local fallback and without serving any byte twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kirq::crypto::falcon::SigningKey;

/// The second hub: same PKI, its own key and port.
fn second_hub(f: &Fleet, port: u16) -> std::path::PathBuf {
    SigningKey::generate()
        .write_pair(f.dir.path(), "hub2-signing")
        .unwrap();
    let first = std::fs::read_to_string(f.hub_config(false)).unwrap();
    let text = first
        .replace("hub-signing.key", "hub2-signing.key")
        .replace(
            &format!("127.0.0.1:{}", f.hub_port),
            &format!("127.0.0.1:{port}"),
        );
    let p = f.path("kirq-hub2.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn daemon_config(f: &Fleet, second_port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"id = "{DAEMON_ID}"
[trust]
hub_keys = ["hub-signing.pub", "hub2-signing.pub"]
replay_state_file = "kirqd.replay"
[receive]
listen = "127.0.0.1:{}"
cert = "{DAEMON_ID}.crt"
key = "{DAEMON_ID}.key"
hub_ca = "hub-ca.pem"
[http]
listen = "127.0.0.1:{}"
[fallback]
after_secs = 30
[[hubs]]
url = "https://localhost:{}"
[[hubs]]
url = "https://localhost:{second_port}"
"#,
        f.receive_port, f.http_port, f.hub_port
    );
    let p = f.path("kirqd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Takes 64 KiB requests for `secs`; the bytes served.
fn consume(f: &Fleet, c: &reqwest::blocking::Client, secs: u64, out: &mut Vec<Vec<u8>>) -> usize {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        match f.take(c, 65536) {
            Some(b) => {
                n += b.len();
                out.push(b);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    n
}

fn fallback_active(f: &Fleet) -> bool {
    get_json(&f.http("/api/rng/health"))["fallback_active"] == true
}

#[test]
fn a_hung_hub_loses_its_daemon_to_the_other_hub_without_fallback() {
    let f = Fleet::new();
    let port2 = free_port();
    let mut hub1 = hub(&f, &f.hub_config(false), &[]);
    let cfg2 = second_hub(&f, port2);
    let _hub2 = Proc::spawn(
        env!("CARGO_BIN_EXE_kirq-hub"),
        &["run", "--config", cfg2.to_str().unwrap()],
        &f.path("hub2.log"),
        &[],
    );
    wait_for_port(port2, Duration::from_secs(20), "the second hub");
    let _d = kirqd(&f, &daemon_config(&f, port2), &[]);
    let c = reqwest::blocking::Client::new();
    let mut served = Vec::new();
    let before = consume(&f, &c, 5, &mut served);
    assert!(before > 0, "nothing served from the first hub");

    // The first hub hangs: its listener still accepts, nothing answers.
    let pid = nix::unistd::Pid::from_raw(hub1.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // One pull may wait out the client timeout (10 s) on the hung hub; after that the daemon
    // refills from the second hub and stays with it.
    let during = consume(&f, &c, 15, &mut served);
    let after = consume(&f, &c, 10, &mut served);
    let health = get_json(&f.http("/api/rng/health"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    hub1.kill();

    eprintln!(
        "served: {before} B in 5 s before the hang, {during} B in the 15 s after it, \
         {after} B in the 10 s after that; hubs {}",
        health["hubs"]
    );
    assert!(!fallback_active(&f), "the fallback started: {health}");
    assert_eq!(health["fallback_active"], false, "{health}");
    assert_eq!(health["hubs"][0]["reachable"], false, "{health}");
    assert_eq!(health["hubs"][1]["reachable"], true, "{health}");
    // Served at the second hub's pace, not one refill per client timeout: at least half the
    // rate the first hub served at before the hang (`after` is 10 s of serving, `before` 5 s).
    assert!(
        after >= before,
        "after the failover only {after} B in 10 s (before: {before} B in 5 s)"
    );
    assert_no_repeated_window(&served);
}
