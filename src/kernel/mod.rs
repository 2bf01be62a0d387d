//! Feeding the kernel's own random pool from verified entropy (/dev/random ioctls).
//!
//! On the 5.18+ random driver, credit only counts until the CRNG is first ready, so the feeder
//! credits with RNDADDENTROPY until then (never more bits than [`credit_bits`] allows), and
//! afterwards, every `kernel.interval_secs`, mixes fresh bytes without credit and forces a reseed
//! with RNDRESEEDCRNG. On older kernels it waits for the write wakeup threshold (POLLOUT on
//! /dev/random) as rngd does. A per-minute byte budget keeps the kernel from starving the other
//! consumers; bytes given to the kernel are counted under consumer `kernel`. systemd is told
//! READY=1 after the first seeding.
//!
//! Bytes taken from the single-use pool cannot be put back, so the feeder takes none it cannot
//! feed: it checks CAP_SYS_ADMIN at start (without it the feeder is `failed`, says what to grant,
//! and takes nothing), asks the kernel with an empty RNDADDENTROPY before each take (an LSM can
//! refuse what the capability set allows), and backs off on every error.

pub mod ioctl;

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::KernelFeedConfig;
use crate::metrics::ConsumerMetrics;
use crate::pool::{Pool, TakeCounts, Want};
use crate::wire::Provenance;

pub const RANDOM_PATH: &str = "/dev/random";

/// The feeder's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeederState {
    /// `kernel.enabled = false`, or not started yet.
    #[default]
    Off,
    /// 5.18+ driver, CRNG not ready yet: crediting entropy.
    Crediting,
    /// 5.18+ driver, CRNG ready: mixing and reseeding every interval.
    Running,
    /// Pre-5.18 driver: crediting whenever the kernel asks, as rngd does.
    Legacy,
    /// Cannot feed in this process (e.g. no CAP_SYS_ADMIN); takes no bytes.
    Failed,
}

/// What the feeder is doing, for `/api/rng/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FeederStatus {
    pub state: FeederState,
    pub bytes_fed_total: u64,
    pub bits_credited_total: u64,
    pub reseeds_total: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot open {RANDOM_PATH} for writing")]
    Open(#[source] io::Error),
    #[error(
        "{op} on {RANDOM_PATH} was refused: feeding the kernel needs CAP_SYS_ADMIN \
         (run kirqd as root or grant it the capability)"
    )]
    NotPermitted { op: &'static str },
    #[error(
        "kirqd lacks CAP_SYS_ADMIN: feeding the kernel needs CAP_SYS_ADMIN (grant it, as \
         kirqd.service does with CapabilityBoundingSet=CAP_SYS_ADMIN, or set kernel.enabled = \
         false); the feeder is off and takes no bytes"
    )]
    MissingCapability,
    #[error("{op} on {RANDOM_PATH} failed")]
    Ioctl {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn ioctl_err(op: &'static str, e: io::Error) -> FeedError {
    if e.raw_os_error() == Some(nix::libc::EPERM) {
        FeedError::NotPermitted { op }
    } else {
        FeedError::Ioctl { op, source: e }
    }
}

/// Bits to credit for these bytes: `bits_per_byte` for hub-verified classes; hub-delivered
/// `local` bytes only when `credit_local` (hub on another machine); and never the daemon's own
/// fallback bytes, marked chunk by chunk (fills and the restored fallback segment alike): they are
/// this kernel's own output, which must not be credited back to it.
pub fn credit_bits(taken: &TakeCounts, bits_per_byte: u32, credit_local: bool) -> u32 {
    let bits_per_byte = bits_per_byte.min(8) as usize;
    let by = &taken.by_provenance;
    let mut bytes: usize = Provenance::ALL
        .iter()
        .filter(|p| **p != Provenance::Local)
        .map(|p| by[*p as usize])
        .sum();
    if credit_local {
        // Fallback bytes are all of class local.
        bytes += by[Provenance::Local as usize].saturating_sub(taken.fallback);
    }
    u32::try_from(bytes * bits_per_byte).unwrap_or(u32::MAX)
}

/// `CAP_SYS_ADMIN`'s bit in the capability sets.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has CAP_SYS_ADMIN in its effective set (`CapEff` in
/// /proc/self/status); `None` when that cannot be read.
pub fn has_cap_sys_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    cap_eff_has(&status, CAP_SYS_ADMIN)
}

fn cap_eff_has(status: &str, bit: u32) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(caps & (1 << bit) != 0)
}

/// A per-minute byte allowance.
#[derive(Debug)]
pub struct Budget {
    per_minute: usize,
    used: usize,
    window: Instant,
}

