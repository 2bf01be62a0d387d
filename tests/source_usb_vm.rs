//! The `usb` source against an emulated USB device, in a qemu VM (FACTS.md): a Debian kernel with
//! dummy_hcd, and a FunctionFS gadget (usb-gadget crate) with one vendor-class bulk IN endpoint.
//! Inside the VM this same test binary plays both sides: the gadget streams random bytes, and the
//! hub's usb source finds the device by vendor/product/serial, discovers the endpoint, reads; then
//! the gadget is unbound (unplugged), the source fails, the gadget is bound again (replugged) and
//! the source recovers by itself.
//!
//! On the host the test boots the suite's one VM harness (tests/common/vm.rs, tests/vm/run.sh)
//! with the USB gadget modules, this binary and tests/vm/usb.sh as the guest script. The kernel
//! package is fetched once with `apt-get download` into the target directory. A missing tool
//! fails the test with a hint.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::vm;

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

fn host() {
    let work = tempfile::tempdir().unwrap();
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // This test binary plays the guest too (GUEST_ENV set by tests/vm/usb.sh).
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let console = vm::boot(
        &vm::Boot {
            guest: "usb.sh",
            modules: &MODULES,
            programs: &[(&exe, "/bin/kirq-test")],
            files: &files,
            memory_mb: 1024,
            timeout_secs: 300,
        },
        &work.path().join("work"),
    );
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
