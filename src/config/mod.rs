//! TOML configuration for kirqd, kirq-hub and its node mode.
//!
//! Parsing is serde with `deny_unknown_fields` (a misspelt key is an error, not a silent default);
//! meaning is checked by a separate `validate()` whose errors name the offending key. Relative
//! paths are taken relative to the config file's directory.

mod daemon;
mod hub;
mod node;
mod quantum;
mod rest;

pub use daemon::*;
pub use hub::*;
pub use node::*;
pub use quantum::*;
pub use rest::{MAX_RESPONSE_LIMIT, RestInvalid, RestSpec};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML for this program")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Largest config file read, to bound memory on a bad path (e.g. a device).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

pub(crate) fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

pub(crate) fn check_id(key: &'static str, id: &str) -> Result<(), ConfigError> {
    if crate::wire::is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(key, "must be 1-64 characters from [A-Za-z0-9._-]"))
    }
}

pub(crate) fn check_https(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            format!("{url:?} must be an https:// URL with a host"),
        )),
        Err(e) => Err(invalid(key, format!("{url:?} is not a URL: {e}"))),
    }
}

#[cfg(test)]
mod tests;
