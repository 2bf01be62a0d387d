//! The pool as a device: `/dev/<name>` through CUSE ([`cuse`]), or a file on a FUSE mount
//! ([`fuse`]) where the kernel has no CUSE. Both are thin front ends over one [`core::DeviceCore`],
//! so blocking, `O_NONBLOCK`, poll, ioctls, fairness and accounting are the same code.
//!
//! [`start`] applies `device.mode`: `auto` takes CUSE when /dev/cuse opens, else FUSE when a
//! mountpoint is configured, else HTTP only, and says which (log line and `/api/rng/health`).

pub mod core;
pub mod cuse;
pub mod fuse;
pub mod probe;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{DeviceConfig, DeviceMode};

pub use self::core::DeviceCore;

/// Which device face is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Face {
    /// A CUSE character device, `/dev/<name>`.
    Cuse,
    /// A file on a FUSE mount.
    Fuse,
    /// None: entropy is served over HTTP only.
    #[default]
    Off,
}

impl Face {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cuse => "cuse",
            Self::Fuse => "fuse",
            Self::Off => "off",
        }
    }
}

impl std::fmt::Display for Face {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the device face is doing, for `/api/rng/health`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceStatus {
    pub mode: Face,
    /// The node or file readers open.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// Why this mode (what `auto` found, or the error that left the device off).
    pub reason: String,
}

/// A running device face.
#[derive(Debug)]
pub enum DeviceHandle {
    Cuse(cuse::CuseDevice),
    Fuse(fuse::FuseDevice),
}

impl DeviceHandle {
    pub fn stop(self) {
        match self {
            Self::Cuse(c) => c.stop(),
            Self::Fuse(f) => f.stop(),
        }
    }
}

impl DeviceStatus {
    /// Before [`start`] ran.
    pub fn not_started() -> Self {
        Self {
            mode: Face::Off,
            path: None,
            reason: "not started".into(),
        }
    }
}

/// Starts the device face `cfg` asks for over `core`, and publishes which one is up (and why) on
/// `status`. An explicit mode that fails is an error; `auto` falls through CUSE → FUSE → off and
/// reports why. Must run inside a tokio runtime.
pub fn start(
    core: Arc<DeviceCore>,
    cfg: &DeviceConfig,
    status: &tokio::sync::watch::Sender<DeviceStatus>,
) -> anyhow::Result<Option<DeviceHandle>> {
    let (s, handle) = choose(core, cfg)?;
    if s.mode == Face::Off {
        tracing::warn!(reason = %s.reason, "no device face; entropy is served over HTTP only")
    } else {
        tracing::info!(mode = s.mode.as_str(), path = ?s.path, reason = %s.reason, "device face up")
    }
    status.send_replace(s);
    Ok(handle)
}

/// Applies `device.mode`: the face started and what to say of it.
fn choose(
    core: Arc<DeviceCore>,
    cfg: &DeviceConfig,
) -> anyhow::Result<(DeviceStatus, Option<DeviceHandle>)> {
    let cuse_path = PathBuf::from("/dev").join(&cfg.name);
    let start_cuse = |core: Arc<DeviceCore>| {
        cuse::CuseDevice::start(core, &cfg.name).map(|c| {
            (
                DeviceStatus {
                    mode: Face::Cuse,
                    path: Some(cuse_path.clone()),
                    reason: "CUSE character device".into(),
                },
                Some(DeviceHandle::Cuse(c)),
            )
        })
    };
    let start_fuse = |core: Arc<DeviceCore>, mp: &PathBuf, reason: String| {
        fuse::FuseDevice::start(core, mp, &cfg.name).map(|f| {
            (
                DeviceStatus {
                    mode: Face::Fuse,
                    path: Some(f.path.clone()),
                    reason,
                },
                Some(DeviceHandle::Fuse(f)),
            )
        })
    };
    let off = |reason: String| DeviceStatus {
        mode: Face::Off,
        path: None,
        reason,
    };
    let (status, handle) = match cfg.mode {
        DeviceMode::Off => (off("device.mode = \"off\"".into()), None),
        DeviceMode::Cuse => start_cuse(core)?,
        DeviceMode::Fuse => {
            let mp = cfg
                .mountpoint
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("device.mode = \"fuse\" needs device.mountpoint"))?;
            start_fuse(core, mp, "device.mode = \"fuse\"".into())?
        }
        DeviceMode::Auto => match start_cuse(core.clone()) {
            Ok(r) => r,
            Err(e) => {
                let why = format!("{e:#}");
                match &cfg.mountpoint {
                    Some(mp) => match start_fuse(core, mp, format!("auto: no CUSE ({why})")) {
                        Ok(r) => r,
                        Err(f) => (
                            off(format!("auto: no CUSE ({why}); FUSE failed ({f:#})")),
                            None,
                        ),
                    },
                    None => (
                        off(format!("auto: no CUSE ({why}) and no device.mountpoint")),
                        None,
                    ),
                }
            }
        },
    };
    Ok((status, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Daemon;
    use crate::demo::testing::local_daemon;

    async fn health_json(d: &Arc<Daemon>) -> serde_json::Value {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .uri("/api/rng/health")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))))
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = crate::http::router(d.handles())
            .oneshot(req)
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("JSON")
    }

    #[test]
    fn device_and_kernel_config_are_validated() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_hub, base) = crate::demo::configs(dir.path(), None).expect("configs");
        let key = |c: &crate::config::DaemonConfig| match c.validate() {
            Err(crate::config::ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        };
        let mut c = base.clone();
        c.device.mode = DeviceMode::Fuse;
        assert_eq!(key(&c), "device.mountpoint");
        let mut c = base.clone();
        c.device.name = "../evil".into();
        assert_eq!(key(&c), "device.name");
        let mut c = base.clone();
        c.kernel.credit_bits_per_byte = 9;
        assert_eq!(key(&c), "kernel.credit_bits_per_byte");
        let mut c = base.clone();
        c.kernel.budget_bytes_per_minute = 1;
        assert_eq!(key(&c), "kernel.budget_bytes_per_minute");
        // The TOML spelling, with the defaults filled in.
        let t: crate::config::DeviceConfig =
            toml::from_str("mode = \"auto\"\nmountpoint = \"/run/kirq\"").expect("toml");
        assert_eq!((t.mode, t.name.as_str()), (DeviceMode::Auto, "kirq-rng"));
        assert!(toml::from_str::<crate::config::DeviceConfig>("mode = \"cusee\"").is_err());
        let k: crate::config::KernelFeedConfig = toml::from_str("enabled = true").expect("toml");
        assert_eq!((k.interval_secs, k.credit_local), (60, false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_falls_back_and_says_why() {
        let (_dir, d) = local_daemon();
        let mut cfg = DeviceConfig::default();
        let start = |cfg: &DeviceConfig| {
            let h = start(d.device_core(0), cfg, &d.device_status)?;
            anyhow::Ok((d.device_status.borrow().clone(), h))
        };
        if std::path::Path::new(cuse::dev::CUSE_PATH).exists() {
            return assert_eq!(start(&cfg).map(|s| s.0.mode).ok(), Some(Face::Cuse));
        }
        // This host has no CUSE: without a mountpoint, HTTP only, with the reason.
        let (s, h) = start(&cfg).expect("auto never fails");
        assert!(h.is_none());
        assert_eq!(s.mode, Face::Off);
        assert!(
            s.reason.contains("no CUSE") && s.reason.contains("mountpoint"),
            "{}",
            s.reason
        );
        // With a mountpoint: the FUSE fallback (needs root and /dev/fuse, as the suite does).
        let mnt = tempfile::tempdir().expect("mountpoint");
        cfg.mountpoint = Some(mnt.path().to_owned());
        let (s, h) = start(&cfg).expect("auto never fails");
        assert_eq!(s.mode, Face::Fuse, "{}", s.reason);
        assert_eq!(s.path, Some(mnt.path().join("kirq-rng")));
        assert!(s.path.as_ref().is_some_and(|p| p.exists()));
        // /api/rng/health says which face is up.
        let health = health_json(&d).await;
        assert_eq!(health["device"]["mode"], "fuse");
        assert_eq!(health["kernel_feeder"]["state"], "off");
        h.expect("handle").stop();
        // An explicit mode that cannot work is an error, not a silent fallback.
        cfg.mode = DeviceMode::Cuse;
        let e = start(&cfg).expect_err("cuse mode without /dev/cuse fails");
        assert!(format!("{e:#}").contains("/dev/cuse"), "{e:#}");
    }
}
