//! Device semantics shared by CUSE and the FUSE fallback: one [`DeviceCore`], two front ends.
//!
//! A read returns 1..=count bytes taken from the single-use pool, blocks while the pool is empty
//! (or answers `EAGAIN` for a non-blocking file), and an interrupted blocked read returns `EINTR`
//! having taken nothing: bytes leave the pool only in the same step that hands them to a reply.
//!
//! Fairness: blocked readers wait in one FIFO queue (a fair `tokio::sync::Mutex`), so when entropy
//! is scarce each arrival goes to the reader that has waited longest and a reader that just got
//! bytes queues behind the others. Each open file also has an optional token bucket
//! (`device.rate_limit_bytes_per_second`). Poll wakeups are one-shot callbacks run on the next
//! admission (the front end turns them into `FUSE_NOTIFY_POLL`). They are kept by the kernel's
//! poll handle (one per open file), so polling again replaces a wakeup rather than adding one,
//! and at most [`MAX_POLLERS`] are kept: a new handle beyond that wakes the oldest at once (a
//! spurious wakeup only makes its poller ask again), so no reader can grow the daemon's memory
//! and no poller is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::metrics::ConsumerMetrics;
use crate::pool::{Pool, Want};
use crate::util::lock;

/// Largest read served in one request (the kernel splits larger reads).
pub const MAX_READ: usize = 128 * 1024;
/// `RNDGETENTCNT`: `_IOR('R', 0x00, int)`.
pub const RNDGETENTCNT: u32 = 0x8004_5200;
/// `TCGETS` (isatty): a random device is not a terminal.
pub const TCGETS: u32 = 0x5401;

/// Most poll wakeups kept at once (each holds the front end's descriptor).
pub const MAX_POLLERS: usize = 1024;

/// Why a device operation failed; each maps to one errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DevError {
    #[error("no entropy available right now and the file is non-blocking")]
    WouldBlock,
    #[error("interrupted before any entropy was taken")]
    Interrupted,
    #[error("unknown file handle")]
    BadHandle,
    #[error("inappropriate ioctl for this device")]
    NotTty,
    #[error("ioctl buffer too small")]
    Invalid,
    #[error("the device is read-only")]
    ReadOnly,
    #[error("operation not implemented")]
    NoSys,
}

impl DevError {
    /// The positive errno for this error.
    pub fn errno(self) -> i32 {
        use nix::errno::Errno;
        (match self {
            Self::WouldBlock => Errno::EAGAIN,
            Self::Interrupted => Errno::EINTR,
            Self::BadHandle => Errno::EBADF,
            Self::NotTty => Errno::ENOTTY,
            Self::Invalid => Errno::EINVAL,
            Self::ReadOnly => Errno::EPERM,
            Self::NoSys => Errno::ENOSYS,
        }) as i32
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

type Waker = Box<dyn FnOnce() + Send>;

/// Registered poll wakeups, by the kernel's poll handle, oldest first in `order`.
#[derive(Default)]
struct Pollers {
    /// Poll handle → (registration number, open file, wakeup).
    by_handle: HashMap<u64, (u64, u64, Waker)>,
    /// Registration number → poll handle.
    order: BTreeMap<u64, u64>,
    next: u64,
}

impl Pollers {
    /// Registers `wake` for handle `kh` of file `fh`, replacing that handle's earlier wakeup.
    /// Returns the wakeup that had to make room (to be run), if any.
    fn register(&mut self, fh: u64, kh: u64, wake: Waker) -> Option<Waker> {
        let seq = self.next;
        self.next += 1;
        if let Some((old, _, _)) = self.by_handle.insert(kh, (seq, fh, wake)) {
            self.order.remove(&old);
        }
        self.order.insert(seq, kh);
        if self.by_handle.len() <= MAX_POLLERS {
            return None;
        }
        let (_, oldest) = self.order.pop_first()?;
        self.by_handle.remove(&oldest).map(|(_, _, w)| w)
    }

    /// Drops the wakeups of a released file (nobody polls it any more).
    fn forget_file(&mut self, fh: u64) {
        let order = &mut self.order;
        self.by_handle.retain(|_, (seq, f, _)| {
            let keep = *f != fh;
            if !keep {
                order.remove(seq);
            }
            keep
        });
    }

    fn take_all(&mut self) -> Vec<Waker> {
        self.order.clear();
        self.by_handle.drain().map(|(_, (_, _, w))| w).collect()
    }
}

/// The device's shared state. `Debug` shows counts only.
pub struct DeviceCore {
    pool: Arc<Pool>,
    /// The `consumer="device"` counters.
    metrics: ConsumerMetrics,
    rate: u64,
    files: Mutex<HashMap<u64, Bucket>>,
    next_fh: AtomicU64,
    waiting: AtomicUsize,
    queue: tokio::sync::Mutex<()>,
    pollers: Mutex<Pollers>,
}

impl std::fmt::Debug for DeviceCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCore")
            .field("open_files", &lock(&self.files).len())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .field("pollers", &self.pollers())
            .finish_non_exhaustive()
    }
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DeviceCore {
    /// `rate` is the per-open-file limit in bytes per second (0 = none).
    pub fn new(pool: Arc<Pool>, metrics: ConsumerMetrics, rate: u64) -> Arc<Self> {
        Arc::new(Self {
            pool,
            metrics,
            rate,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            waiting: AtomicUsize::new(0),
            queue: tokio::sync::Mutex::new(()),
            pollers: Mutex::new(Pollers::default()),
        })
    }

    /// A new open file; its handle identifies it in reads and release.
    pub fn open(&self) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(
            fh,
            Bucket {
                tokens: self.rate as f64,
                last: Instant::now(),
            },
        );
        fh
    }

