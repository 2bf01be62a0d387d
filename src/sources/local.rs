//! The `local` source: the operating system's RNG (getrandom). It keeps a hub working with no
//! hardware attached; its bytes are always marked `local`, never passed off as quantum.

use super::{Source, SourceError};
use crate::secret::SecretBytes;
use crate::wire::SourceKind;

#[derive(Debug)]
pub struct LocalSource {
    id: String,
}

impl LocalSource {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

impl Source for LocalSource {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Local
    }

    fn min_entropy_per_byte(&self) -> f64 {
        8.0
    }

    fn fetch(
        &self,
        n: usize,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<SecretBytes, SourceError>> + Send + '_>> {
        Box::pin(async move {
            let mut buf = SecretBytes::zeroed(n);
            getrandom::fill(buf.expose_mut()).map_err(|e| SourceError::Failed(e.to_string()))?;
            Ok(buf)
        })
    }
}
