//! Entropy sources behind one trait. Each source only fetches; the hub (and a decentralized node)
//! wraps every source in a [`gate::Gate`] (rate limit and backoff) and health-tests its raw bytes
//! ([`crate::health::SourceHealth`]). [`make_source`] builds a source and its [`SourceSettings`]
//! from its config, for both.
//!
//! Kinds: `local` (getrandom), `rest` (QRNG services over HTTPS), `pkcs11` (HSMs), `spore`
//! (Crypto4A's signed entropy service), `usb` (vendor-class bulk devices) and `device` (character
//! devices and ttys). Decentralized QRNG nodes are not a [`Source`]: a round over several nodes
//! has its own client, [`decentralized::Decentralized`]. The one design choice a reader must know: an adapter reports *why* a fetch
//! failed as a [`SourceError`] variant, and the gate alone decides what that costs (fatal stop,
//! quota wait, Retry-After, exponential backoff), so every adapter backs off the same way.

pub mod decentralized;
pub mod device;
pub mod gate;
mod httpx;
pub mod local;
mod make;
pub mod pkcs11;
pub mod rest;
pub mod spore;
pub mod usb;

use std::pin::Pin;
use std::time::Duration;

use crate::secret::SecretBytes;
use crate::wire::SourceKind;

pub use make::{SOURCE_TIMEOUT, SourceSettings, make_source};

/// Why a fetch failed. Messages never carry entropy, tokens or PINs.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Will not work again without an operator: credentials or request refused, token missing.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The service's quota is used up (HTTP 403 from a QRNG service).
    #[error("quota exhausted")]
    Quota { retry_after: Option<Duration> },
    /// Too many requests (HTTP 429).
    #[error("rate limited")]
    RateLimited { retry_after: Option<Duration> },
    /// The source is down or unreachable (HTTP 5xx, connection refused, device gone).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The source answered with something malformed; none of it is used.
    #[error("bad response: {0}")]
    BadResponse(String),
    #[error("source failed: {0}")]
    Failed(String),
}

impl SourceError {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Fatal(_) => "fatal",
            Self::Quota { .. } => "quota",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::BadResponse(_) => "bad_response",
            Self::Failed(_) => "error",
        }
    }
}

/// The future a fetch returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SecretBytes, SourceError>> + Send + 'a>>;

/// Fills `n` fresh bytes with a blocking `fill` on tokio's blocking pool, for sources that read a
/// device or a C library. `what` names the source in the error a panicking worker gives.
pub(crate) fn fetch_blocking(
    n: usize,
    what: &'static str,
    fill: impl FnOnce(&mut [u8]) -> Result<(), SourceError> + Send + 'static,
) -> FetchFuture<'static> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || {
            let mut out = SecretBytes::zeroed(n);
            fill(out.expose_mut())?;
            Ok(out)
        })
        .await
        .map_err(|_| SourceError::Failed(format!("{what} worker panicked")))?
    })
}

/// [`fetch_blocking`] for adapters that poll a device until a deadline `timeout` from now; a
/// timeout inside `fill` is reported as the configured `timeout`.
pub(crate) fn fetch_blocking_within(
    n: usize,
    what: &'static str,
    timeout: Duration,
    fill: impl FnOnce(&mut [u8], std::time::Instant) -> Result<(), SourceError> + Send + 'static,
) -> FetchFuture<'static> {
    fetch_blocking(n, what, move |buf| {
        fill(buf, std::time::Instant::now() + timeout).map_err(|e| match e {
            SourceError::Timeout(_) => SourceError::Timeout(timeout),
            e => e,
        })
    })
}

/// A source of raw entropy.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Stable id used in packet provenance (`[A-Za-z0-9._-]`, at most 64 characters).
    /// The id, kind and declared min-entropy the config gave this source.
    fn meta(&self) -> &Meta;
    fn id(&self) -> &str {
        &self.meta().id
    }
    fn kind(&self) -> SourceKind {
        self.meta().kind
    }
    /// The min-entropy per byte this source is trusted to deliver (for health-test cutoffs and
    /// credit), in (0, 8]; declared in config.
    fn min_entropy_per_byte(&self) -> f64 {
        self.meta().min_entropy_per_byte
    }
    /// Fetches exactly `n` raw bytes (an adapter makes as many calls as its per-call limit needs).
    fn fetch(&self, n: usize) -> FetchFuture<'_>;
}

/// What every adapter shares: identity, kind and declared min-entropy.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub kind: SourceKind,
    pub min_entropy_per_byte: f64,
}

/// Locks a blocking adapter's device state without waiting: a call still running (one that
/// outlived its fetch's timeout) makes the next fetch fail fast instead of piling up threads.
pub(crate) fn try_lock<'a, T>(
    m: &'a std::sync::Mutex<T>,
    what: &str,
) -> Result<std::sync::MutexGuard<'a, T>, SourceError> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(SourceError::Unavailable(format!(
            "a previous {what} is still running"
        ))),
    }
}

/// Reads a secret (token, PIN) from a file: at most 4 KiB, one line, trailing newline removed.
/// Errors name the file, never its content.
pub fn read_secret_file(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, SourceError> {
    use std::io::Read;
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(4097).read_to_end(&mut buf))
        .map_err(|e| {
            SourceError::Fatal(format!("cannot read secret file {}: {e}", path.display()))
        })?;
    if buf.len() > 4096 {
        return Err(SourceError::Fatal(format!(
            "secret file {} is larger than 4 KiB",
            path.display()
        )));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| SourceError::Fatal(format!("secret file {} is not UTF-8", path.display())))?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains(['\n', '\r']) {
        return Err(SourceError::Fatal(format!(
            "secret file {} must hold exactly one non-empty line",
            path.display()
        )));
    }
    Ok(zeroize::Zeroizing::new(line.to_owned()))
}
