//! The single-use entropy pool.
//!
//! Bytes enter only through [`Pool::admit`], which takes a [`VerifiedPacket`] that only the
//! verifier can make, [`Pool::fill_local`], the daemon's own health-tested fallback, or
//! [`Pool::restore`], which takes bytes unsealed from the daemon's own authenticated state file. Each byte
//! leaves exactly once: [`Pool::take`] copies bytes out under one lock and zeroes them in the pool
//! before the lock is released, so two consumers can never receive the same byte. A request is
//! served whole or not at all.
//!
//! Bytes are kept in one queue per provenance class. A consumer asking for `any` is served from
//! the best class first (hybrid, decentralized, qrng, hsm, then local), so after a fallback the
//! daemon returns to hub entropy as soon as a packet arrives.

pub mod persist;
pub mod secretmem;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::health::{HealthFailure, SourceHealth};
use crate::secret::SecretBytes;
use crate::verify::VerifiedPacket;
use crate::wire::Provenance;

pub const DEFAULT_CAPACITY: usize = 16 << 20;
pub const DEFAULT_LOW_WATERMARK: usize = 1024;
/// The fill level the daemon keeps the pool at by default (hub-delivered bytes).
pub const DEFAULT_HIGH_WATERMARK: usize = 1 << 20;

/// Which bytes a consumer will accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Any,
    Only(Provenance),
}

/// Who consumed bytes, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumer {
    Http,
    Device,
    Kernel,
    /// The daemon itself, for key material it makes from pool bytes (the VRF key).
    Keys,
}

impl Consumer {
    /// Every consumer: the per-consumer split of served bytes sums to the total.
    pub const ALL: [Consumer; 4] = [Self::Http, Self::Device, Self::Kernel, Self::Keys];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Device => "device",
            Self::Kernel => "kernel",
            Self::Keys => "keys",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("pool full: {free} bytes free, {wanted} offered")]
    Full { free: usize, wanted: usize },
    #[error("not enough entropy: {available} bytes available, {wanted} requested")]
    Insufficient { available: usize, wanted: usize },
}

/// Bytes handed to one consumer, with how many came from each class.
#[derive(Debug)]
pub struct Taken {
    pub bytes: SecretBytes,
    pub by_provenance: [usize; Provenance::COUNT],
}

impl Taken {
    /// The single class these bytes came from, or `None` when they span several.
    pub fn single_provenance(&self) -> Option<Provenance> {
        let mut classes = Provenance::ALL
            .into_iter()
            .filter(|p| self.by_provenance[p.index()] > 0);
        let first = classes.next()?;
        classes.next().is_none().then_some(first)
    }
}

/// What one [`Pool::take_into`] took: bytes per class, and how many of them were the daemon's own
/// fallback bytes (always of class `local`: fills and the restored fallback segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TakeCounts {
    pub by_provenance: [usize; Provenance::COUNT],
    pub fallback: usize,
}

impl TakeCounts {
    pub fn total(&self) -> usize {
        self.by_provenance.iter().sum()
    }
}

/// A point-in-time view of the pool for `/health` and metrics.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PoolSnapshot)]
pub struct Snapshot {
    pub total_bytes: usize,
    pub capacity_bytes: usize,
    pub fallback_bytes: usize,
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub by_provenance: std::collections::BTreeMap<&'static str, usize>,
    pub admitted_bytes_total: u64,
    pub served_bytes_total: u64,
}

struct Chunk {
    data: ChunkBuf,
    pos: usize,
    fallback: bool,
}

/// A chunk's bytes: in secret memory where the kernel allows, else on the (locked) heap.
enum ChunkBuf {
    Secret(secretmem::SecretRegion),
    Heap(SecretBytes),
}

impl ChunkBuf {
    fn len(&self) -> usize {
        match self {
            Self::Secret(r) => r.len(),
            Self::Heap(b) => b.len(),
        }
    }

    fn expose(&self) -> &[u8] {
        match self {
            Self::Secret(r) => r.as_slice(),
            Self::Heap(b) => b.expose(),
        }
    }

    fn expose_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Secret(r) => r.as_mut_slice(),
            Self::Heap(b) => b.expose_mut(),
        }
    }
}

#[derive(Default)]
struct Inner {
    queues: [VecDeque<Chunk>; Provenance::COUNT],
    by_prov: [usize; Provenance::COUNT],
    total: usize,
    fallback: usize,
}

