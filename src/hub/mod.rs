//! kirq-hub: draws from its sources, health-tests each, mixes, signs and delivers packets.
//!
//! Packets are addressed: each is built for one daemon id and never reused. Delivery is push (one
//! task per daemon with a URL, every `push_interval_ms`) and pull (daemons call
//! `POST /api/hub/refill` on the mutual-TLS listener when their pool runs low). A pull needs no
//! entry in the hub's config: the recipient it names must be named by the client certificate (a
//! DNS name, or a SPIFFE ID in `tls.spiffe_trust_domain`) that the daemon CA issued. SIGHUP
//! re-reads the config ([`RunningHub::reload_from`]) without closing a connection.

mod api;
mod build;
pub mod limit;
mod serve;

pub use api::{DecentralizedHealth, ErrorBody, HealthResponse, HubError, HybridHealth, document};
pub use build::{BuildError, Mode, PacketFactory, SourceReport, TrackedSource};
pub use serve::{PUSH_IN_FLIGHT, RunningHub, start};

use std::path::Path;

use crate::config::HubConfig;
use crate::crypto::sig::HubSigningKey;

/// Runs the hub from a config file until SIGINT/SIGTERM; SIGHUP re-reads the config.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let cfg = HubConfig::load(config_path)?;
    let key = HubSigningKey::load(&cfg.signing_key)?;
    let hub = start(cfg, key).await?;
    tracing::info!(pull = %hub.pull_addr, "kirq-hub running; SIGHUP reloads the config, Ctrl-C stops");
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = crate::service::shutdown_signal() => break,
            _ = hup.recv() => {
                if let Err(e) = hub.reload_from(config_path) {
                    tracing::error!(
                        error = %format!("{e:#}"),
                        "SIGHUP: reload refused; the running config stays"
                    );
                }
            }
        }
    }
    tracing::info!("kirq-hub stopping");
    hub.stop();
    Ok(())
}
