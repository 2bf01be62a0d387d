//! The `[quantum]` section of kirqd's config: where the VRF and Falcon service keys live, how they
//! are sealed at rest, which entropy may make them, and how large a signed message may be.

use std::path::PathBuf;

use super::{ConfigError, invalid};
use crate::wire::Provenance;

/// Default (and largest default) size of a VRF alpha or a signed message, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest `max_message_bytes` accepted.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 20;
/// The systemd credential name read from `$CREDENTIALS_DIRECTORY` when no key file is set.
pub const DEFAULT_AT_REST_CREDENTIAL: &str = "kirq-at-rest-key";

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantumConfig {
    /// Directory of the sealed key files (created 0700 if missing).
    pub state_dir: PathBuf,
    /// File holding the 32-byte AES-256-GCM at-rest key (raw or 64 hex digits, mode 0600 or
    /// stricter). Unset: `$CREDENTIALS_DIRECTORY/<at_rest_credential>` (systemd LoadCredential=).
    #[serde(default)]
    pub at_rest_key_file: Option<PathBuf>,
    #[serde(default = "d_credential")]
    pub at_rest_credential: String,
    /// Pool provenance classes the VRF secret key may be drawn from, in order of preference.
    #[serde(default = "d_keygen")]
    pub keygen_provenance: Vec<Provenance>,
    /// Largest VRF alpha or Falcon message, in bytes (after decoding).
    #[serde(default = "d_max_message")]
    pub max_message_bytes: usize,
}

fn d_credential() -> String {
    DEFAULT_AT_REST_CREDENTIAL.into()
}

/// Verified, non-local classes: local (OS RNG) entropy is never the default for a key.
pub fn d_keygen() -> Vec<Provenance> {
    vec![
        Provenance::Hybrid,
        Provenance::Decentralized,
        Provenance::Qrng,
        Provenance::Hsm,
    ]
}

fn d_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl QuantumConfig {
    /// A config with every default but the state directory.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            at_rest_key_file: None,
            at_rest_credential: d_credential(),
            keygen_provenance: d_keygen(),
            max_message_bytes: d_max_message(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("quantum.state_dir", "must not be empty"));
        }
        let c = &self.at_rest_credential;
        if c.is_empty() || c.len() > 255 || c.contains('/') || c == "." || c == ".." {
            return Err(invalid(
                "quantum.at_rest_credential",
                "must be a plain file name (1-255 bytes, no '/')",
            ));
        }
        if self.keygen_provenance.is_empty() {
            return Err(invalid(
                "quantum.keygen_provenance",
                "list at least one provenance class",
            ));
        }
        if !(1..=MAX_MESSAGE_BYTES_LIMIT).contains(&self.max_message_bytes) {
            return Err(invalid(
                "quantum.max_message_bytes",
                format!("must be 1..={MAX_MESSAGE_BYTES_LIMIT}"),
            ));
        }
        Ok(())
    }
}
