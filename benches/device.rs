//! Device read throughput against /dev/urandom, measured in the same run: the FUSE file on the
//! host, and the CUSE device in a qemu VM (TCG) against the guest's /dev/urandom.
//!
//! `cargo bench --bench device` (or scripts/bench-device.sh) runs the full measurement: 64 MiB
//! per block size on the host, 4 MiB per block size in the VM (from a pool filled by a spool, no
//! refill running). Under `cargo test` it runs a small host-only pass so the code stays working.
//! Needs root (FUSE mount, VM harness).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use kirq::demo::testing::{fill, local_daemon};
use kirq::device::fuse::FuseDevice;
use kirq::device::probe;

const BLOCKS: [usize; 3] = [4096, 65536, 131072];

fn host(bytes: usize) -> Vec<probe::BenchRow> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _g = rt.enter();
    let (_cfg, d) = local_daemon();
    let mnt = tempfile::tempdir().expect("mountpoint");
    let dev = FuseDevice::start(d.device_core(0), mnt.path(), "kirq-rng")
        .expect("FUSE mount (needs root and /dev/fuse)");
    let mut rows = Vec::new();
    for bs in BLOCKS {
        // Fill first, then read: nothing refills the pool while the device is measured.
        let mut left = bytes;
        let mut device_s = 0.0;
        while left > 0 {
            let chunk = left.min(15 << 20);
            assert_eq!(fill(&d, chunk), chunk, "pool fill");
            let mbps = probe::throughput(&dev.path, chunk, bs).expect("device read");
            device_s += chunk as f64 / 1e6 / mbps;
            left -= chunk;
        }
        let urandom = probe::throughput(Path::new("/dev/urandom"), bytes, bs).expect("urandom");
        rows.push(probe::BenchRow {
            block: bs,
            bytes,
            device_mb_s: bytes as f64 / 1e6 / device_s,
            urandom_mb_s: urandom,
        });
    }
    dev.stop();
    rows
}

fn vm() -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        common::vm::need_vm_tools();
        let dir = tempfile::tempdir().expect("tmp");
        let files = common::vm::prepare(dir.path(), common::vm::Guest::BENCH).await;
        let out = common::vm::run(
            Path::new(env!("CARGO_BIN_EXE_kirqd")),
            &files,
            &dir.path().join("work"),
            "bench",
        )
        .await;
        common::vm::results(&out)
    })
}

fn table(title: &str, rows: &[(usize, f64, f64)]) {
    println!("\n{title}");
    println!("| read size | device MB/s | /dev/urandom MB/s | device / urandom |");
    println!("|---|---|---|---|");
    for (bs, dev, ur) in rows {
        println!(
            "| {} KiB | {dev:.1} | {ur:.1} | {:.2} |",
            bs / 1024,
            dev / ur
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bytes = if full { 64 << 20 } else { 1 << 20 };
    let rows = host(bytes);
    for r in &rows {
        println!("{r}");
    }
    table(
        &format!(
            "FUSE file on the host ({} MiB per read size, {} build)",
            bytes >> 20,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
        &rows
            .iter()
            .map(|r| (r.block, r.device_mb_s, r.urandom_mb_s))
            .collect::<Vec<_>>(),
    );
    if !full {
        return;
    }
    let lines = vm();
    let mut vm_rows = Vec::new();
    for l in &lines {
        println!("{l}");
        if let Some(rest) = l.strip_prefix("KIRQ-PROBE bench ") {
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            vm_rows.push((
                field("block=") as usize,
                field("device_MBps="),
                field("urandom_MBps="),
            ));
        }
    }
    assert_eq!(
        vm_rows.len(),
        3,
        "the VM printed no bench rows:\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("KIRQ-VM check demo-cuse PASS")),
        "kirqd demo --cuse failed in the VM:\n{}",
        lines.join("\n")
    );
    table(
        "CUSE device in a qemu VM, TCG, Debian 6.1 kernel (4 MiB per read size, release kirqd)",
        &vm_rows,
    );
    let _ = Duration::ZERO;
}
