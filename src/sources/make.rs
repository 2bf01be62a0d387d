//! Making a source from its config: the adapter itself and the settings its caller (the hub's
//! packet factory, or a decentralized node) wraps around it. Both the hub and the node make their
//! sources here, so neither imports the other.

use std::time::Duration;

use super::device::DeviceSource;
use super::gate::Policy;
use super::local::LocalSource;
use super::pkcs11::Pkcs11Source;
use super::rest::RestSource;
use super::spore::SporeSource;
use super::usb::UsbSource;
use super::{Meta, Source, SourceError};
use crate::config::{SourceConfig, SourceType};

/// Default time one source may take for one packet's bytes.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the caller treats one source beyond fetching: its share and its backoff.
#[derive(Debug, Clone, Copy)]
pub struct SourceSettings {
    pub weight: u32,
    pub timeout: Duration,
    pub policy: Policy,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            weight: 1,
            timeout: SOURCE_TIMEOUT,
            policy: Policy::default(),
        }
    }
}

impl SourceSettings {
    /// The settings `c`'s common keys give.
    fn of(c: &SourceConfig) -> Self {
        let common = &c.common;
        Self {
            weight: common.weight,
            timeout: Duration::from_millis(common.timeout_ms),
            policy: Policy {
                min_interval: Duration::from_millis(common.min_interval_ms),
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(common.backoff_max_secs),
                quota_wait: Duration::from_secs(common.quota_wait_secs),
            },
        }
    }
}

/// Builds one source from its config. Files it names (tokens, PINs, pinned certificates) are
/// read now, so a bad one stops the hub at start; devices and services are first contacted on the
/// first fetch, so one that is down only degrades the hub.
pub fn make_source(c: &SourceConfig) -> Result<(Box<dyn Source>, SourceSettings), SourceError> {
    let meta = Meta {
        id: c.id().to_owned(),
        kind: c.kind(),
        min_entropy_per_byte: c.common.min_entropy_per_byte,
    };
    let settings = SourceSettings::of(c);
    let timeout = settings.timeout;
    let source: Box<dyn Source> = match &c.source {
        SourceType::Local {} => Box::new(LocalSource::with_meta(meta)),
        SourceType::Rest(r) => {
            let spec = r
                .resolve()
                .map_err(|(k, why)| SourceError::Fatal(format!("config key `{k}`: {why}")))?;
            Box::new(RestSource::new(
                meta,
                spec,
                timeout,
                settings.policy.min_interval,
            )?)
        }
        SourceType::Pkcs11(p) => Box::new(Pkcs11Source::new(meta, p)?),
        SourceType::Spore(sp) => Box::new(SporeSource::new(meta, sp, timeout)?),
        SourceType::Usb(u) => Box::new(UsbSource::new(meta, u, timeout)),
        SourceType::Device(d) => Box::new(DeviceSource::new(meta, d, timeout)),
    };
    Ok((source, settings))
}