impl Budget {
    pub fn new(per_minute: usize) -> Self {
        Self {
            per_minute,
            used: 0,
            window: Instant::now(),
        }
    }

    /// How many of `want` bytes may go now (0 when the minute's budget is spent).
    pub fn allow(&mut self, want: usize, now: Instant) -> usize {
        if now.duration_since(self.window) >= Duration::from_secs(60) {
            self.window = now;
            self.used = 0;
        }
        want.min(self.per_minute - self.used)
    }

    pub fn spend(&mut self, n: usize) {
        self.used = (self.used + n).min(self.per_minute);
    }
}

/// True when the running kernel has the 5.18+ random driver.
pub fn modern_driver() -> bool {
    let Ok(u) = nix::sys::utsname::uname() else {
        return true;
    };
    let release = u.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    (major, minor) >= (5, 18)
}

/// One round's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    pub bytes: usize,
    pub bits: u32,
    pub entropy_before: i32,
    pub entropy_after: i32,
}

/// An open /dev/random.
#[derive(Debug)]
pub struct Feeder {
    file: File,
}

impl Feeder {
    pub fn open() -> Result<Self, FeedError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(RANDOM_PATH)
            .map_err(FeedError::Open)?;
        Ok(Self { file })
    }

    pub fn entropy_count(&self) -> Result<i32, FeedError> {
        ioctl::entropy_count(&self.file).map_err(|e| ioctl_err("RNDGETENTCNT", e))
    }

    /// Mixes `bytes` in and credits `bits` (RNDADDENTROPY).
    pub fn add(&self, bytes: &[u8], bits: u32) -> Result<(), FeedError> {
        ioctl::add_entropy(&self.file, bytes, bits).map_err(|e| ioctl_err("RNDADDENTROPY", e))
    }

    pub fn reseed(&self) -> Result<(), FeedError> {
        ioctl::reseed_crng(&self.file).map_err(|e| ioctl_err("RNDRESEEDCRNG", e))
    }

    /// Takes up to `n` bytes from the pool (counted under `kernel`) and adds them, crediting per
    /// [`credit_bits`] when `credit` is set. `Ok(None)`: the pool is empty. An empty
    /// RNDADDENTROPY goes first, so a refusal costs no pool bytes.
    pub fn feed_from_pool(
        &self,
        feed: &KernelFeed,
        n: usize,
        credit: bool,
    ) -> Result<Option<Fed>, FeedError> {
        self.add(&[], 0)?;
        let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
        let Ok(by) = feed.pool.take_into(&mut buf, Want::Any, false) else {
            return Ok(None);
        };
        let got = by.total();
        feed.metrics.served(got);
        feed.metrics.ok();
        let cfg = &feed.cfg;
        let bits = if credit {
            credit_bits(&by, cfg.credit_bits_per_byte, cfg.credit_local)
        } else {
            0
        };
        let entropy_before = self.entropy_count().unwrap_or(-1);
        self.add(&buf[..got], bits)?;
        let entropy_after = self.entropy_count().unwrap_or(-1);
        Ok(Some(Fed {
            bytes: got,
            bits,
            entropy_before,
            entropy_after,
        }))
    }
}

/// Waits after consecutive failures: 1 s, doubling up to `max`.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        let max = max.max(Duration::from_secs(1));
        Self {
            next: Duration::from_secs(1),
            max,
        }
    }

    fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn succeeded(&mut self) {
        self.next = Duration::from_secs(1);
    }
}

/// What the feeder task is given: the pool to take from, the `consumer="kernel"` counters, and
/// where to publish its status.
#[derive(Debug)]
pub struct KernelFeed {
    pub cfg: KernelFeedConfig,
    pub pool: Arc<Pool>,
    pub metrics: ConsumerMetrics,
    pub status: watch::Sender<FeederStatus>,
}

/// The running feeder's state between rounds.
struct Task {
    feed: KernelFeed,
    feeder: Feeder,
    budget: Budget,
    backoff: Backoff,
    ready_sent: bool,
}

/// How one round ended.
enum Round {
    /// Bytes went in (and, when asked, the CRNG was reseeded after).
    Fed(Fed),
    /// Nothing to do yet (budget spent, or the pool empty and waited on).
    Idle,
    /// A failure was recorded; wait this long.
    Failed(Duration),
    /// The feeder cannot work in this process and has stopped.
    Stopped,
}

