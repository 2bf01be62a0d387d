//! kirqd speaks systemd's notify protocol as kirqd.service (Type=notify, WatchdogSec=) expects:
//! a real kirqd process, a datagram socket standing in for systemd's $NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 512];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Messages received until `until` returns true for one of them, or `limit` passes.
fn collect(sock: &UnixDatagram, limit: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Some(m) = recv(sock) {
            let done = until(&m);
            got.push(m);
            if done {
                break;
            }
        }
    }
    got
}

fn notify_socket(f: &Fleet) -> (UnixDatagram, String) {
    let path = f.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (sock, path.to_str().unwrap().to_owned())
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let f = Fleet::new();
    let cfg = f.daemon_config(false, "");
    let (sock, path) = notify_socket(&f);
    let mut d = kirqd(
        &f,
        &cfg,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "2000000")],
    );
    let first = collect(&sock, Duration::from_secs(10), |m| m.contains("READY=1"));
    let ready = first.last().expect("no notification at all");
    assert!(ready.starts_with("READY=1\nSTATUS=serving"), "{first:?}");

    // Pings come from the 250 ms fallback tick: several within 1.5 s, well inside WatchdogSec.
    let pings = collect(&sock, Duration::from_millis(1500), |_| false);
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(n >= 3, "{n} watchdog pings in 1.5 s: {pings:?}");

    assert!(d.terminate().success());
    let rest = collect(&sock, Duration::from_secs(2), |m| {
        m.starts_with("STOPPING=1")
    });
    assert!(
        rest.iter().any(|m| m.starts_with("STOPPING=1")),
        "no STOPPING=1: {rest:?}"
    );
}

#[test]
fn no_watchdog_pings_unless_systemd_asks() {
    let f = Fleet::new();
    let cfg = f.daemon_config(false, "");
    let (sock, path) = notify_socket(&f);
    // WATCHDOG_PID names another process: the pings are not ours to send.
    let _d = kirqd(
        &f,
        &cfg,
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "2000000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let first = collect(&sock, Duration::from_secs(10), |m| m.contains("READY=1"));
    assert!(first.iter().any(|m| m.starts_with("READY=1")), "{first:?}");
    let later = collect(&sock, Duration::from_secs(1), |_| false);
    assert!(
        !later.iter().any(|m| m == "WATCHDOG=1"),
        "pinged without being asked: {later:?}"
    );
}
