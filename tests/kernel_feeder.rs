//! The kernel feeder against the host's /dev/random: RNDADDENTROPY and RNDRESEEDCRNG succeed as
//! root; without CAP_SYS_ADMIN the error names the capability.

mod common;

use kirq::config::KernelFeedConfig;
use kirq::device::testing::{fill, local_daemon};
use kirq::kernel::{FeedError, Feeder};

#[test]
fn feeds_and_reseeds_the_host_kernel() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test feeds the host's /dev/random: run it as root (CAP_SYS_ADMIN)"
    );
    let (_dir, d) = local_daemon();
    fill(&d, 1024);
    let f = Feeder::open().expect("open /dev/random");
    let before = f.entropy_count().expect("RNDGETENTCNT");
    assert!((0..=4096).contains(&before));
    let cfg = KernelFeedConfig::default();
    // Local bytes from this same kernel: mixed in, credited nothing.
    let fed = f
        .feed_from_pool(&d, &cfg, 64, true)
        .expect("RNDADDENTROPY")
        .expect("pool had bytes");
    assert_eq!((fed.bytes, fed.bits), (64, 0));
    f.reseed().expect("RNDRESEEDCRNG");
    assert_eq!(d.pool.len(), 1024 - 64);
    let served = d
        .metrics
        .served_bytes
        .get_or_create(&[("consumer", "kernel".into())])
        .get();
    assert_eq!(served, 64);
    // Crediting bytes whose provenance allows it is accepted too (the 5.18+ driver ignores the
    // credit once the CRNG is ready).
    f.add(&[0x5a; 32], 128).expect("RNDADDENTROPY with credit");
}

#[test]
fn without_cap_sys_admin_the_error_says_so() {
    if std::env::var_os("KIRQ_FEEDER_UNPRIVILEGED_CHILD").is_some() {
        // Child: runs as `nobody`; /dev/random is writable by all but the ioctl is not.
        let f = Feeder::open().expect("open /dev/random");
        match f.add(&[0u8; 8], 0) {
            Err(e @ FeedError::NotPermitted { .. }) => println!("ERROR: {e}"),
            other => panic!("expected NotPermitted, got {other:?}"),
        }
        return;
    }
    common::need_program("setpriv", "util-linux");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "without_cap_sys_admin_the_error_says_so",
            "--nocapture",
        ])
        .env("KIRQ_FEEDER_UNPRIVILEGED_CHILD", "1")
        .output()
        .expect("run setpriv");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("RNDADDENTROPY on /dev/random was refused")
            && text.contains("needs CAP_SYS_ADMIN"),
        "{text}"
    );
}