/// The feeder task: runs until aborted. Failures are logged, shown in health, and retried after
/// a backoff; a refusal for want of CAP_SYS_ADMIN stops the feeder (state `failed`) for good.
pub async fn run(feed: KernelFeed) {
    if has_cap_sys_admin() == Some(false) {
        stop_failed(&feed.status, &FeedError::MissingCapability);
        return;
    }
    let feeder = match Feeder::open() {
        Ok(f) => f,
        Err(e) => {
            stop_failed(&feed.status, &e);
            return;
        }
    };
    let mut task = Task {
        budget: Budget::new(feed.cfg.budget_bytes_per_minute),
        backoff: Backoff::new(Duration::from_secs(feed.cfg.interval_secs.max(60))),
        feed,
        feeder,
        ready_sent: false,
    };
    if modern_driver() {
        if task.credit_until_ready().await {
            task.mix_and_reseed().await;
        }
    } else {
        task.legacy().await;
    }
}

impl Task {
    fn set_state(&self, state: FeederState) {
        self.feed.status.send_modify(|s| s.state = state);
    }

    /// Tells systemd: READY=1 with the first seeding, the status line after.
    fn seeded(&mut self, status: String) {
        if self.ready_sent {
            crate::service::notify::send(&format!("STATUS={status}"));
        } else {
            crate::service::notify::send(&format!("READY=1\nSTATUS={status}"));
            self.ready_sent = true;
        }
    }

    /// Takes at most the budget's allowance and feeds it, crediting if `credit`, reseeding
    /// after if `reseed`. Records the outcome.
    async fn round(&mut self, credit: bool, reseed: bool) -> Round {
        let n = self.budget.allow(self.feed.cfg.feed_bytes, Instant::now());
        if n == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Round::Idle;
        }
        let f = &self.feed;
        let fed = match self.feeder.feed_from_pool(f, n, credit) {
            Ok(Some(fed)) => fed,
            Ok(None) => {
                tokio::select! {
                    () = f.pool.arrived() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                return Round::Idle;
            }
            Err(e @ FeedError::NotPermitted { .. }) => {
                stop_failed(&f.status, &e);
                return Round::Stopped;
            }
            Err(e) => return self.failed(&e),
        };
        self.budget.spend(fed.bytes);
        if !reseed {
            self.backoff.succeeded();
            record(&self.feed.status, &fed, false);
            return Round::Fed(fed);
        }
        match self.feeder.reseed() {
            Ok(()) => {
                self.backoff.succeeded();
                record(&self.feed.status, &fed, true);
                Round::Fed(fed)
            }
            Err(e) => {
                // The bytes went in (mixed, uncredited); only the reseed failed.
                record(&self.feed.status, &fed, false);
                self.failed(&e)
            }
        }
    }

    fn failed(&mut self, e: &FeedError) -> Round {
        tracing::error!(error = %e, "kernel feeder");
        self.feed
            .status
            .send_modify(|s| s.last_error = Some(e.to_string()));
        Round::Failed(self.backoff.failed())
    }

