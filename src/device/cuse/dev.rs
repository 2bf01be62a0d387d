//! The one part of the CUSE server that owns the /dev/cuse file descriptor.
//!
//! Opening /dev/cuse starts a CUSE connection (the kernel then sends CUSE_INIT); closing it
//! removes the device node. Reads wait with `poll(2)` and a short timeout so the server thread can
//! notice a stop request; every reply is exactly one `write(2)`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

pub const CUSE_PATH: &str = "/dev/cuse";

/// Why /dev/cuse could not be opened; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CuseOpenError {
    #[error(
        "{CUSE_PATH} does not exist and `modprobe cuse` did not create it ({modprobe}); \
         this kernel has no CUSE (CONFIG_CUSE): use device.mode = \"fuse\" with a mountpoint"
    )]
    Missing { modprobe: String },
    #[error("cannot open {CUSE_PATH} (kirqd needs root or CAP_SYS_ADMIN for CUSE)")]
    Open(#[source] io::Error),
}

/// An open /dev/cuse.
#[derive(Debug)]
pub struct CuseDev {
    file: File,
}

impl CuseDev {
    /// Opens /dev/cuse; if it is missing, runs `modprobe cuse` once and tries again.
    pub fn open() -> Result<Self, CuseOpenError> {
        match Self::open_path(Path::new(CUSE_PATH)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let modprobe = match std::process::Command::new("modprobe")
                    .arg("cuse")
                    .stdin(std::process::Stdio::null())
                    .output()
                {
                    Ok(o) if o.status.success() => "it succeeded".to_string(),
                    Ok(o) => format!(
                        "{}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => format!("could not run modprobe: {e}"),
                };
                Self::open_path(Path::new(CUSE_PATH)).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        CuseOpenError::Missing { modprobe }
                    } else {
                        CuseOpenError::Open(e)
                    }
                })
            }
            Err(e) => Err(CuseOpenError::Open(e)),
            Ok(d) => Ok(d),
        }
    }

    fn open_path(p: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: a busy server reads request after request without a poll in between.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(p)?;
        Ok(Self { file })
    }

    /// Reads one message, waiting up to `timeout` when none is queued. `Ok(None)`: nothing yet
    /// (or a request the kernel withdrew). Errors end the session (`ENODEV`: aborted).
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if let Some(n) = self.read_one(buf)? {
            return Ok(Some(n));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.read_one(buf)
    }

    fn read_one(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc_errno::ENOENT | libc_errno::EINTR | libc_errno::EAGAIN)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one reply or notification with a single write.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(msg)?;
        if n != msg.len() {
            return Err(io::Error::other(format!(
                "short write to {CUSE_PATH}: {n} of {}",
                msg.len()
            )));
        }
        Ok(())
    }
}

mod libc_errno {
    pub const ENOENT: i32 = nix::libc::ENOENT;
    pub const EINTR: i32 = nix::libc::EINTR;
    pub const EAGAIN: i32 = nix::libc::EAGAIN;
}
