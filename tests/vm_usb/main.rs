//! The `usb` source against an emulated USB device, in a qemu VM (FACTS.md): a Debian kernel with
//! dummy_hcd, and a FunctionFS gadget (usb-gadget crate) with one vendor-class bulk IN endpoint.
//! Inside the VM this same test binary plays both sides: the gadget streams random bytes, and the
//! hub's usb source finds the device by vendor/product/serial, discovers the endpoint, reads; then
//! the gadget is unbound (unplugged), the source fails, the gadget is bound again (replugged) and
//! the source recovers by itself.
//!
//! On the host the test builds an initramfs (busybox, the kernel modules, this binary and its
//! shared libraries) and boots it under qemu (TCG). The kernel package is fetched once with
//! `apt-get download` into the target directory. A missing tool fails the test with a hint.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GUEST_ENV: &str = "KIRQ_VM_GUEST";
const PREFIX: &str = "KIRQ-VM:";
const VID: u16 = 0x1209; // pid.codes test vendor
const PID: u16 = 0x0001;
const SERIAL: &str = "kirq-vm-1";
/// Module load order (each depends only on the ones before it).
const MODULES: [&str; 7] = [
    "drivers/usb/common/usb-common.ko",
    "drivers/usb/core/usbcore.ko",
    "fs/configfs/configfs.ko",
    "drivers/usb/gadget/udc/udc-core.ko",
    "drivers/usb/gadget/libcomposite.ko",
    "drivers/usb/gadget/function/usb_f_fs.ko",
    "drivers/usb/gadget/udc/dummy_hcd.ko",
];

#[test]
fn usb_source_in_qemu_vm() {
    if std::env::var_os(GUEST_ENV).is_some() {
        guest();
    } else {
        host();
    }
}

fn need(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{tool} is missing: install it with `apt-get install {package}` (scripts/test.sh installs scripts/apt-packages.txt)"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel and the modules, from the Debian kernel package (downloaded once).
fn kernel(cache: &Path) -> (PathBuf, PathBuf) {
    let lookup = || {
        let depends = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        depends
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
            .map(|v| format!("linux-image-{v}"))
    };
    // apt's lists may be missing on a fresh machine: update once (CI runs as root).
    let pkg = lookup()
        .or_else(|| {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            lookup()
        })
        .unwrap_or_else(|| {
            panic!("apt knows no linux-image-amd64: run `apt-get update` (as root) and retry")
        });
    let ver = pkg.trim_start_matches("linux-image-").to_owned();
    let root = cache.join(&ver);
    let vmlinuz = root.join(format!("boot/vmlinuz-{ver}"));
    let mods = root.join(format!("lib/modules/{ver}/kernel"));
    if vmlinuz.exists() && MODULES.iter().all(|m| mods.join(m).exists()) {
        return (vmlinuz, mods);
    }
    std::fs::create_dir_all(&root).unwrap();
    run(Command::new("apt-get")
        .arg("download")
        .arg(&pkg)
        .current_dir(&root));
    let deb = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("apt-get download left no .deb");
    let mut members = vec![format!("./boot/vmlinuz-{ver}")];
    members.extend(
        MODULES
            .iter()
            .map(|m| format!("./lib/modules/{ver}/kernel/{m}")),
    );
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x {}",
        deb.display(),
        members.join(" ")
    );
    run(Command::new("sh").arg("-c").arg(script).current_dir(&root));
    std::fs::remove_file(&deb).unwrap();
    (vmlinuz, mods)
}