    /// 5.18+, phase 1: credit until the CRNG is ready. False when the feeder stopped.
    async fn credit_until_ready(&mut self) -> bool {
        self.set_state(FeederState::Crediting);
        while !ioctl::crng_ready() {
            match self.round(true, false).await {
                Round::Fed(f) => log_credited(&f),
                Round::Idle => {}
                Round::Failed(wait) => tokio::time::sleep(wait).await,
                Round::Stopped => return false,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// 5.18+, phase 2: mix and reseed every interval. Every path through the loop waits.
    async fn mix_and_reseed(&mut self) {
        self.set_state(FeederState::Running);
        loop {
            match self.round(false, true).await {
                Round::Fed(f) => {
                    tracing::info!(bytes = f.bytes, "kernel CRNG reseeded (RNDRESEEDCRNG)");
                    self.seeded(format!(
                        "kernel CRNG reseeded from {} verified bytes",
                        f.bytes
                    ));
                    tokio::time::sleep(Duration::from_secs(self.feed.cfg.interval_secs)).await;
                }
                Round::Idle => {}
                Round::Failed(wait) => tokio::time::sleep(wait).await,
                Round::Stopped => return,
            }
        }
    }

    /// Pre-5.18: credit whenever the kernel asks (its write wakeup threshold), as rngd does.
    async fn legacy(&mut self) {
        self.set_state(FeederState::Legacy);
        loop {
            wait_writable(&self.feeder).await;
            match self.round(true, false).await {
                Round::Fed(f) => {
                    log_credited(&f);
                    self.seeded(format!("fed the kernel {} bytes", f.bytes));
                }
                Round::Idle => {}
                Round::Failed(wait) => tokio::time::sleep(wait).await,
                Round::Stopped => return,
            }
        }
    }
}

fn log_credited(f: &Fed) {
    tracing::info!(
        bytes = f.bytes,
        credited_bits = f.bits,
        entropy_avail_before = f.entropy_before,
        entropy_avail_after = f.entropy_after,
        "kernel pool credited"
    );
}

fn record(status: &watch::Sender<FeederStatus>, f: &Fed, reseeded: bool) {
    status.send_modify(|s| {
        s.bytes_fed_total += f.bytes as u64;
        s.bits_credited_total += u64::from(f.bits);
        s.reseeds_total += u64::from(reseeded);
        s.last_error = None;
    });
}

/// The feeder cannot work in this process: state `failed`, said once, no byte taken.
fn stop_failed(status: &watch::Sender<FeederStatus>, e: &FeedError) {
    tracing::error!(error = %e, "kernel feeder disabled");
    status.send_modify(|s| {
        s.state = FeederState::Failed;
        s.last_error = Some(e.to_string());
    });
}

/// Pre-5.18 kernels: resolves when /dev/random is writable (entropy below the write wakeup
/// threshold), checking once a second.
async fn wait_writable(f: &Feeder) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(f.file.as_fd(), PollFlags::POLLOUT)];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_never_more_than_justified() {
        let mut by = TakeCounts::default();
        by.by_provenance[Provenance::Qrng as usize] = 10;
        by.by_provenance[Provenance::Local as usize] = 10;
        assert_eq!(credit_bits(&by, 4, false), 40);
        assert_eq!(credit_bits(&by, 8, true), 160);
        assert_eq!(credit_bits(&by, 99, false), 80);
        // Four of the local bytes were this daemon's own fallback bytes.
        by.fallback = 4;
        assert_eq!(credit_bits(&by, 8, true), 128);
        assert_eq!(credit_bits(&by, 8, false), 80);
        assert_eq!(credit_bits(&TakeCounts::default(), 8, true), 0);
    }

    #[test]
    fn cap_sys_admin_is_read_from_cap_eff() {
        let status = "Name:\tkirqd\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff_has(status, CAP_SYS_ADMIN), Some(true));
        let status = "CapEff:\t00000000001fffff\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(cap_eff_has(status, CAP_SYS_ADMIN), Some(false));
        assert_eq!(cap_eff_has("Name: x\n", CAP_SYS_ADMIN), None);
        assert!(
            has_cap_sys_admin().is_some(),
            "/proc/self/status has CapEff"
        );
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let waits: Vec<_> = (0..5).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_secs(1));
    }

    /// Honest credit: bytes the daemon drew from this kernel itself (fallback fills, and the
    /// fallback segment restored from the sealed pool after a restart) are never credited back to
    /// it, whatever the fallback flag says now; hub-delivered bytes are.
    #[test]
    fn restored_fallback_segments_and_fallback_fills_are_never_credited() {
        use crate::demo::testing::{fill, local_daemon};
        use crate::pool::persist::{PoolKey, SealedFile};
        use crate::secret::SecretBytes;

        let (dir, d) = local_daemon();
        assert_eq!(fill(&d, 100), 100);
        let mut segments = d.pool.drain_for_seal();
        assert_eq!(segments[crate::pool::persist::SEGMENTS - 1].len(), 100);
        // Bytes a hub delivered: 50 of class local (a hub on another machine), 10 qrng.
        segments[Provenance::Local as usize] = SecretBytes::new(vec![1; 50]);
        segments[Provenance::Qrng as usize] = SecretBytes::new(vec![2; 10]);
        let file = SealedFile::new(dir.path().join("pool.sealed"));
        let key = PoolKey::from_bytes([7; 32]);
        file.save(&key, &segments).expect("seal");
        let unsealed = file.take(&key).expect("unseal").expect("a sealed pool");
        assert_eq!(d.pool.restore(unsealed), 160);
        assert_eq!(fill(&d, 40), 40);
        // The fallback has ended (or never began in this run) but its bytes are still here.
        assert!(!d.supply.fallback.active());
        let mut buf = vec![0u8; 200];
        let by = d
            .pool
            .take_into(&mut buf, Want::Any, true)
            .expect("200 bytes");
        assert_eq!(
            credit_bits(&by, 8, true),
            (50 + 10) * 8,
            "only the hub's 60 bytes may be credited"
        );
    }

    #[test]
    fn budget_per_minute() {
        let t = Instant::now();
        let mut b = Budget::new(100);
        assert_eq!(b.allow(64, t), 64);
        b.spend(64);
        assert_eq!(b.allow(64, t), 36);
        b.spend(36);
        assert_eq!(b.allow(64, t), 0);
        assert_eq!(b.allow(64, t + Duration::from_secs(61)), 64);
    }

    #[test]
    fn this_kernel_is_modern() {
        // The project's hosts and VM kernels are 6.x.
        assert!(modern_driver());
    }
}
