//! `kirqd probe-device`: checks a device node or file the way programs use it, and measures read
//! throughput against /dev/urandom. The VM harness runs it in the guest; operators can run it on
//! a live /dev/kirq-rng (it consumes entropy: the checks drain the pool once).
//!
//! Every result is one line starting with [`PREFIX`], so a harness can pick them out of a console.
//! The one `unsafe` here installs a no-op SIGUSR1 handler so a blocked read can be interrupted.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const PREFIX: &str = "KIRQ-PROBE";

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX} check {} {} {:.1}ms {}",
            self.name,
            if self.ok { "PASS" } else { "FAIL" },
            self.elapsed.as_secs_f64() * 1e3,
            self.detail
        )
    }
}

fn check(name: &'static str, f: impl FnOnce() -> Result<String, String>) -> Check {
    let t = Instant::now();
    let r = f();
    let elapsed = t.elapsed();
    match r {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
            elapsed,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
            elapsed,
        },
    }
}

fn open(path: &Path, nonblock: bool) -> std::io::Result<File> {
    let flags = if nonblock { nix::libc::O_NONBLOCK } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// Reads exactly `n` bytes (the device may return fewer per read).
fn read_n(f: &mut File, n: usize, bs: usize) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = (n - got).min(bs);
        let r = f.read(&mut out[got..got + k])?;
        if r == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got += r;
    }
    Ok(out)
}

/// Counts 16-byte windows that occur more than once within or across `outputs`.
pub fn repeated_windows(outputs: &[Vec<u8>]) -> usize {
    let mut seen = HashSet::new();
    outputs
        .iter()
        .flat_map(|o| o.windows(16))
        .filter(|w| !seen.insert(<[u8; 16]>::try_from(*w).unwrap_or_default()))
        .count()
}

/// Pool size in bits through `RNDGETENTCNT` on the device.
pub fn entcnt(path: &Path) -> std::io::Result<i32> {
    crate::kernel::ioctl::entropy_count(&open(path, false)?)
}

/// The device checks. `compare` are files other readers (e.g. `dd`) wrote from the same device
/// at the same time; they join the no-repeated-window check.
pub fn run_checks(path: &Path, compare: &[PathBuf]) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(check("concurrent-readers-distinct", || {
        concurrent_readers_distinct(path, compare)
    }));
    out.push(check("ioctl-rndgetentcnt", || {
        entcnt(path)
            .map(|b| format!("pool {b} bits"))
            .map_err(|e| format!("RNDGETENTCNT: {e}"))
    }));
    out.push(check("ioctl-tcgets-enotty", || tcgets_enotty(path)));
    // Drain with O_NONBLOCK until EAGAIN, then poll: not readable, then woken by a refill.
    let mut drained = None;
    out.push(check("nonblock-eagain", || {
        let (f, found) = drain_until_eagain(path)?;
        drained = Some(f);
        Ok(found)
    }));
    out.push(check("poll-wakes-on-refill", || {
        let f = drained
            .take()
            .ok_or("needs the drained file from nonblock-eagain")?;
        poll_wakes_on_refill(f)
    }));
    out.push(check("interrupt-eintr", || interrupted_read(path)));
    out.push(check("blocking-read", || blocking_read(path)));
    out
}

/// Two readers at once (4 KiB and 64 KiB reads) and the `compare` files: no 16-byte window
/// occurs twice among them.
fn concurrent_readers_distinct(path: &Path, compare: &[PathBuf]) -> Result<String, String> {
    let readers: Vec<_> = [4096usize, 65536]
        .into_iter()
        .map(|bs| {
            let p = path.to_owned();
            std::thread::spawn(move || open(&p, false).and_then(|mut f| read_n(&mut f, 65536, bs)))
        })
        .collect();
    let mut outputs = Vec::new();
    for r in readers {
        outputs.push(
            r.join()
                .map_err(|_| "reader panicked".to_string())?
                .map_err(|e| format!("read: {e}"))?,
        );
    }
    for c in compare {
        let b = std::fs::read(c).map_err(|e| format!("{}: {e}", c.display()))?;
        if b.is_empty() {
            return Err(format!("{} is empty", c.display()));
        }
        outputs.push(b);
    }
    let total: usize = outputs.iter().map(Vec::len).sum();
    match repeated_windows(&outputs) {
        0 => Ok(format!(
            "{} readers, {total} bytes, no repeated 16-byte window",
            outputs.len()
        )),
        n => Err(format!("{n} repeated 16-byte windows in {total} bytes")),
    }
}

/// The device is not a terminal: `TCGETS` fails with ENOTTY.
fn tcgets_enotty(path: &Path) -> Result<String, String> {
    let f = open(path, false).map_err(|e| e.to_string())?;
    match nix::sys::termios::tcgetattr(&f) {
        Err(nix::errno::Errno::ENOTTY) => Ok("ENOTTY".into()),
        Err(e) => Err(format!("expected ENOTTY, got {e}")),
        Ok(_) => Err("the device claims to be a terminal".into()),
    }
}

/// Reads with O_NONBLOCK until EAGAIN; returns the drained file for the poll check.
fn drain_until_eagain(path: &Path) -> Result<(File, String), String> {
    let mut f = open(path, true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 131072];
    let mut total = 0usize;
    loop {
        match f.read(&mut buf) {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("read: {e}")),
        }
        if total > 1 << 30 {
            return Err("no EAGAIN after 1 GiB".into());
        }
    }
    Ok((f, format!("EAGAIN after draining {total} bytes")))
}

