use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::daemon::{HealthConfig, check_health};
use super::{ConfigError, check_https, check_id, invalid, read_toml, resolve};
use crate::wire::MAX_ENTROPY_BYTES;

/// kirq-hub's configuration file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub id: String,
    /// Falcon-512 secret key file (from `kirq-hub keygen`).
    pub signing_key: PathBuf,
    #[serde(default = "d_packet")]
    pub packet_bytes: usize,
    /// Milliseconds between pushes to each daemon; 0 disables push.
    #[serde(default = "d_push")]
    pub push_interval_ms: u64,
    /// Packet lifetime in milliseconds (at most 60000).
    #[serde(default = "d_lifetime")]
    pub packet_lifetime_ms: u64,
    pub tls: HubTlsConfig,
    /// Mutual-TLS listener for daemons' refill requests.
    pub listen: SocketAddr,
    /// Plain HTTP listener for `/metrics` and `/health` (loopback recommended).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub daemons: Vec<DaemonEndpoint>,
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub health: HealthConfig,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that issues daemon certificates.
    pub daemon_ca: PathBuf,
    #[serde(default)]
    pub pq_only: bool,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonEndpoint {
    /// The daemon's recipient id (its config `id`); also a DNS name its certificate must carry.
    pub id: String,
    /// Base URL of the daemon's receive listener; omit for pull-only daemons.
    #[serde(default)]
    pub url: Option<String>,
}

/// One entropy source.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// The operating system's RNG; marked `local`, never counted as quantum.
    Local {
        #[serde(default = "d_local_id")]
        id: String,
    },
}

impl SourceConfig {
    pub fn id(&self) -> &str {
        match self {
            Self::Local { id } => id,
        }
    }
}

fn d_packet() -> usize {
    4096
}
fn d_push() -> u64 {
    1000
}
fn d_lifetime() -> u64 {
    60_000
}
fn d_local_id() -> String {
    "local".into()
}

impl HubConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: Self = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut c.signing_key);
        resolve(base, &mut c.tls.cert);
        resolve(base, &mut c.tls.key);
        resolve(base, &mut c.tls.daemon_ca);
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_id("id", &self.id)?;
        if !(32..=MAX_ENTROPY_BYTES).contains(&self.packet_bytes) {
            return Err(invalid(
                "packet_bytes",
                format!("must be 32..={MAX_ENTROPY_BYTES}"),
            ));
        }
        if !(1_000..=crate::wire::MAX_LIFETIME_MS).contains(&self.packet_lifetime_ms) {
            return Err(invalid("packet_lifetime_ms", "must be 1000..=60000"));
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.daemons {
            check_id("daemons.id", &d.id)?;
            if !ids.insert(&d.id) {
                return Err(invalid("daemons.id", format!("{:?} is listed twice", d.id)));
            }
            if let Some(u) = &d.url {
                check_https("daemons.url", u)?;
            }
        }
        if self.sources.is_empty() {
            return Err(invalid("sources", "configure at least one source"));
        }
        let mut ids = std::collections::HashSet::new();
        for s in &self.sources {
            check_id("sources.id", s.id())?;
            if !ids.insert(s.id()) {
                return Err(invalid(
                    "sources.id",
                    format!("{:?} is listed twice", s.id()),
                ));
            }
        }
        check_health(&self.health)
    }
}
