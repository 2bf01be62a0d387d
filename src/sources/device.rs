//! The `device` source: a character device or a tty (`/dev/hwrng`, a TrueRNG or OneRNG at
//! `/dev/ttyACM0`).
//!
//! A tty is put in raw mode (no echo, no line editing, no CR/LF or flow-control translation, 8
//! bits) with `VMIN = 0, VTIME = 1`, so a read returns within 100 ms even when the device is
//! silent and a fetch can honour its deadline; optional init bytes (OneRNG's `cmdO`) are written
//! after every open. After any error the device is closed and reopened on the next fetch. Reads
//! block, so they run on tokio's blocking pool, one at a time.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, BaudRate, SetArg, SpecialCharacterIndices};

use super::{FetchFuture, Meta, Source, SourceError};
use crate::config::DeviceSourceConfig;

/// The termios constant for a standard line speed.
pub fn baud_rate(b: u32) -> Option<BaudRate> {
    Some(match b {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        _ => return None,
    })
}

struct Opened {
    file: File,
    tty: bool,
}

struct Inner {
    cfg: DeviceSourceConfig,
    open: Mutex<Option<Opened>>,
}

/// A character device or tty.
pub struct DeviceSource {
    meta: Meta,
    inner: Arc<Inner>,
    timeout: Duration,
}

impl std::fmt::Debug for DeviceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSource")
            .field("id", &self.meta.id)
            .field("path", &self.inner.cfg.path)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> SourceError {
        SourceError::Unavailable(format!("{} {what}: {e}", self.cfg.path.display()))
    }

    fn open(&self) -> Result<Opened, SourceError> {
        let c = &self.cfg;
        let file = OpenOptions::new()
            .read(true)
            .write(c.init.is_some())
            .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
            .open(&c.path)
            .map_err(|e| self.err("open", e))?;
        let tty = nix::unistd::isatty(&file).unwrap_or(false);
        if c.raw_tty.unwrap_or(tty) {
            if !tty {
                return Err(SourceError::Fatal(format!(
                    "{} is not a tty but raw_tty = true",
                    c.path.display()
                )));
            }
            let mut t = termios::tcgetattr(&file).map_err(|e| self.err("tcgetattr", e))?;
            termios::cfmakeraw(&mut t);
            t.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
            t.control_chars[SpecialCharacterIndices::VTIME as usize] = 1;
            if let Some(b) = c.baud.and_then(baud_rate) {
                termios::cfsetspeed(&mut t, b).map_err(|e| self.err("cfsetspeed", e))?;
            }
            termios::tcsetattr(&file, SetArg::TCSANOW, &t).map_err(|e| self.err("tcsetattr", e))?;
            // Bytes that arrived before raw mode may have been translated: drop them.
            termios::tcflush(&file, termios::FlushArg::TCIFLUSH)
                .map_err(|e| self.err("tcflush", e))?;
        }
        if let Some(init) = &c.init {
            (&file)
                .write_all(init.as_bytes())
                .map_err(|e| self.err("write init", e))?;
        }
        Ok(Opened { file, tty })
    }

    fn fill(&self, out: &mut [u8], deadline: Instant) -> Result<(), SourceError> {
        let mut guard = super::try_lock(&self.open, "device read")?;
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(o) = guard.as_mut() else {
            return Err(SourceError::Failed("device not open".into()));
        };
        let mut filled = 0;
        while filled < out.len() {
            if Instant::now() >= deadline {
                return Err(SourceError::Timeout(Duration::ZERO));
            }
            match o.file.read(&mut out[filled..]) {
                Ok(0) if o.tty => {} // VTIME expired with no data
                Ok(0) => {
                    *guard = None;
                    return Err(SourceError::Unavailable(format!(
                        "{}: end of file",
                        self.cfg.path.display()
                    )));
                }
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    *guard = None;
                    return Err(self.err("read", e));
                }
            }
        }
        Ok(())
    }
}

impl DeviceSource {
    pub fn new(meta: Meta, cfg: &DeviceSourceConfig, timeout: Duration) -> Self {
        Self {
            meta,
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                open: Mutex::new(None),
            }),
            timeout,
        }
    }
}

impl Source for DeviceSource {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn fetch(&self, n: usize) -> FetchFuture<'_> {
        let inner = self.inner.clone();
        super::fetch_blocking_within(n, "device", self.timeout, move |buf, deadline| {
            inner.fill(buf, deadline)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_accepts_exactly_the_rates_with_a_termios_constant() {
        for b in 0..=1_000_000 {
            assert_eq!(
                baud_rate(b).is_some(),
                crate::config::STANDARD_BAUD_RATES.contains(&b),
                "{b}"
            );
        }
    }
}
