//! The `device` source against a real pseudo-terminal pair: raw mode (no byte translated or
//! swallowed), init bytes written on open, a silent device timing out, a vanished one reopened.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::sources::source_from_toml;

struct Pty {
    master: File,
    _slave: File,
    path: String,
}

fn pty() -> Pty {
    let p = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&p.slave).unwrap();
    Pty {
        master: File::from(p.master),
        _slave: File::from(p.slave),
        path: path.display().to_string(),
    }
}

/// Every byte value, with the ones a cooked tty would eat or translate up front.
fn payload() -> Vec<u8> {
    let mut v = vec![
        0x03, 0x04, 0x0d, 0x0a, 0x11, 0x13, 0x1a, 0x7f, 0x1c, 0x15, 0x17, 0x12,
    ];
    v.extend(0..=255u8);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tty_with_init_bytes_delivers_every_byte_unchanged() {
    let mut p = pty();
    let (src, _) = source_from_toml(&format!(
        "type = \"device\"\nid = \"onerng\"\npath = \"{}\"\ninit = \"cmdO\\n\"\ntimeout_ms = 2000",
        p.path
    ));
    let want = payload();
    let n = want.len();
    let mut master = p.master.try_clone().unwrap();
    let sent = want.clone();
    let device = std::thread::spawn(move || {
        // The start command arrives first, then the device talks.
        let mut init = [0u8; 5];
        master.read_exact(&mut init).unwrap();
        master.write_all(&sent).unwrap();
        init
    });
    let got = src.fetch(n).await.unwrap();
    assert_eq!(&device.join().unwrap(), b"cmdO\n");
    assert_eq!(
        got.expose(),
        &want[..],
        "raw mode passes every byte through"
    );
    // A second fetch reuses the open device (no second init) and reads what comes next.
    p.master.write_all(&want[..100]).unwrap();
    let got = src.fetch(100).await.unwrap();
    assert_eq!(got.expose(), &want[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_times_out_within_its_deadline() {
    let p = pty();
    let (src, _) = source_from_toml(&format!(
        "type = \"device\"\npath = \"{}\"\ntimeout_ms = 300",
        p.path
    ));
    let t = Instant::now();
    let e = src.fetch(16).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.reason(), "timeout", "{e}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_device_is_unavailable_and_named() {
    let (src, _) = source_from_toml(
        "type = \"device\"\npath = \"/dev/kirq-no-such-device\"\ntimeout_ms = 300",
    );
    let e = src.fetch(16).await.unwrap_err();
    assert_eq!(e.reason(), "unavailable");
    assert!(e.to_string().contains("/dev/kirq-no-such-device"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_character_device_is_read_without_tty_settings() {
    // /dev/urandom stands in for /dev/hwrng: a character device that is not a tty.
    let (src, _) = source_from_toml("type = \"device\"\npath = \"/dev/urandom\"");
    assert_eq!(src.fetch(4096).await.unwrap().len(), 4096);
    let (src, _) = source_from_toml("type = \"device\"\npath = \"/dev/urandom\"\nraw_tty = true");
    let e = src.fetch(16).await.unwrap_err();
    assert!(e.to_string().contains("not a tty"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_built_at_once_take_turns_at_a_slow_device() {
    // A serial RNG that trickles: 64 bytes every 5 ms, so one 1 KiB read takes about 80 ms.
    let p = pty();
    let mut master = p.master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        loop {
            getrandom::fill(&mut b).unwrap();
            if master.write_all(&b).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let src = source_from_toml(&format!(
        "type = \"device\"\nid = \"trickle\"\npath = \"{}\"\ntimeout_ms = 3000",
        p.path
    ));
    let f = common::sources::factory(vec![src], kirq::config::HybridConfig::default());
    let m = kirq::metrics::HubMetrics::new();
    let (a, b) = tokio::join!(f.build("d1", 1024, &m), f.build("d2", 1024, &m));
    assert!(a.is_ok() && b.is_ok(), "{:?} / {:?}", a.err(), b.err());
    assert_eq!(m.packets_built.get(), 2);
}
