//! Small helpers shared by the hub and the daemon: locks, clocks, timestamps, logging, process
//! limits.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks `m`, taking over a poisoned lock: every holder in Kirq leaves the data consistent
/// between statements, so a panic elsewhere must not stop the rest from serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
/// `e` and each error it was caused by, joined with ": " (reqwest's "error sending request"
/// alone does not say whether the connect, the handshake or the connection failed).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    use std::fmt::Write;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp with millisecond precision.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// RFC 3339 form of a `SystemTime`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Logs to stderr with `filter` unless RUST_LOG is set; colours only on a terminal, so the
/// journal and log files get plain text.
pub fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Prints an error chain once and turns the result into an exit code.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Most descriptors asked for when the hard limit is unlimited (the kernel's default `nr_open`).
const MAX_OPEN_FILES: u64 = 1 << 20;

/// This process's soft `RLIMIT_NOFILE` (1024, the usual default, when it cannot be read).
pub fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Raises the soft open-file limit to the hard one and logs what it is. A server holds one
/// descriptor per connection, and systemd's default soft limit (1024) is a few hundred idle
/// strangers away; the units set `LimitNOFILE=` themselves (and forbid `setrlimit`), so under
/// systemd there is usually nothing to raise. Returns the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open file limit");
            return open_file_limit();
        }
    };
    let target = hard.min(MAX_OPEN_FILES);
    if soft >= target {
        tracing::info!(soft, hard, "open file limit");
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, hard, "open file limit raised");
            target
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit");
            soft
        }
    }
}
