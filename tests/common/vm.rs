//! The qemu VM harness, the only one: [`boot`] runs tests/vm/run.sh, which boots the current
//! Debian kernel under qemu (TCG) with the modules, programs and guest script a test names, and
//! returns the console. Every VM test and benchmark goes through it: the CUSE device
//! (tests/cuse_vm.rs, benches/device.rs: [`prepare`] and [`run`]) and the usb source
//! (tests/source_usb_vm.rs). Guest scripts live beside the runner in tests/vm/.
//!
//! For the CUSE guest, [`prepare`] writes the guest's files (keys, certificates, config and a
//! spool of packets signed on the host for the guest daemon). The guest pool starts from packets built here by a hub whose source is this host's OS RNG:
//! independent of the guest kernel, so crediting them to the guest's pool (`credit_local`) is
//! honest, and nothing in the guest has to wait for its own CRNG before the feeder runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kirq::crypto::falcon::SigningKey;
use kirq::hub::PacketFactory;
use kirq::metrics::HubMetrics;
use kirq::sources::local::LocalSource;

pub const DEVICE_NAME: &str = "kirq-vm0";

/// Where the kernel package and the files taken from it are kept between runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-kernel")
}

pub fn need_vm_tools() {
    for (p, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("dpkg-deb", "dpkg"),
        ("strip", "binutils"),
    ] {
        super::need_program(p, pkg);
    }
}

/// What the guest daemon starts with.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// Packets in the spool and the entropy bytes in each.
    pub packets: usize,
    pub packet_bytes: usize,
    pub capacity: usize,
    /// Seconds without a hub before the guest's own fallback fills the pool (`fill_bytes`).
    pub fallback_after_secs: u64,
    pub fill_bytes: usize,
    /// Bytes read per block size in bench mode.
    pub bench_bytes: usize,
}

impl Guest {
    /// The checks: a small spool, then the fallback refills quickly (poll and EAGAIN checks).
    pub const CHECK: Guest = Guest {
        packets: 16,
        packet_bytes: 16384,
        capacity: 16 << 20,
        fallback_after_secs: 3,
        fill_bytes: 64 * 1024,
        bench_bytes: 0,
    };
    /// The benchmark: a filled pool from the spool alone (no refill competes with the reads).
    pub const BENCH: Guest = Guest {
        packets: 15,
        packet_bytes: 1 << 20,
        capacity: 16 << 20,
        fallback_after_secs: 3600,
        fill_bytes: 64 * 1024,
        bench_bytes: 4 << 20,
    };
}

/// Writes the guest's files into `dir/files` and returns that path.
pub async fn prepare(dir: &Path, g: Guest) -> PathBuf {
    let Guest {
        packets,
        packet_bytes,
        capacity,
        fallback_after_secs,
        fill_bytes,
        bench_bytes,
    } = g;
    let (hub, daemon) = kirq::demo::configs(dir, None).expect("configs");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    for f in [
        "hub-signing.pub",
        "demo-kirqd.crt",
        "demo-kirqd.key",
        "hub-ca.pem",
    ] {
        std::fs::copy(dir.join(f), files.join(f)).expect("copy guest file");
    }
    let key = SigningKey::load(&hub.signing_key).expect("hub key");
    let factory = PacketFactory::new(
        key,
        vec![(
            Box::new(LocalSource::new("vm-host")) as Box<dyn kirq::sources::Source>,
            kirq::sources::SourceSettings::default(),
        )],
        20,
        Duration::ZERO,
        60_000,
        kirq::config::HybridConfig::default(),
    );
    let metrics = HubMetrics::new();
    let mut spool = Vec::new();
    for _ in 0..packets {
        // A 1 MiB packet from a perfect source trips the hub's repetition-count test (cutoff 4
        // at 8 bits per byte) a few percent of the time; that packet is dropped, build another.
        let mut tries = 0;
        let p = loop {
            match factory.build(&daemon.id, packet_bytes, &metrics).await {
                Ok(p) => break p,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("packet dropped by the hub's health tests ({e}); building another");
                }
                Err(e) => panic!("no packet after 20 tries: {e}"),
            }
        };
        spool.extend_from_slice(&kirq::wire::refill::encode([&p[..]]));
    }
    std::fs::write(files.join("spool.bin"), &spool).expect("spool");
    std::fs::write(files.join("name"), DEVICE_NAME).expect("name");
    std::fs::write(files.join("bench_bytes"), bench_bytes.to_string()).expect("bench bytes");
    let mut toml = std::fs::File::create(files.join("kirqd.toml")).expect("config");
    write!(
        toml,
        r#"id = "{id}"
[trust]
hub_keys = ["hub-signing.pub"]
replay_state_file = "replay.state"
[receive]
listen = "{listen}"
cert = "demo-kirqd.crt"
key = "demo-kirqd.key"
hub_ca = "hub-ca.pem"
[pool]
capacity_bytes = {capacity}
[fallback]
after_secs = {fallback_after_secs}
fill_bytes = {fill_bytes}
[device]
mode = "cuse"
name = "{DEVICE_NAME}"
[kernel]
enabled = true
feed_bytes = 16
credit_bits_per_byte = 4
credit_local = true
interval_secs = 60
"#,
        id = daemon.id,
        listen = daemon.receive.listen,
    )
    .expect("write config");
    files
}

