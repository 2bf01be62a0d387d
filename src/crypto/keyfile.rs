//! The text key files both signature algorithms use: tagged base64 lines, a secret file that
//! others may not read, and a pair written new (never over an existing key).
//!
//! Each algorithm ([`super::falcon`], [`super::mldsa`]) owns its tags and byte formats; this module
//! owns only the file handling, so the two cannot drift in how they protect a secret key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::falcon::KeyError;

/// The value of the first line `TAG<value>` (whitespace trimmed), if any.
pub(crate) fn find_line<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(tag))
        .map(str::trim)
}

/// Reads a key file's text.
pub(crate) fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret key file's text (zeroed on drop), refusing a file others can read.
pub(crate) fn read_secret_text(path: &Path) -> Result<zeroize::Zeroizing<String>, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    read_text(path).map(zeroize::Zeroizing::new)
}

pub(crate) fn format_error(path: &Path, what: &'static str) -> KeyError {
    KeyError::Format {
        path: path.to_owned(),
        what,
    }
}

/// Decodes the base64 line `tag` of `text` into exactly `len` bytes (a secret's caller wraps them
/// in a [`crate::secret::SecretBytes`] at once; they are moved, not copied).
pub(crate) fn decode_line(
    path: &Path,
    text: &str,
    tag: &str,
    len: usize,
    missing: &'static str,
    wrong_len: &'static str,
) -> Result<Vec<u8>, KeyError> {
    let b64 = find_line(text, tag).ok_or_else(|| format_error(path, missing))?;
    // Bound the work before decoding: base64 of `len` bytes is never longer than this.
    if b64.len() > len.div_ceil(3) * 4 {
        return Err(format_error(path, wrong_len));
    }
    // Zeroed if refused here: the line may be a secret.
    let mut bytes = zeroize::Zeroizing::new(
        B64.decode(b64)
            .map_err(|_| format_error(path, "a key line is not base64"))?,
    );
    if bytes.len() != len {
        return Err(format_error(path, wrong_len));
    }
    Ok(std::mem::take(&mut *bytes))
}

/// `TAG<base64>\n`.
pub(crate) fn line(tag: &str, bytes: &[u8]) -> String {
    format!("{tag}{}\n", B64.encode(bytes))
}

/// A secret key file's text: a comment line, the secret's tagged line, then the public key's.
pub(crate) fn secret_text(
    comment: &str,
    tag: &str,
    secret: &[u8],
    public_text: &str,
) -> zeroize::Zeroizing<String> {
    let line = zeroize::Zeroizing::new(line(tag, secret));
    zeroize::Zeroizing::new(format!("# {comment}\n{}{public_text}", *line))
}

/// Writes `DIR/NAME.key` (mode 0600, created new) and `DIR/NAME.pub` (0644, created new).
pub(crate) fn write_pair(
    dir: &Path,
    name: &str,
    secret_text: &str,
    public_text: &str,
) -> Result<(PathBuf, PathBuf), KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let key_path = dir.join(format!("{name}.key"));
    let pub_path = dir.join(format!("{name}.pub"));
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|source| KeyError::Write {
                path: path.to_owned(),
                source,
            })
    };
    write(&key_path, secret_text, 0o600)?;
    write(&pub_path, public_text, 0o644)?;
    Ok((key_path, pub_path))
}
