//! `/dev/<name>` through CUSE, written by hand (no maintained crate speaks CUSE).
//!
//! Split as fuser splits FUSE: [`abi`] (the kernel's structs, read and written field by field),
//! [`request`] (bytes → typed request) and [`reply`] (typed reply → bytes) are pure and unit
//! tested with byte fixtures; [`dev`] owns the /dev/cuse descriptor. [`Server::handle`] dispatches
//! one message to the shared [`DeviceCore`]: reads that can be answered at once are answered on
//! the server thread; a read that must wait becomes a task that an `INTERRUPT` can cancel.
//! Ioctls use restricted mode (sizes from the `_IOC` bits), which is all `RNDGETENTCNT` needs.

pub mod abi;
pub mod dev;
pub mod reply;
pub mod request;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abi::*;
use request::{Operation, ParseError};

use super::core::{DevError, DeviceCore, MAX_READ};
use crate::util::lock;

/// Where replies go: /dev/cuse in production, a buffer in tests.
pub trait ReplySink: Send + Sync + 'static {
    fn send(&self, msg: &[u8]) -> std::io::Result<()>;
}

impl ReplySink for dev::CuseDev {
    fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        dev::CuseDev::send(self, msg)
    }
}

/// Largest write accepted (writes are refused, but the kernel still sends their data).
const MAX_WRITE: u32 = 4096;
/// Read buffer for /dev/cuse: a whole request of the largest kind, never under 8 KiB.
pub const RECV_BUF: usize = FUSE_MIN_READ_BUFFER + MAX_WRITE as usize + 4096;

/// One CUSE connection's dispatcher.
pub struct Server {
    core: Arc<DeviceCore>,
    sink: Arc<dyn ReplySink>,
    name: String,
    rt: tokio::runtime::Handle,
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    initialized: AtomicBool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("cuse::Server")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(
        core: Arc<DeviceCore>,
        sink: Arc<dyn ReplySink>,
        name: &str,
        rt: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            core,
            sink,
            name: name.to_owned(),
            rt,
            pending: Mutex::new(HashMap::new()),
            initialized: AtomicBool::new(false),
        })
    }

    pub fn initialized(&self) -> bool {
        self.initialized.load(Ordering::SeqCst)
    }

    fn send(&self, msg: &[u8]) {
        if let Err(e) = self.sink.send(msg) {
            // ENOENT: the kernel no longer waits for this request (interrupted); not an error.
            if e.raw_os_error() != Some(nix::libc::ENOENT) {
                tracing::warn!(error = %e, "CUSE reply failed");
            }
        }
    }

    fn fail(&self, unique: u64, e: DevError) {
        self.send(&reply::error(unique, e.errno()));
    }

    /// Dispatches one message read from /dev/cuse.
    pub fn handle(self: &Arc<Self>, msg: &[u8]) {
        let req = match request::parse(msg) {
            Ok(r) => r,
            Err(e) => return self.malformed(e),
        };
        let unique = req.header.unique;
        match req.op {
            Operation::CuseInit(init) => {
                if init.major != FUSE_KERNEL_VERSION {
                    tracing::error!(
                        major = init.major,
                        "CUSE_INIT: unsupported FUSE major version"
                    );
                    return self.send(&reply::error(unique, nix::libc::EPROTO));
                }
                let out = CuseInitOut {
                    major: FUSE_KERNEL_VERSION,
                    minor: init.minor.min(FUSE_KERNEL_MINOR_VERSION),
                    flags: 0, // restricted ioctls
                    max_read: MAX_READ as u32,
                    max_write: MAX_WRITE,
                    dev_major: 0, // dynamic
                    dev_minor: 0,
                };
                self.send(&reply::cuse_init(unique, &out, &self.name));
                self.initialized.store(true, Ordering::SeqCst);
                tracing::info!(
                    device = %format!("/dev/{}", self.name),
                    kernel_minor = init.minor,
                    "CUSE device registered"
                );
            }
            Operation::Open(_) => {
                let fh = self.core.open();
                self.send(&reply::open(
                    unique,
                    fh,
                    FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE,
                ));
            }
            Operation::Read(a) => {
                self.read(unique, a.fh, a.size as usize, a.flags & O_NONBLOCK != 0)
            }
            Operation::Write { .. } => self.fail(unique, DevError::ReadOnly),
            Operation::Ioctl { arg, .. } => match self.core.ioctl(arg.cmd, arg.out_size as usize) {
                Ok(out) => self.send(&reply::ioctl(unique, 0, &out)),
                Err(e) => self.fail(unique, e),
            },
            Operation::Poll(p) => {
                let wake = (p.flags & FUSE_POLL_SCHEDULE_NOTIFY != 0).then(|| {
                    let sink = self.sink.clone();
                    let kh = p.kh;
                    Box::new(move || {
                        if let Err(e) = sink.send(&reply::notify_poll(kh)) {
                            tracing::debug!(error = %e, "FUSE_NOTIFY_POLL failed");
                        }
                    }) as Box<dyn FnOnce() + Send>
                });
                let revents = if self.core.poll(p.fh, p.kh, wake) {
                    POLLIN & p.events
                } else {
                    0
                };
                self.send(&reply::poll(unique, revents));
            }
            Operation::Flush { .. } => self.send(&reply::empty(unique)),
            Operation::Release(r) => {
                self.core.release(r.fh);
                self.send(&reply::empty(unique));
            }
            Operation::Interrupt(i) => {
                if let Some(tx) = lock(&self.pending).remove(&i.unique) {
                    let _ = tx.send(());
                }
            }
            Operation::Forget => {}
            Operation::Other(op) => {
                tracing::debug!(opcode = op, "CUSE request not implemented");
                self.fail(unique, DevError::NoSys);
            }
        }
    }

    fn malformed(&self, e: ParseError) {
        self.core.count_failure(DevError::Invalid);
        tracing::warn!(error = %e, detail = %e.error, "malformed CUSE request");
        if let Some(u) = e.unique
            && !matches!(
                e.opcode,
                Some(FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT)
            )
        {
            self.send(&reply::error(u, nix::libc::EINVAL));
        }
    }

    fn read(self: &Arc<Self>, unique: u64, fh: u64, size: usize, nonblock: bool) {
        // First try on this thread; a read that must wait (or queue behind waiters) is a task.
        if nonblock || !self.core.has_waiters() {
            let max = size.min(MAX_READ);
            match reply::data_with(unique, max, |dst| self.core.try_read_into(fh, dst)) {
                Ok(msg) => return self.send(&msg),
                Err(DevError::WouldBlock) if !nonblock => {}
                Err(e) => {
                    self.core.count_failure(e);
                    return self.fail(unique, e);
                }
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.pending).insert(unique, tx);
        let me = self.clone();
        self.rt.spawn(async move {
            let cancel = async {
                // A dropped sender (server gone) also ends the wait.
                let _ = rx.await;
            };
            let r = me.core.read(fh, size, false, cancel).await;
            lock(&me.pending).remove(&unique);
            match r {
                Ok(b) => me.send(&reply::data(unique, &b)),
                Err(e) => me.fail(unique, e),
            }
        });
    }
}