/// Copies `src` to `root/dst` (relative), creating directories.
fn put(root: &Path, src: &Path, dst: &str) {
    let to = root.join(dst.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(src, &to).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}

fn host() {
    let qemu = need("qemu-system-x86_64", "qemu-system-x86");
    let busybox = need("busybox", "busybox-static");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-kernel");
    let (vmlinuz, mods) = kernel(&cache);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    put(&root, &busybox, "bin/busybox");
    for m in MODULES {
        let name = Path::new(m).file_name().unwrap().to_str().unwrap();
        put(&root, &mods.join(m), &format!("lib/modules/{name}"));
    }
    // This test binary, without debug info, and the shared libraries it needs.
    let exe = std::env::current_exe().unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&exe)
        .arg(root.join("bin/kirq-test")));
    for line in run(Command::new("ldd").arg(&exe)).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            put(&root, &p, p.to_str().unwrap());
        }
    }
    let loads: String = MODULES
        .iter()
        .map(|m| {
            let name = Path::new(m).file_name().unwrap().to_str().unwrap();
            format!("insmod /lib/modules/{name} || echo '{PREFIX} insmod {name} failed'\n")
        })
        .collect();
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\n\
         mkdir -p /proc /sys /dev /tmp\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n{loads}mount -t configfs configfs /sys/kernel/config\n\
         {GUEST_ENV}=1 /bin/kirq-test --exact usb_source_in_qemu_vm --nocapture --test-threads=1\n\
         echo \"{PREFIX} exit $?\"\npoweroff -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    run(Command::new("chmod").arg("755").arg(root.join("init")));
    let initrd = work.path().join("initrd.gz");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | '{}' cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
            busybox.display(),
            initrd.display()
        ))
        .current_dir(&root));
    let t = Instant::now();
    let out = Command::new("timeout")
        .arg("300")
        .arg(&qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-nodefaults", "-serial", "stdio", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = console.lines().filter(|l| l.contains(PREFIX)).collect();
    println!("VM run took {:?}:\n{}", t.elapsed(), lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.ends_with("exit 0")) && lines.iter().any(|l| l.ends_with("PASS")),
        "the USB test in the VM failed; console:\n{console}"
    );
}

fn say(msg: impl std::fmt::Display) {
    println!("{PREFIX} {msg}");
}

/// Inside the VM: the gadget and the source.
fn guest() {
    use usb_gadget::function::custom::{Custom, Endpoint, EndpointDirection, Interface};
    use usb_gadget::{Class, Config, Gadget, Id, Strings, default_udc};

    let (mut tx, dir) = EndpointDirection::device_to_host();
    let (custom, handle) = Custom::builder()
        .with_interface(
            Interface::new(Class::vendor_specific(0xff, 0), "kirq rng")
                .with_endpoint(Endpoint::bulk(dir)),
        )
        .build();
    let udc = default_udc().expect("no UDC: is dummy_hcd loaded?");
    let reg = Gadget::new(
        Class::vendor_specific(0xff, 0),
        Id::new(VID, PID),
        Strings::new("Kirq", "emulated RNG", SERIAL),
    )
    .with_config(Config::new("rng").with_function(handle))
    .bind(&udc)
    .expect("cannot bind the gadget");
    say("gadget bound");
    // The device side: stream random bytes whenever the host reads.
    std::thread::spawn(move || {
        let _keep = custom;
        loop {
            let Ok(size) = tx.max_packet_size() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let mut b = vec![0u8; size * 8];
            getrandom::fill(&mut b).unwrap();
            if tx
                .send_timeout(b.into(), Duration::from_millis(200))
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c: kirq::config::SourceConfig = toml::from_str(&format!(
            "type = \"usb\"\nid = \"emulated\"\nvendor_id = {VID}\nproduct_id = {PID}\n\
             serial = \"{SERIAL}\"\ntimeout_ms = 3000"
        ))
        .unwrap();
        let (src, _) = kirq::sources::make_source(&c).unwrap();
        let until_ok = |what: &'static str| {
            let src = &src;
            async move {
                let t = Instant::now();
                loop {
                    match src.fetch(4096).await {
                        Ok(b) => return (b, t.elapsed()),
                        Err(e) if t.elapsed() > Duration::from_secs(30) => {
                            panic!("{what}: no bytes after 30 s: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        };
        let (first, took) = until_ok("enumeration").await;
        say(format!("first 4096 bytes after {took:?}"));
        let mut t = kirq::health::HealthTester::new(30, 8.0);
        t.feed(first.expose()).unwrap();
        let start = Instant::now();
        let big = src.fetch(1 << 20).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        t.feed(big.expose()).unwrap();
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        say(format!(
            "read 1 MiB at {:.1} MiB/s (TCG, {build} build); health tests pass",
            1.0 / secs
        ));

        reg.bind(None).unwrap();
        say("gadget unbound (unplugged)");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = src.fetch(4096).await.unwrap_err();
        say(format!("fetch while unplugged: {e}"));
        assert!(matches!(e.reason(), "unavailable" | "timeout"), "{e}");

        reg.bind(Some(&udc)).unwrap();
        say("gadget bound again (replugged)");
        let (again, took) = until_ok("replug").await;
        assert_eq!(again.len(), 4096);
        say(format!("recovered after {took:?}"));
        say("PASS");
    });
}
