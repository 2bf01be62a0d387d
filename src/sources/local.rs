//! The `local` source: the operating system's RNG (getrandom). It keeps a hub working with no
//! hardware attached; its bytes are always marked `local`, never passed off as quantum.

use super::{Meta, Source, SourceError};
use crate::secret::SecretBytes;
use crate::wire::SourceKind;

#[derive(Debug)]
pub struct LocalSource {
    meta: Meta,
}

impl LocalSource {
    pub fn new(id: impl Into<String>) -> Self {
        Self::with_meta(Meta {
            id: id.into(),
            kind: SourceKind::Local,
            min_entropy_per_byte: 8.0,
        })
    }

    /// Config decides the id and the declared min-entropy; the kind is always `local`.
    pub fn with_meta(meta: Meta) -> Self {
        Self {
            meta: Meta {
                kind: SourceKind::Local,
                ..meta
            },
        }
    }
}

impl Source for LocalSource {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn fetch(&self, n: usize) -> super::FetchFuture<'_> {
        Box::pin(async move {
            let mut buf = SecretBytes::zeroed(n);
            getrandom::fill(buf.expose_mut()).map_err(|e| SourceError::Failed(e.to_string()))?;
            Ok(buf)
        })
    }
}
