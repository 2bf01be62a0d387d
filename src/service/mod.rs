//! The process as a service: systemd's readiness protocol ([`notify`]), the stop signals and
//! the log line for the process hardening. Shared by kirqd, kirq-hub and the node.

pub mod notify;

pub fn log_hardening(h: crate::secret::Hardening) {
    if h.memory_locked {
        tracing::info!("memory locked (mlockall): entropy is never swapped");
    } else {
        tracing::warn!("could not lock memory (mlockall; needs CAP_IPC_LOCK or RLIMIT_MEMLOCK)");
    }
    if h.no_core_dumps {
        tracing::info!("core dumps disabled for this process");
    } else {
        tracing::warn!("could not disable core dumps (prctl PR_SET_DUMPABLE)");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