/// A running CUSE device; dropping it (or [`CuseDevice::stop`]) removes the node.
#[derive(Debug)]
pub struct CuseDevice {
    core: Arc<DeviceCore>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    notifier: tokio::task::JoinHandle<()>,
    pub name: String,
}

impl CuseDevice {
    /// Opens /dev/cuse and serves `/dev/<name>` from `core` on a dedicated thread. Returns once
    /// the kernel has accepted CUSE_INIT (or after 5 s with an error).
    pub fn start(core: Arc<DeviceCore>, name: &str) -> anyhow::Result<Self> {
        let dev = Arc::new(dev::CuseDev::open()?);
        let rt = tokio::runtime::Handle::current();
        let notifier = rt.spawn(core.clone().poll_notifier());
        let server = Server::new(core.clone(), dev.clone(), name, rt);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kirq-cuse".into())
                .spawn(move || serve(dev, server, stop, ready_tx))?
        };
        let mut this = Self {
            core,
            stop,
            thread: Some(thread),
            notifier,
            name: name.to_owned(),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(this),
            Ok(Err(e)) => {
                this.shutdown();
                Err(anyhow::anyhow!("CUSE session failed before CUSE_INIT: {e}"))
            }
            Err(_) => {
                this.shutdown();
                Err(anyhow::anyhow!("the kernel sent no CUSE_INIT within 5 s"))
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notifier.abort();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Poll wakeups hold the /dev/cuse fd; the node goes when the last holder closes it.
        self.core.clear_pollers();
    }

    /// Stops serving; the kernel removes the node when /dev/cuse closes.
    pub fn stop(mut self) {
        self.shutdown();
    }
}

impl Drop for CuseDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    dev: Arc<dev::CuseDev>,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut announced = false;
    // On exit, end the reads still waiting (their tasks hold the server and its fd).
    struct EndWaits<'a>(&'a Server);
    impl Drop for EndWaits<'_> {
        fn drop(&mut self) {
            lock(&self.0.pending).clear();
        }
    }
    let _end = EndWaits(&server);
    while !stop.load(Ordering::SeqCst) {
        match dev.recv(&mut buf, Duration::from_millis(200)) {
            Ok(Some(n)) => server.handle(&buf[..n]),
            Ok(None) => {}
            Err(e) => {
                if !announced {
                    let _ = ready.send(Err(e.to_string()));
                }
                tracing::error!(error = %e, "CUSE session ended");
                return;
            }
        }
        if !announced && server.initialized() {
            announced = true;
            let _ = ready.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::request::tests::msg;
    use super::*;
    use crate::demo::testing::{fill, local_daemon};

    #[derive(Default)]
    struct Sent(Mutex<Vec<Vec<u8>>>);

    impl ReplySink for Sent {
        fn send(&self, m: &[u8]) -> std::io::Result<()> {
            lock(&self.0).push(m.to_vec());
            Ok(())
        }
    }

    fn take(s: &Sent) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&s.0))
    }

    fn err_of(m: &[u8]) -> i32 {
        i32::from_le_bytes([m[4], m[5], m[6], m[7]])
    }

    fn read_body(fh: u64, size: u32, flags: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&fh.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    /// A daemon, its device core and a dispatcher whose replies are collected in `Sent`.
    fn session() -> (
        tempfile::TempDir,
        Arc<crate::daemon::Daemon>,
        Arc<DeviceCore>,
        Arc<Sent>,
        Arc<Server>,
    ) {
        let (dir, d) = local_daemon();
        let core = d.device_core(0);
        let sent = Arc::new(Sent::default());
        let srv = Server::new(
            core.clone(),
            sent.clone(),
            "kirq-rng",
            tokio::runtime::Handle::current(),
        );
        (dir, d, core, sent, srv)
    }

    #[tokio::test]
    async fn a_session_through_the_dispatcher() {
        let (_dir, d, core, sent, srv) = session();
        let notifier = tokio::spawn(core.clone().poll_notifier());

        let init = [7u32, 38, 0, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        srv.handle(&msg(CUSE_INIT, 1, &init));
        let r = take(&sent);
        assert!(r[0].ends_with(b"DEVNAME=kirq-rng\0"));
        assert!(srv.initialized());

        srv.handle(&msg(FUSE_OPEN, 2, &[0; 8]));
        let r = take(&sent);
        let fh = u64::from_le_bytes(r[0][16..24].try_into().unwrap());

        // Empty pool, O_NONBLOCK: EAGAIN.
        srv.handle(&msg(FUSE_READ, 3, &read_body(fh, 4096, O_NONBLOCK)));
        assert_eq!(err_of(&take(&sent)[0]), -nix::libc::EAGAIN);

        // Blocking read waits; INTERRUPT answers EINTR and takes nothing.
        srv.handle(&msg(FUSE_READ, 4, &read_body(fh, 4096, 0)));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(take(&sent).is_empty());
        srv.handle(&msg(FUSE_INTERRUPT, 5, &4u64.to_le_bytes()));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let r = take(&sent);
        assert_eq!((r.len(), err_of(&r[0])), (1, -nix::libc::EINTR));

        // Poll on an empty pool: no POLLIN, then FUSE_NOTIFY_POLL when bytes arrive.
        let poll = [
            &fh.to_le_bytes()[..],
            &99u64.to_le_bytes(),
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
        ]
        .concat();
        srv.handle(&msg(FUSE_POLL, 6, &poll));
        assert_eq!(take(&sent)[0][16..20], 0u32.to_le_bytes());
        fill(&d, 100);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = take(&sent);
        assert_eq!(r, vec![reply::notify_poll(99)]);
        srv.handle(&msg(FUSE_POLL, 7, &poll));
        assert_eq!(take(&sent)[0][16..20], POLLIN.to_le_bytes());

        // Ioctls: RNDGETENTCNT answers 800 bits; TCGETS is ENOTTY.
        let ioctl = |cmd: u32, out: u32| {
            [
                &fh.to_le_bytes()[..],
                &0u32.to_le_bytes(),
                &cmd.to_le_bytes(),
                &0u64.to_le_bytes(),
                &0u32.to_le_bytes(),
                &out.to_le_bytes(),
            ]
            .concat()
        };
        srv.handle(&msg(FUSE_IOCTL, 8, &ioctl(0x8004_5200, 4)));
        assert_eq!(take(&sent)[0][32..36], 800i32.to_le_bytes());
        srv.handle(&msg(FUSE_IOCTL, 9, &ioctl(0x5401, 60)));
        assert_eq!(err_of(&take(&sent)[0]), -nix::libc::ENOTTY);

        // A read gets the bytes once; a write is refused; unknown opcodes ENOSYS; FORGET silent.
        srv.handle(&msg(FUSE_READ, 10, &read_body(fh, 4096, 0)));
        let r = take(&sent);
        assert_eq!(r[0].len(), 16 + 100);
        let mut w = read_body(fh, 3, 0);
        w.extend_from_slice(&[1, 2, 3]);
        srv.handle(&msg(FUSE_WRITE, 11, &w));
        assert_eq!(err_of(&take(&sent)[0]), -nix::libc::EPERM);
        srv.handle(&msg(FUSE_FSYNC, 12, &[0; 16]));
        assert_eq!(err_of(&take(&sent)[0]), -nix::libc::ENOSYS);
        srv.handle(&msg(FUSE_FORGET, 13, &[0; 8]));
        assert!(take(&sent).is_empty());

        // Malformed: answered EINVAL, counted, nothing taken.
        fill(&d, 10);
        srv.handle(&msg(FUSE_READ, 14, &[0; 12]));
        assert_eq!(err_of(&take(&sent)[0]), -nix::libc::EINVAL);
        assert_eq!(d.pool.len(), 10);
        let bad = d
            .metrics
            .requests
            .get_or_create(&[
                ("consumer", "device".into()),
                ("outcome", "bad_request".into()),
            ])
            .get();
        assert_eq!(bad, 1);

        srv.handle(&msg(FUSE_FLUSH, 15, &[0; 24]));
        srv.handle(&msg(
            FUSE_RELEASE,
            16,
            &[&fh.to_le_bytes()[..], &[0; 16]].concat(),
        ));
        let r = take(&sent);
        assert_eq!((r.len(), err_of(&r[0]), err_of(&r[1])), (2, 0, 0));
        assert_eq!(core.open_files(), 0);
        notifier.abort();
    }

    /// Memory a reader cannot grow: 100,000 `FUSE_POLL`s asking for a wakeup, on one handle and
    /// on 100,000 handles, keep the registered wakeups bounded (each holds the reply sink), and
    /// every poller still hears of the next arrival: the live ones when bytes come, any that
    /// had to make room earlier (a spurious wakeup makes the kernel poll again).
    #[tokio::test]
    async fn a_reader_cannot_grow_the_daemons_memory_with_polls() {
        let (_dir, d, core, sent, srv) = session();
        let init = [7u32, 38, 0, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        srv.handle(&msg(CUSE_INIT, 1, &init));
        srv.handle(&msg(FUSE_OPEN, 2, &[0; 8]));
        let r = take(&sent);
        let fh = u64::from_le_bytes(r[1][16..24].try_into().unwrap());
        let base = Arc::strong_count(&sent);
        let poll = |kh: u64| {
            [
                &fh.to_le_bytes()[..],
                &kh.to_le_bytes(),
                &FUSE_POLL_SCHEDULE_NOTIFY.to_le_bytes(),
                &POLLIN.to_le_bytes(),
            ]
            .concat()
        };
        // Notified handles, from the messages sent (unique 0 marks a notification).
        let mut notified = std::collections::HashSet::new();
        let drain = |notified: &mut std::collections::HashSet<u64>| {
            for m in take(&sent) {
                if m[8..16] == [0; 8] {
                    notified.insert(u64::from_le_bytes(m[16..24].try_into().unwrap()));
                }
            }
        };
        const N: u64 = 100_000;
        for i in 0..N {
            srv.handle(&msg(FUSE_POLL, 10 + i, &poll(7)));
            if i % 1024 == 0 {
                drain(&mut notified);
            }
        }
        drain(&mut notified);
        let same_handle = Arc::strong_count(&sent) - base;
        for i in 0..N {
            srv.handle(&msg(FUSE_POLL, 10 + N + i, &poll(1_000 + i)));
            if i % 1024 == 0 {
                drain(&mut notified);
            }
        }
        drain(&mut notified);
        let many_handles = Arc::strong_count(&sent) - base;
        assert!(
            same_handle <= 1,
            "{same_handle} wakeups kept for one poll handle"
        );
        assert!(
            many_handles <= 1024,
            "{many_handles} wakeups kept for {N} poll handles"
        );
        // Bytes arrive: every poller has been told, and nothing stays registered.
        let notifier = tokio::spawn(core.clone().poll_notifier());
        fill(&d, 100);
        tokio::time::sleep(Duration::from_millis(100)).await;
        drain(&mut notified);
        assert!(notified.contains(&7), "the first handle was never woken");
        let missing = (1_000..1_000 + N)
            .filter(|kh| !notified.contains(kh))
            .count();
        assert_eq!(missing, 0, "{missing} pollers never woken");
        assert_eq!(Arc::strong_count(&sent), base);
        notifier.abort();
    }
}
