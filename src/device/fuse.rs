//! The FUSE fallback: a mount with one file, `<mountpoint>/<name>`, served by the same
//! [`DeviceCore`] as the CUSE device.
//!
//! The file is opened with `FOPEN_DIRECT_IO` (no page cache: a cached page would hand the same
//! bytes to two readers) and `FOPEN_NONSEEKABLE`; its size reads as 0, like a device. fuser's
//! session loop is one thread, so a read that must wait is answered from a tokio task.
//!
//! Interrupts: fuser 0.18 answers `FUSE_INTERRUPT` with `ENOSYS`, after which the kernel waits for
//! our answer even through SIGKILL. So a waiting read watches its caller instead: every 100 ms it
//! reads the calling thread's signal masks from /proc, and when a signal is pending that is
//! neither blocked nor ignored (or the caller is gone) it answers `EINTR` having taken nothing.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, IoctlFlags, LockOwner,
    OpenFlags, PollEvents, PollFlags, PollNotifier, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyPoll, ReplyWrite, Request, WriteFlags,
};

use super::core::{DevError, DeviceCore};

const FILE_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);

struct DeviceFs {
    core: Arc<DeviceCore>,
    name: String,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

fn errno(e: DevError) -> Errno {
    Errno::from_i32(e.errno())
}

impl DeviceFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let dir = ino == INodeNo::ROOT;
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o440 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl fuser::Filesystem for DeviceFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == OsStr::new(&self.name) {
            reply.entry(&TTL, &self.attr(FILE_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT || ino == FILE_INO {
            reply.attr(&TTL, &self.attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        let fh = self.core.open();
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
        );
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let nonblock = flags.0 & nix::libc::O_NONBLOCK != 0;
        let size = size as usize;
        if nonblock || !self.core.has_waiters() {
            match self.core.try_read(fh.0, size) {
                Ok(b) => return reply.data(&b),
                Err(DevError::WouldBlock) if !nonblock => {}
                Err(e) => {
                    self.core.count_failure(e);
                    return reply.error(errno(e));
                }
            }
        }
        let core = self.core.clone();
        let pid = req.pid();
        self.rt.spawn(async move {
            let cancel = async move {
                while !signal_pending(pid) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            match core.read(fh.0, size, false, cancel).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(DevError::ReadOnly));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.core.release(fh.0);
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        match self.core.ioctl(cmd, out_size as usize) {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        let kh = ph.handle().0;
        let wake = flags
            .contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY)
            .then(|| {
                Box::new(move || {
                    if let Err(e) = ph.notify() {
                        tracing::debug!(error = %e, "FUSE poll notification failed");
                    }
                }) as Box<dyn FnOnce() + Send>
            });
        let ready = self.core.poll(fh.0, kh, wake);
        reply.poll(if ready {
            events & PollEvents::POLLIN
        } else {
            PollEvents::empty()
        });
    }
}

/// True when thread `tid` has a signal pending that it neither blocks nor ignores (it would be
/// interrupted), or when it no longer exists. Reads `/proc/<tid>/status`.
fn signal_pending(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => deliverable_signals(&status) != 0,
        Err(_) => true,
    }
}

/// `(SigPnd | ShdPnd) & !SigBlk & !SigIgn` from a /proc status text.
fn deliverable_signals(status: &str) -> u64 {
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") & !mask("SigIgn:")
}

/// A mounted FUSE fallback; dropping it (or [`FuseDevice::stop`]) unmounts.
#[derive(Debug)]
pub struct FuseDevice {
    core: Arc<DeviceCore>,
    session: Option<fuser::BackgroundSession>,
    notifier: tokio::task::JoinHandle<()>,
    pub path: std::path::PathBuf,
}

impl FuseDevice {
    /// Mounts `mountpoint` (created if missing) with one file `name`. Must run inside a tokio
    /// runtime. Root mounts with `allow_other` so the file's mode decides who reads.
    pub fn start(core: Arc<DeviceCore>, mountpoint: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(mountpoint)?;
        let rt = tokio::runtime::Handle::current();
        let uid = nix::unistd::geteuid().as_raw();
        let fs = DeviceFs {
            core: core.clone(),
            name: name.to_owned(),
            rt: rt.clone(),
            uid,
            gid: nix::unistd::getegid().as_raw(),
            started: SystemTime::now(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("kirq".into()),
            fuser::MountOption::Subtype("kirq-rng".into()),
            fuser::MountOption::RO,
            fuser::MountOption::NoExec,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
            fuser::MountOption::DefaultPermissions,
        ];
        if uid == 0 {
            config.acl = fuser::SessionACL::All;
        }
        let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
            anyhow::anyhow!(
                "cannot mount the FUSE fallback on {}: {e}",
                mountpoint.display()
            )
        })?;
        let notifier = rt.spawn(core.clone().poll_notifier());
        let path = mountpoint.join(name);
        tracing::info!(path = %path.display(), "FUSE device file mounted");
        Ok(Self {
            core,
            session: Some(session),
            notifier,
            path,
        })
    }

    fn shutdown(&mut self) {
        self.notifier.abort();
        self.core.clear_pollers();
        if let Some(s) = self.session.take()
            && let Err(e) = s.umount_and_join()
        {
            // EBUSY: a reader still holds the file open (blocked in read). Detach the mount
            // now; the kernel ends it when the last reader lets go, instead of leaving a dead
            // mount behind this process (found by tests/faults_root.rs, SIGTERM during a read).
            let mountpoint = self.path.parent().unwrap_or(&self.path);
            match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => tracing::info!(error = %e, "FUSE mount busy; detached lazily"),
                Err(e2) => tracing::warn!(error = %e, lazy = %e2, "FUSE unmount failed"),
            }
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }
}

impl Drop for FuseDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deliverable_signals_from_proc_status() {
        let st = "Name:\tpython3\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000200\n\
                  SigBlk:\t0000000000000000\nSigIgn:\t0000000001001000\nSigCgt:\t0\n";
        assert_eq!(super::deliverable_signals(st), 0x200); // SIGUSR1 (10) pending
        let blocked = st.replace("SigBlk:\t0000000000000000", "SigBlk:\t0000000000000200");
        assert_eq!(super::deliverable_signals(&blocked), 0);
        let ignored = st.replace("SigIgn:\t0000000001001000", "SigIgn:\t0000000001001200");
        assert_eq!(super::deliverable_signals(&ignored), 0);
        assert!(!super::signal_pending(std::process::id()));
        assert!(super::signal_pending(u32::MAX));
    }
}