/// The pool. Its `Debug` shows sizes only.
pub struct Pool {
    inner: Mutex<Inner>,
    capacity: usize,
    low_watermark: usize,
    /// The target fill level: refills top the hub-delivered bytes up to this.
    high_watermark: usize,
    /// The largest request the pool could not serve since the last refill plan (capped at the
    /// capacity): counted into the next pull, so a large request is never starved by a pool
    /// that holds "enough" for small ones.
    unmet: AtomicUsize,
    admitted: AtomicU64,
    served: AtomicU64,
    refill: tokio::sync::Notify,
    arrived: tokio::sync::Notify,
    /// Chunks go to memfd_secret mappings (probed once at construction).
    secret_memory: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(capacity: usize, low_watermark: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            low_watermark,
            high_watermark: low_watermark,
            unmet: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            served: AtomicU64::new(0),
            refill: tokio::sync::Notify::new(),
            arrived: tokio::sync::Notify::new(),
            secret_memory: secretmem::SecretRegion::available(),
        }
    }

    /// Sets the target fill level (at least the low watermark, at most the capacity).
    pub fn with_high_watermark(mut self, high: usize) -> Self {
        self.high_watermark = high.clamp(self.low_watermark, self.capacity);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no half-copied state that could repeat a byte:
        // bytes are zeroed and accounted in the same step, so the data is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when chunks are kept in memfd_secret mappings (else on the locked heap).
    pub fn secret_memory(&self) -> bool {
        self.secret_memory
    }

    pub fn free(&self) -> usize {
        self.capacity - self.len()
    }

    fn push(
        &self,
        data: SecretBytes,
        class: Provenance,
        fallback: bool,
    ) -> Result<usize, PoolError> {
        let n = data.len();
        // Copy into secret memory where possible, outside the lock (it takes a few syscalls); the
        // heap copy is zeroed as `data` drops.
        let data = match self.secret_memory.then(|| secretmem::SecretRegion::new(n)) {
            Some(Ok(mut r)) => {
                r.as_mut_slice().copy_from_slice(data.expose());
                ChunkBuf::Secret(r)
            }
            _ => ChunkBuf::Heap(data),
        };
        {
            let mut g = self.lock();
            let free = self.capacity - g.total;
            if n > free {
                return Err(PoolError::Full { free, wanted: n });
            }
            g.queues[class.index()].push_back(Chunk {
                data,
                pos: 0,
                fallback,
            });
            g.by_prov[class.index()] += n;
            g.total += n;
            if fallback {
                g.fallback += n;
            }
        }
        self.admitted.fetch_add(n as u64, Ordering::Relaxed);
        self.arrived.notify_waiters();
        Ok(n)
    }

    /// Admits a verified packet's entropy. On `Full` the entropy is dropped (and zeroed).
    pub fn admit(&self, packet: VerifiedPacket) -> Result<usize, PoolError> {
        let (entropy, class) = packet.into_entropy();
        self.push(entropy, class, false)
    }

    /// Fills up to `n` bytes from the operating system's RNG, health-tested, marked `local` and
    /// counted as fallback. Returns the bytes added (fewer if the pool has less room).
    pub fn fill_local(&self, n: usize, health: &mut SourceHealth) -> Result<usize, HealthFailure> {
        let n = n.min(self.free());
        if n == 0 {
            return Ok(0);
        }
        let mut buf = SecretBytes::zeroed(n);
        if let Err(e) = getrandom::fill(buf.expose_mut()) {
            health.record_error(format!("getrandom: {e}"));
            return Ok(0);
        }
        health.check_block(buf.expose())?;
        Ok(self.push(buf, Provenance::Local, true).unwrap_or(0))
    }

    /// Removes every unserved byte for sealing at a clean stop (not counted as served): one
    /// buffer per provenance class, then the fallback bytes.
    pub fn drain_for_seal(&self) -> [SecretBytes; persist::SEGMENTS] {
        let mut g = self.lock();
        let inner = &mut *g;
        let mut out: [SecretBytes; persist::SEGMENTS] = Default::default();
        let mut sizes = [0usize; persist::SEGMENTS];
        for (i, q) in inner.queues.iter().enumerate() {
            for c in q {
                let seg = if c.fallback { persist::SEGMENTS - 1 } else { i };
                sizes[seg] += c.data.len() - c.pos;
            }
        }
        for (seg, size) in out.iter_mut().zip(sizes) {
            *seg = SecretBytes::new(Vec::with_capacity(size));
        }
        for (i, q) in inner.queues.iter_mut().enumerate() {
            for c in q.drain(..) {
                let seg = if c.fallback { persist::SEGMENTS - 1 } else { i };
                out[seg].append(&c.data.expose()[c.pos..]);
            }
            inner.by_prov[i] = 0;
        }
        inner.total = 0;
        inner.fallback = 0;
        out
    }

    /// Puts back bytes sealed at the last clean stop. Returns the bytes restored (fewer if the
    /// pool is smaller now; the rest is dropped and zeroed).
    pub fn restore(&self, unsealed: persist::Unsealed) -> usize {
        let mut n = 0;
        for (i, seg) in unsealed.0.into_iter().enumerate() {
            if seg.is_empty() {
                continue;
            }
            let (class, fallback) = match Provenance::ALL.get(i) {
                Some(p) => (*p, false),
                None => (Provenance::Local, true),
            };
            n += self.push(seg, class, fallback).unwrap_or(0);
        }
        n
    }

    /// Takes exactly `n` bytes for one consumer, or nothing.
    pub fn take(&self, n: usize, want: Want) -> Result<Taken, PoolError> {
        let mut out = SecretBytes::zeroed(n);
        let by_provenance = self.take_into(out.expose_mut(), want, true)?.by_provenance;
        Ok(Taken {
            bytes: out,
            by_provenance,
        })
    }

    /// Fills `dst` from the pool. With `exact`, all of `dst` or nothing; otherwise at least one
    /// byte (a device read). Returns bytes taken per class and how many were fallback bytes.
    pub fn take_into(
        &self,
        dst: &mut [u8],
        want: Want,
        exact: bool,
    ) -> Result<TakeCounts, PoolError> {
        let mut by = [0usize; Provenance::COUNT];
        let mut fallback_taken = 0;
        let below_watermark;
        {
            let mut g = self.lock();
            let available = match want {
                Want::Any => g.total,
                Want::Only(p) => g.by_prov[p.index()],
            };
            let wanted = dst.len();
            if available == 0 || (exact && available < wanted) {
                drop(g);
                self.record_unmet(wanted);
                return Err(PoolError::Insufficient { available, wanted });
            }
            let n = wanted.min(available);
            let mut filled = 0;
            let classes: &[Provenance] = match want {
                Want::Any => &Provenance::ALL,
                Want::Only(ref p) => std::slice::from_ref(p),
            };
            let inner = &mut *g;
            for &class in classes {
                let q = &mut inner.queues[class.index()];
                while filled < n {
                    let Some(chunk) = q.front_mut() else { break };
                    let k = (n - filled).min(chunk.data.len() - chunk.pos);
                    let src = &mut chunk.data.expose_mut()[chunk.pos..chunk.pos + k];
                    dst[filled..filled + k].copy_from_slice(src);
                    zeroize::Zeroize::zeroize(src);
                    chunk.pos += k;
                    filled += k;
                    by[class.index()] += k;
                    if chunk.fallback {
                        inner.fallback -= k;
                        fallback_taken += k;
                    }
                    if chunk.pos == chunk.data.len() {
                        q.pop_front();
                    }
                }
                inner.by_prov[class.index()] -= by[class.index()];
            }
            debug_assert_eq!(filled, n);
            inner.total -= n;
            below_watermark = inner.total - inner.fallback < self.high_watermark;
        }
        self.served
            .fetch_add(by.iter().sum::<usize>() as u64, Ordering::Relaxed);
        if below_watermark {
            self.refill.notify_one();
        }
        Ok(TakeCounts {
            by_provenance: by,
            fallback: fallback_taken,
        })
    }

    /// Wakes the refill task (a consumer wants bytes the pool lacks).
    pub fn request_refill(&self) {
        self.refill.notify_one();
    }

    /// A consumer wanted `n` bytes the pool could not give: count them into the next pull and
    /// wake the refill task. The largest unmet request counts (not the sum), so a consumer that
    /// retries on every arrival cannot inflate the next pull; concurrent consumers are covered
    /// by the high watermark.
    fn record_unmet(&self, n: usize) {
        self.unmet
            .fetch_max(n.min(self.capacity), Ordering::Relaxed);
        self.refill.notify_one();
    }

    /// How many bytes the refill task should fetch now (0: none). A refill starts when the
    /// hub-delivered bytes fell below the low watermark, when at least `chunk` bytes are missing
    /// from the high watermark, or when a consumer went unserved; it then asks for what tops the
    /// pool up to the high watermark plus every unmet request, within the free space. Taking the
    /// plan resets the unmet count.
    pub fn refill_plan(&self, chunk: usize) -> usize {
        let (hub, free) = {
            let g = self.lock();
            (g.total - g.fallback, self.capacity - g.total)
        };
        let missing = self.high_watermark.saturating_sub(hub);
        let unmet = self.unmet.load(Ordering::Relaxed);
        if unmet == 0 && hub >= self.low_watermark && missing < chunk.max(1) {
            return 0;
        }
        let unmet = self.unmet.swap(0, Ordering::Relaxed);
        missing.saturating_add(unmet).min(free)
    }

    /// Resolves when the pool fell below its high watermark (or a consumer went unserved).
    pub async fn refill_needed(&self) {
        self.refill.notified().await
    }

    /// True when the hub-delivered bytes are below the low watermark. Fallback bytes do not
    /// count, so a daemon serving local entropy keeps asking hubs for better.
    pub fn below_low_watermark(&self) -> bool {
        let g = self.lock();
        g.total - g.fallback < self.low_watermark
    }

    /// Resolves after the next admission (for blocking readers).
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// The next admission as a future that can be registered (`Notified::enable`) before the
    /// pool is checked, so an admission between the check and the wait is never missed.
    pub fn arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        Snapshot {
            total_bytes: g.total,
            capacity_bytes: self.capacity,
            fallback_bytes: g.fallback,
            by_provenance: Provenance::ALL
                .iter()
                .map(|p| (p.as_str(), g.by_prov[p.index()]))
                .collect(),
            admitted_bytes_total: self.admitted.load(Ordering::Relaxed),
            served_bytes_total: self.served.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
