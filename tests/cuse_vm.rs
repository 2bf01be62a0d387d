//! CUSE on a real kernel: a Debian kernel with cuse.ko booted under qemu (TCG), kirqd serving
//! /dev/kirq-vm0 in the guest with the kernel feeder on. The guest prints one line per check
//! (tests/vm/cuse.sh); this test prints them all and requires every one to pass. Needs qemu,
//! busybox-static, cpio and apt access to the Debian kernel package on the first run (cached in
//! target/tmp/vm-kernel afterwards).

mod common;

use common::vm;

fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no `{prefix}` line in the VM output:\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuse_device_and_kernel_feeder_in_a_vm() {
    vm::need_vm_tools();
    let dir = tempfile::tempdir().expect("tmp");
    let files = vm::prepare(dir.path(), vm::Guest::CHECK).await;
    let t = std::time::Instant::now();
    let out = vm::run(
        std::path::Path::new(env!("CARGO_BIN_EXE_kirqd")),
        &files,
        &dir.path().join("work"),
        "check",
    )
    .await;
    let lines = vm::results(&out);
    for l in &lines {
        println!("{l}");
    }
    println!("KIRQ-VM test wall_s={:.1}", t.elapsed().as_secs_f64());
    let failed: Vec<_> = lines.iter().filter(|l| l.contains(" FAIL ")).collect();
    assert!(
        failed.is_empty(),
        "checks failed:\n{}\n\nconsole:\n{out}",
        failed
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for name in [
        "KIRQ-VM check modules-loaded PASS",
        "KIRQ-VM check node-appears PASS",
        "KIRQ-VM check dd-4k-64k PASS",
        "KIRQ-PROBE check concurrent-readers-distinct PASS",
        "KIRQ-PROBE check ioctl-rndgetentcnt PASS",
        "KIRQ-PROBE check ioctl-tcgets-enotty PASS",
        "KIRQ-PROBE check nonblock-eagain PASS",
        "KIRQ-PROBE check poll-wakes-on-refill PASS",
        "KIRQ-PROBE check interrupt-eintr PASS",
        "KIRQ-PROBE check blocking-read PASS",
        "KIRQ-VM check feeder-reseed PASS",
        "KIRQ-VM check node-disappears PASS",
    ] {
        line(&lines, name);
    }
    assert!(
        line(&lines, "KIRQ-VM check node-appears").contains(&format!("/dev/{}", vm::DEVICE_NAME))
    );
    // The credit showed in the kernel's count while the CRNG was not ready yet.
    let credited = lines
        .iter()
        .filter(|l| l.contains("kernel pool credited"))
        .find_map(|l| {
            let num = |k: &str| {
                l.split(k)
                    .nth(1)?
                    .split(|c: char| !c.is_ascii_digit() && c != '-')
                    .next()?
                    .parse::<i64>()
                    .ok()
            };
            let (bits, before, after) = (
                num("credited_bits=")?,
                num("entropy_avail_before=")?,
                num("entropy_avail_after=")?,
            );
            (bits > 0 && after > before).then_some((bits, before, after))
        });
    assert!(
        credited.is_some(),
        "no credited round raised entropy_avail:\n{}",
        lines.join("\n")
    );
}