    pub fn release(&self, fh: u64) {
        lock(&self.files).remove(&fh);
        lock(&self.pollers).forget_file(fh);
    }

    /// True while blocked readers are queued (a new blocking read queues behind them).
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    pub fn open_files(&self) -> usize {
        lock(&self.files).len()
    }

    /// Bytes `fh` may read now, or how long until it may read one.
    fn allowance(&self, fh: u64) -> Result<Result<usize, Duration>, DevError> {
        let mut files = lock(&self.files);
        let b = files.get_mut(&fh).ok_or(DevError::BadHandle)?;
        if self.rate == 0 {
            return Ok(Ok(usize::MAX));
        }
        let now = Instant::now();
        let rate = self.rate as f64;
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            Ok(Ok(b.tokens as usize))
        } else {
            Ok(Err(Duration::from_secs_f64((1.0 - b.tokens) / rate)))
        }
    }

    fn spend(&self, fh: u64, n: usize) {
        if self.rate > 0
            && let Some(b) = lock(&self.files).get_mut(&fh)
        {
            b.tokens -= n as f64;
        }
    }

    /// One attempt: takes 1..=size bytes for `fh` or returns `WouldBlock` (pool empty or the
    /// file's rate limit reached), with the wait the rate limit asks for.
    /// One attempt into `dst`: takes 1..=dst.len() bytes for `fh` or returns `WouldBlock` (pool
    /// empty or the file's rate limit reached), with the wait the rate limit asks for.
    fn attempt_into(&self, fh: u64, dst: &mut [u8]) -> Result<usize, (DevError, Duration)> {
        let allow = match self.allowance(fh).map_err(|e| (e, Duration::ZERO))? {
            Ok(n) => n,
            Err(wait) => return Err((DevError::WouldBlock, wait)),
        };
        let n = dst.len().min(allow).min(MAX_READ);
        match self.pool.take_into(&mut dst[..n], Want::Any, false) {
            Ok(by) => {
                let got = by.total();
                self.spend(fh, got);
                self.metrics.served(got);
                self.metrics.ok();
                Ok(got)
            }
            Err(_) => Err((DevError::WouldBlock, Duration::ZERO)),
        }
    }

    fn attempt(&self, fh: u64, size: usize) -> Result<Zeroizing<Vec<u8>>, (DevError, Duration)> {
        let mut buf = Zeroizing::new(vec![0u8; size.min(MAX_READ)]);
        let got = self.attempt_into(fh, &mut buf)?;
        buf.truncate(got);
        Ok(buf)
    }

    /// A read that never waits: bytes, or `WouldBlock`. Used for the first try of every read (in
    /// the front end's own thread) and for non-blocking files.
    pub fn try_read(&self, fh: u64, size: usize) -> Result<Zeroizing<Vec<u8>>, DevError> {
        if size == 0 {
            return Ok(Zeroizing::new(Vec::new()));
        }
        self.attempt(fh, size).map_err(|(e, _)| e)
    }

    /// [`DeviceCore::try_read`] straight into a caller's buffer (a reply being built), so the
    /// bytes are copied once. Returns how many bytes were written to the front of `dst`.
    pub fn try_read_into(&self, fh: u64, dst: &mut [u8]) -> Result<usize, DevError> {
        if dst.is_empty() {
            return Ok(0);
        }
        self.attempt_into(fh, dst).map_err(|(e, _)| e)
    }

    /// Counts a read answered with an error.
    pub fn count_failure(&self, e: DevError) {
        let outcome = match e {
            DevError::WouldBlock => "insufficient",
            DevError::Interrupted => "interrupted",
            _ => "bad_request",
        };
        self.metrics.request(outcome);
    }

    /// A full read: `size` 0 returns nothing; otherwise at least one byte, waiting (fairly, in
    /// arrival order) while the pool is empty, unless `nonblock`. `cancel` resolving (a
    /// `FUSE_INTERRUPT`) ends the wait with `Interrupted` and nothing taken.
    pub async fn read(
        &self,
        fh: u64,
        size: usize,
        nonblock: bool,
        cancel: impl Future<Output = ()>,
    ) -> Result<Zeroizing<Vec<u8>>, DevError> {
        let r = self.read_inner(fh, size, nonblock, cancel).await;
        if let Err(e) = r {
            self.count_failure(e);
        }
        r
    }

    async fn read_inner(
        &self,
        fh: u64,
        size: usize,
        nonblock: bool,
        cancel: impl Future<Output = ()>,
    ) -> Result<Zeroizing<Vec<u8>>, DevError> {
        if size == 0 {
            return Ok(Zeroizing::new(Vec::new()));
        }
        // Nobody is queued: try at once. Otherwise a blocking reader joins the queue's tail.
        if nonblock || self.waiting.load(Ordering::SeqCst) == 0 {
            match self.attempt(fh, size) {
                Ok(b) => return Ok(b),
                Err((DevError::WouldBlock, _)) if nonblock => return Err(DevError::WouldBlock),
                Err((DevError::WouldBlock, _)) => {}
                Err((e, _)) => return Err(e),
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _w = WaitGuard(&self.waiting);
        tokio::pin!(cancel);
        let _turn = tokio::select! {
            t = self.queue.lock() => t,
            () = &mut cancel => return Err(DevError::Interrupted),
        };
        loop {
            let arrival = self.pool.arrival();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let wait = match self.attempt(fh, size) {
                Ok(b) => return Ok(b),
                Err((DevError::WouldBlock, wait)) => wait,
                Err((e, _)) => return Err(e),
            };
            if wait > Duration::ZERO {
                // Rate limited: the pool may be full, so only the clock can help.
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut cancel => return Err(DevError::Interrupted),
                }
            } else {
                // The second arm is a safety net only; admissions wake us through `arrival`.
                tokio::select! {
                    () = &mut arrival => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = &mut cancel => return Err(DevError::Interrupted),
                }
            }
        }
    }

    /// True when a read would return bytes now.
    pub fn readable(&self) -> bool {
        !self.pool.is_empty()
    }

    /// Poll on file `fh` with the kernel's poll handle `kh`: registers `wake` for the next
    /// admission (when asked to), replacing the handle's earlier wakeup, then reports readiness.
    /// Registering first means an admission between the two steps still wakes the poller.
    pub fn poll(&self, fh: u64, kh: u64, wake: Option<Waker>) -> bool {
        if let Some(w) = wake {
            let evicted = lock(&self.pollers).register(fh, kh, w);
            // Outside the lock: the oldest poller is told now and will simply poll again.
            if let Some(w) = evicted {
                w();
            }
        }
        self.readable()
    }

    /// Poll wakeups registered now (at most [`MAX_POLLERS`]).
    pub fn pollers(&self) -> usize {
        lock(&self.pollers).by_handle.len()
    }

    /// Drops every registered poll wakeup (a front end is stopping; the wakeups hold its fd).
    pub fn clear_pollers(&self) {
        drop(lock(&self.pollers).take_all());
    }

    /// Runs the registered poll wakeups after each admission. Runs until aborted.
    pub async fn poll_notifier(self: Arc<Self>) {
        loop {
            let arrival = self.pool.arrival();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if self.readable() {
                let wakers = lock(&self.pollers).take_all();
                for w in wakers {
                    w();
                }
            }
            tokio::select! {
                () = &mut arrival => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// ioctl: `RNDGETENTCNT` answers the pool's size in bits (an `int`); `TCGETS` and everything
    /// else get `ENOTTY`.
    pub fn ioctl(&self, cmd: u32, out_size: usize) -> Result<Vec<u8>, DevError> {
        match cmd {
            RNDGETENTCNT => {
                if out_size < 4 {
                    return Err(DevError::Invalid);
                }
                let bits = self.pool.len().saturating_mul(8);
                let bits = i32::try_from(bits).unwrap_or(i32::MAX);
                Ok(bits.to_ne_bytes().to_vec())
            }
            _ => Err(DevError::NotTty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::testing::{fill, local_daemon};

    #[tokio::test]
    async fn read_takes_at_most_what_is_there() {
        let (_dir, d) = local_daemon();
        let core = d.device_core(0);
        let fh = core.open();
        fill(&d, 100);
        let b = core.read(fh, 4096, false, std::future::pending()).await;
        assert_eq!(b.map(|b| b.len()), Ok(100));
        assert_eq!(
            core.try_read(fh, 10).map(|b| b.len()),
            Err(DevError::WouldBlock)
        );
        assert_eq!(
            core.read(fh, 10, true, std::future::pending())
                .await
                .map(|b| b.len()),
            Err(DevError::WouldBlock)
        );
        assert_eq!(core.try_read(fh, 0).map(|b| b.len()), Ok(0));
        assert_eq!(
            core.try_read(999, 1).map(|b| b.len()),
            Err(DevError::BadHandle)
        );
    }

    #[tokio::test]
    async fn blocked_read_wakes_on_arrival_and_interrupt_takes_nothing() {
        let (_dir, d) = local_daemon();
        let core = d.device_core(0);
        let fh = core.open();
        // Interrupted while waiting: EINTR, and a later arrival is still all there.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = core.clone();
        let t = tokio::spawn(async move {
            c2.read(fh, 64, false, async {
                let _ = rx.await;
            })
            .await
            .map(|b| b.len())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).ok();
        assert_eq!(t.await.ok(), Some(Err(DevError::Interrupted)));
        // Blocked, then woken by a fill.
        let c2 = core.clone();
        let t = tokio::spawn(async move {
            c2.read(fh, 64, false, std::future::pending())
                .await
                .map(|b| b.len())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!t.is_finished());
        fill(&d, 64);
        let got = tokio::time::timeout(Duration::from_millis(500), t).await;
        assert_eq!(got.ok().and_then(|r| r.ok()), Some(Ok(64)));
    }

    #[tokio::test]
    async fn blocked_readers_are_served_in_turn() {
        let (_dir, d) = local_daemon();
        let core = d.device_core(0);
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let c = core.clone();
            let fh = core.open();
            tasks.push(tokio::spawn(async move {
                c.read(fh, 1000, false, std::future::pending())
                    .await
                    .map(|b| b.len())
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Scarce arrivals: each goes to a different waiter, oldest first.
        for _ in 0..3 {
            fill(&d, 10);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for t in tasks {
            let r = tokio::time::timeout(Duration::from_millis(500), t).await;
            assert_eq!(r.ok().and_then(|r| r.ok()), Some(Ok(10)));
        }
    }

    #[tokio::test]
    async fn rate_limit_caps_one_file_not_another() {
        let (_dir, d) = local_daemon();
        let core = d.device_core(1000);
        fill(&d, 10_000);
        let a = core.open();
        let b = core.open();
        assert_eq!(core.try_read(a, 4096).map(|b| b.len()), Ok(1000));
        assert_eq!(
            core.try_read(a, 4096).map(|b| b.len()),
            Err(DevError::WouldBlock)
        );
        assert_eq!(core.try_read(b, 4096).map(|b| b.len()), Ok(1000));
        // Blocking reads on the limited file get about `rate` bytes per second.
        let t0 = Instant::now();
        let mut total = 0;
        while t0.elapsed() < Duration::from_millis(300) {
            let r = core.read(a, 4096, false, std::future::pending()).await;
            total += r.map(|b| b.len()).unwrap_or(0);
        }
        assert!(
            (200..=450).contains(&total),
            "{total} bytes in 300 ms at 1000 B/s"
        );
    }

    #[tokio::test]
    async fn ioctl_and_poll() {
        let (_dir, d) = local_daemon();
        let core = d.device_core(0);
        fill(&d, 100);
        assert_eq!(
            core.ioctl(RNDGETENTCNT, 4),
            Ok(800i32.to_ne_bytes().to_vec())
        );
        assert_eq!(core.ioctl(RNDGETENTCNT, 2), Err(DevError::Invalid));
        assert_eq!(core.ioctl(TCGETS, 60), Err(DevError::NotTty));
        assert_eq!(core.ioctl(0x1234, 0), Err(DevError::NotTty));
        let fh = core.open();
        core.try_read(fh, 100).ok();
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(!core.poll(fh, 1, Some(Box::new(move || tx.send(()).unwrap_or(())))));
        let notifier = tokio::spawn(core.clone().poll_notifier());
        fill(&d, 1);
        let woke = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(2)));
        assert!(woke.await.is_ok_and(|r| r.is_ok()));
        assert!(core.poll(fh, 1, None));
        notifier.abort();
    }

    /// 100,000 polls on one handle keep one wakeup; on 100,000 handles at most MAX_POLLERS, the
    /// rest woken as they made room; the live ones are woken by the next arrival, every handle
    /// exactly once; a released file's wakeups go with it.
    #[tokio::test]
    async fn poll_wakeups_are_bounded_and_none_is_lost() {
        use std::sync::atomic::AtomicU32;
        let (_dir, d) = local_daemon();
        let core = d.device_core(0);
        let fh = core.open();
        const N: u64 = 100_000;
        let woken: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
        let waker = |i: u64| -> Waker {
            let woken = woken.clone();
            Box::new(move || {
                woken[usize::try_from(i).unwrap()].fetch_add(1, Ordering::SeqCst);
            })
        };
        for _ in 0..N {
            assert!(!core.poll(fh, 0, Some(waker(0))));
        }
        assert_eq!(core.pollers(), 1);
        assert_eq!(Arc::strong_count(&woken), 2, "replaced wakeups are dropped");
        for kh in 1..N {
            core.poll(fh, kh, Some(waker(kh)));
        }
        assert_eq!(core.pollers(), MAX_POLLERS);
        assert_eq!(Arc::strong_count(&woken), 1 + MAX_POLLERS);
        let early = woken
            .iter()
            .filter(|w| w.load(Ordering::SeqCst) == 1)
            .count();
        assert_eq!(
            early,
            N as usize - MAX_POLLERS,
            "each handle that made room was woken"
        );
        let notifier = tokio::spawn(core.clone().poll_notifier());
        fill(&d, 1);
        for _ in 0..100 {
            if core.pollers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(core.pollers(), 0);
        let counts: Vec<u32> = woken.iter().map(|w| w.load(Ordering::SeqCst)).collect();
        assert!(
            counts.iter().all(|&c| c == 1),
            "every poller woken exactly once"
        );
        notifier.abort();
        // A released file takes its wakeups with it; another file's stay.
        d.pool.take(1, Want::Any).unwrap();
        let other = core.open();
        core.poll(fh, 1, Some(Box::new(|| {})));
        core.poll(other, 2, Some(Box::new(|| {})));
        core.release(fh);
        assert_eq!(core.pollers(), 1);
    }
}
