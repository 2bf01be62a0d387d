//! Entropy sources behind one trait. Each source is health-tested by the hub on its raw bytes
//! ([`crate::health::SourceHealth`]); this module only fetches.
//!
//! Today: `local` (the operating system's RNG through getrandom). Real quantum and hardware
//! sources plug in behind the same [`Source`] trait.

pub mod local;

use std::time::Duration;

use crate::secret::SecretBytes;
use crate::wire::SourceKind;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source timed out after {0:?}")]
    Timeout(Duration),
    #[error("source failed: {0}")]
    Failed(String),
}

/// A source of raw entropy.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Stable id used in packet provenance (`[A-Za-z0-9._-]`, at most 64 characters).
    fn id(&self) -> &str;
    fn kind(&self) -> SourceKind;
    /// The min-entropy per byte this source is trusted to deliver (for health-test cutoffs and
    /// credit), in (0, 8].
    fn min_entropy_per_byte(&self) -> f64;
    /// Fetches exactly `n` raw bytes.
    fn fetch(
        &self,
        n: usize,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<SecretBytes, SourceError>> + Send + '_>>;
}