/// On the drained file: not readable at once, then POLLIN when a refill lands, then a read.
fn poll_wakes_on_refill(mut f: File) -> Result<String, String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut buf = vec![0u8; 131072];
    for _ in 0..20 {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        let idle = poll(&mut fds, PollTimeout::ZERO).map_err(|e| e.to_string())?;
        if idle != 0 {
            // A refill landed between the drain and this poll: drain again.
            while f.read(&mut buf).is_ok() {}
            continue;
        }
        let t = Instant::now();
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(10_000u16)).map_err(|e| e.to_string())?;
        let woke = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        return if n == 1 && woke {
            let got = f
                .read(&mut buf)
                .map_err(|e| format!("read after wake: {e}"))?;
            Ok(format!(
                "not readable when empty; POLLIN {:.1} ms later, then read {got} bytes",
                t.elapsed().as_secs_f64() * 1e3
            ))
        } else {
            Err("no POLLIN within 10 s of a drained pool".into())
        };
    }
    Err("the pool never stayed empty long enough to poll it".into())
}

/// A blocking read returns bytes.
fn blocking_read(path: &Path) -> Result<String, String> {
    let mut f = open(path, false).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("read returned 0".into());
    }
    Ok(format!("{n} bytes"))
}

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// A blocking read on a drained device, hit by SIGUSR1 (handler without `SA_RESTART`), must end
/// with EINTR. A refill that lands before the signal satisfies the read instead; then retry.
fn interrupted_read(path: &Path) -> Result<String, String> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let sa = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler is an empty `extern "C"` function, which is async-signal-safe; nothing
    // else in this process relies on SIGUSR1.
    unsafe { sigaction(Signal::SIGUSR1, &sa) }.map_err(|e| format!("sigaction: {e}"))?;
    for attempt in 1..=20 {
        let mut nb = open(path, true).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 131072];
        while nb.read(&mut buf).is_ok() {}
        let p = path.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let _ = tx.send(nix::sys::pthread::pthread_self());
            let mut f = open(&p, false)?;
            let mut b = [0u8; 16];
            f.read(&mut b)
        });
        let tid = rx.recv().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(30));
        let t = Instant::now();
        nix::sys::pthread::pthread_kill(tid, Signal::SIGUSR1).map_err(|e| e.to_string())?;
        match reader.join().map_err(|_| "reader panicked".to_string())? {
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                return Ok(format!(
                    "EINTR {:.1} ms after the signal (attempt {attempt})",
                    t.elapsed().as_secs_f64() * 1e3
                ));
            }
            Err(e) => return Err(format!("expected EINTR, got {e}")),
            Ok(_) => continue, // a refill won the race
        }
    }
    Err("a refill satisfied the read before every signal (20 attempts)".into())
}

/// One throughput measurement: device vs /dev/urandom with the same read size.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub block: usize,
    pub bytes: usize,
    pub device_mb_s: f64,
    pub urandom_mb_s: f64,
}

impl std::fmt::Display for BenchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX} bench block={} bytes={} device_MBps={:.1} urandom_MBps={:.1} ratio={:.2}",
            self.block,
            self.bytes,
            self.device_mb_s,
            self.urandom_mb_s,
            self.device_mb_s / self.urandom_mb_s
        )
    }
}

/// MB/s reading `bytes` from `path` with reads of `bs`.
pub fn throughput(path: &Path, bytes: usize, bs: usize) -> std::io::Result<f64> {
    let mut f = open(path, false)?;
    let mut buf = vec![0u8; bs];
    let mut got = 0;
    let t = Instant::now();
    while got < bytes {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    Ok(got as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// For each block size: waits until the pool holds `bytes` (via `RNDGETENTCNT`, up to
/// `fill_wait`), reads `bytes` from the device, then the same from /dev/urandom.
pub fn bench(
    path: &Path,
    blocks: &[usize],
    bytes: usize,
    fill_wait: Duration,
) -> Result<Vec<BenchRow>, String> {
    let mut rows = Vec::new();
    for &bs in blocks {
        let t = Instant::now();
        while entcnt(path).map_err(|e| format!("RNDGETENTCNT: {e}"))?
            < (bytes * 8).min(i32::MAX as usize) as i32
        {
            if t.elapsed() > fill_wait {
                return Err(format!(
                    "the pool did not reach {bytes} bytes within {fill_wait:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let device_mb_s = throughput(path, bytes, bs).map_err(|e| format!("device: {e}"))?;
        let urandom_mb_s = throughput(Path::new("/dev/urandom"), bytes, bs)
            .map_err(|e| format!("urandom: {e}"))?;
        rows.push(BenchRow {
            block: bs,
            bytes,
            device_mb_s,
            urandom_mb_s,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_windows_counts_overlaps_across_outputs() {
        let a: Vec<u8> = (0..64).collect();
        let b: Vec<u8> = (100..164).collect();
        assert_eq!(super::repeated_windows(&[a.clone(), b]), 0);
        assert_eq!(super::repeated_windows(&[a.clone(), a[10..30].to_vec()]), 5);
    }
}