/// One VM run: what goes into the guest, and its limits.
pub struct Boot<'a> {
    /// The guest script under tests/vm/ that the guest's /init sources after loading `modules`.
    pub guest: &'a str,
    /// Kernel modules in load order, as paths below the package's `lib/modules/VERSION/kernel/`.
    pub modules: &'a [&'a str],
    /// Programs for the guest: (host path, guest path); shared libraries come along.
    pub programs: &'a [(&'a Path, &'a str)],
    /// Copied to /kirq in the guest.
    pub files: &'a Path,
    pub memory_mb: u32,
    /// How long qemu may run before it is killed.
    pub timeout_secs: u32,
}

/// The modules the CUSE guest loads.
pub const CUSE_MODULES: [&str; 2] = ["fs/fuse/fuse.ko", "fs/fuse/cuse.ko"];

fn command(b: &Boot, work: &Path) -> std::process::Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "10", "600"])
        .arg(root.join("run.sh"))
        .arg(cache_dir())
        .arg(work)
        .arg(root.join(b.guest))
        .arg(b.files)
        .arg(b.modules.join(" "));
    for (src, dst) in b.programs {
        let mut arg = src.as_os_str().to_owned();
        arg.push("=");
        arg.push(dst);
        cmd.arg(arg);
    }
    cmd.env("KIRQ_VM_MEMORY_MB", b.memory_mb.to_string())
        .env("KIRQ_VM_TIMEOUT_SECS", b.timeout_secs.to_string())
        .stdin(std::process::Stdio::null());
    cmd
}

fn console(out: std::io::Result<std::process::Output>) -> String {
    let out = out.expect("run tests/vm/run.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tests/vm/run.sh failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Boots the VM (blocking; `work` is scratch space) and returns its console output. Fails when
/// a tool is missing (with the package to install) or the runner fails.
pub fn boot(b: &Boot, work: &Path) -> String {
    need_vm_tools();
    console(command(b, work).output())
}

/// Boots the CUSE guest with kirqd in `mode` (`check` or `bench`) and returns its console output.
pub async fn run(kirqd: &Path, files: &Path, work: &Path, mode: &str) -> String {
    need_vm_tools();
    std::fs::write(files.join("mode"), mode).expect("mode");
    let mut cmd = command(
        &Boot {
            guest: "cuse.sh",
            modules: &CUSE_MODULES,
            programs: &[(kirqd, "/kirqd")],
            files,
            memory_mb: 768,
            timeout_secs: 240,
        },
        work,
    );
    console(
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join"),
    )
}

/// The result lines (KIRQ-VM / KIRQ-PROBE) of a run, without terminal colour codes.
pub fn results(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("KIRQ-VM") || l.starts_with("KIRQ-PROBE"))
        .map(strip_ansi)
        .collect()
}

fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
