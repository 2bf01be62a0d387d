//! systemd's readiness protocol (`sd_notify`): `READY=1`, `STATUS=...`, `STOPPING=1` and
//! `WATCHDOG=1`, each one datagram on the socket named by `$NOTIFY_SOCKET`.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call is a no-op.
//! Watchdog pings are sent from the daemon's serving loop, not from a timer thread of their own,
//! so a wedged loop stops them and systemd restarts the daemon.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set. Errors are
/// returned, not logged: the caller decides whether a lost notification matters.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(&path.to_string_lossy(), state),
        None => Ok(()),
    }
}

/// [`notify`], logging a failure instead of returning it.
pub fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, "sd_notify failed (NOTIFY_SOCKET)");
    }
}

/// Sends one notification datagram to `socket`: a path, or an abstract name written `@name`.
pub fn send_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// True when systemd expects watchdog pings from this process (`WatchdogSec=` is set).
pub fn watchdog_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        usec.is_some_and(|u| u.parse::<u64>().is_ok_and(|u| u > 0))
            && pid.is_none_or(|p| p == std::process::id().to_string())
    })
}

/// One watchdog ping, if systemd asked for them.
pub fn watchdog() {
    if watchdog_enabled() {
        let _ = notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send_to(path.to_str().expect("utf-8"), "READY=1\nSTATUS=serving").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("kirq-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        send_to(&format!("@{name}"), "WATCHDOG=1").expect("send");
        let mut buf = [0u8; 16];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
