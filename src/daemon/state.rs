//! The daemon's parts, built from its config and wired together: the pool, the supply (intake,
//! hubs, fallback), the metrics, the quantum service keys and the status channels the device and
//! kernel faces publish on. Each face gets the handles it uses, never the whole daemon.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::DaemonConfig;
use crate::crypto::sig::HubVerifyingKey;
use crate::device::{DeviceCore, DeviceStatus};
use crate::kernel::{FeederStatus, KernelFeed};
use crate::metrics::DaemonMetrics;
use crate::pool::{Consumer, Pool};
use crate::secret::Hardening;
use crate::supply::{ReceiveError, Supply};
use crate::util::now_ms;
use crate::verify::journal::JournalError;
use crate::verify::{Policy, Verifier};
use crate::wire::refill::FrameError;

/// The daemon: its parts, shared by its tasks and faces.
pub struct Daemon {
    pub cfg: DaemonConfig,
    pub pool: Arc<Pool>,
    pub supply: Supply,
    pub metrics: Arc<DaemonMetrics>,
    /// The `/quantum/*` service keys (see [`crate::quantum`]).
    pub keys: Arc<crate::quantum::Keys>,
    /// What the device face is doing (published by [`crate::device::start`]).
    pub device_status: watch::Sender<DeviceStatus>,
    /// What the kernel feeder is doing (published by [`crate::kernel::run`]).
    pub kernel_status: watch::Sender<FeederStatus>,
    pub hardening: Hardening,
    pub started: Instant,
    /// HTTP requests allowed to wait for a refill at once (`http.max_wait_ms`).
    waiters: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("id", &self.cfg.id)
            .finish_non_exhaustive()
    }
}

fn policy(cfg: &DaemonConfig) -> Policy {
    Policy {
        recipient: cfg.id.clone(),
        max_skew_ms: cfg.trust.max_clock_skew_ms,
        require_proof: cfg.trust.require_proof,
        min_node_quorum: cfg.trust.min_node_quorum,
        replay_capacity: cfg.trust.replay_cache_entries,
        alpha_exp: cfg.health.alpha_exponent,
    }
}

impl Daemon {
    /// The daemon as `kirqd run` makes it: with the replay journal of
    /// `trust.replay_state_file`, or without one, the replay floor (packets issued before this
    /// start plus the allowed clock skew are refused).
    pub fn open(
        cfg: DaemonConfig,
        keys: Vec<HubVerifyingKey>,
        hardening: Hardening,
    ) -> Result<Self, JournalError> {
        let verifier = Verifier::new(policy(&cfg), keys);
        let now = now_ms();
        let verifier = match &cfg.trust.replay_state_file {
            Some(path) => {
                let v = verifier.with_replay_journal(path, now)?;
                tracing::info!(
                    file = %path.display(),
                    live_nonces = v.replay_cache_len(),
                    "replay journal loaded: packets admitted before a restart stay refused"
                );
                v
            }
            None => {
                let floor = now + cfg.trust.max_clock_skew_ms;
                tracing::warn!(
                    floor_ms = floor,
                    "no trust.replay_state_file: refusing packets issued before this start plus \
                     trust.max_clock_skew_ms, so none admitted before a restart is admitted again"
                );
                verifier.with_replay_floor(floor)
            }
        };
        Ok(Self::with_verifier(cfg, verifier, hardening))
    }

    /// The daemon with an in-memory replay cache only (in-process tests and benches).
    pub fn new(cfg: DaemonConfig, keys: Vec<HubVerifyingKey>, hardening: Hardening) -> Self {
        let verifier = Verifier::new(policy(&cfg), keys);
        Self::with_verifier(cfg, verifier, hardening)
    }

    fn with_verifier(cfg: DaemonConfig, verifier: Verifier, hardening: Hardening) -> Self {
        let metrics = Arc::new(DaemonMetrics::new());
        // Each trusted node's round and gap counters exist from the start, at zero.
        for n in &cfg.trust.nodes {
            let node = [("node", n.id.clone())];
            let _ = metrics.node_rounds.get_or_create(&node);
            let _ = metrics.node_round_gaps.get_or_create(&node);
        }
        let pool = Arc::new(
            Pool::new(cfg.pool.capacity_bytes, cfg.pool.low_watermark_bytes)
                .with_high_watermark(cfg.pool.high_watermark()),
        );
        let supply = Supply::new(&cfg, verifier, pool.clone(), metrics.clone());
        Self {
            pool,
            supply,
            metrics,
            keys: Arc::default(),
            device_status: watch::Sender::new(DeviceStatus::not_started()),
            kernel_status: watch::Sender::new(FeederStatus::default()),
            hardening,
            started: Instant::now(),
            waiters: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_HTTP_WAITERS)),
            cfg,
        }
    }

    /// Verifies one encoded packet and admits its entropy (see [`crate::supply::Intake`]).
    pub fn receive(&self, bytes: &[u8]) -> Result<([u8; 16], usize), ReceiveError> {
        self.supply.intake.receive(bytes)
    }

    /// Verifies and admits a run of frames with one sync of the replay journal.
    pub fn receive_frames(&self, bytes: &[u8]) -> Result<(usize, usize), FrameError> {
        self.supply.intake.receive_frames(bytes)
    }

    /// Consumes, verifies and admits a seed spool (needs the replay journal).
    pub fn admit_spool(&self, path: &std::path::Path) -> anyhow::Result<Option<(usize, usize)>> {
        let journaled = self.cfg.trust.replay_state_file.is_some();
        self.supply.intake.admit_spool(path, journaled)
    }

    /// What the HTTP faces serve.
    pub fn handles(&self) -> crate::http::Handles {
        crate::http::Handles {
            id: self.cfg.id.clone(),
            http: self.cfg.http.clone(),
            max_body_bytes: self.cfg.receive.max_body_bytes,
            max_message_bytes: self
                .cfg
                .quantum
                .as_ref()
                .map_or(crate::config::DEFAULT_MAX_MESSAGE_BYTES, |q| {
                    q.max_message_bytes
                }),
            low_watermark_bytes: self.cfg.pool.low_watermark_bytes,
            pool: self.pool.clone(),
            supply: self.supply.clone(),
            keys: self.keys.clone(),
            metrics: self.metrics.clone(),
            device: self.device_status.subscribe(),
            kernel: self.kernel_status.subscribe(),
            hardening: self.hardening,
            started: self.started,
            waiters: self.waiters.clone(),
        }
    }

    /// Loads (or makes) the `/quantum` service keys; the task that makes the VRF key from pool
    /// entropy when there is none yet (see [`crate::quantum::start`]).
    pub fn start_quantum(&self) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        crate::quantum::start(
            self.cfg.quantum.as_ref(),
            &self.keys,
            &self.pool,
            self.metrics.consumer(Consumer::Keys),
        )
    }

    /// A device core over the pool, counted under consumer `device`.
    pub fn device_core(&self, rate_bytes_per_second: u64) -> Arc<DeviceCore> {
        DeviceCore::new(
            self.pool.clone(),
            self.metrics.consumer(Consumer::Device),
            rate_bytes_per_second,
        )
    }

    /// What the kernel feeder task needs.
    pub fn kernel_feed(&self) -> KernelFeed {
        KernelFeed {
            cfg: self.cfg.kernel.clone(),
            pool: self.pool.clone(),
            metrics: self.metrics.consumer(Consumer::Kernel),
            status: self.kernel_status.clone(),
        }
    }
}
