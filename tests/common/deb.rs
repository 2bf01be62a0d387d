//! The .deb as the tests build it: cargo-deb over the test build's binaries (stripped) and man
//! pages generated from them. It checks the packaging, not the optimiser, and saves a second full
//! build. Release packages come from `scripts/build-deb.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const KIRQD: &str = env!("CARGO_BIN_EXE_kirqd");
pub const HUB: &str = env!("CARGO_BIN_EXE_kirq-hub");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool and returns its stdout and stderr; fails saying how to install it, or with its
/// output when it fails.
pub fn check(cmd: &mut Command, install_hint: &str) -> String {
    let shown = format!("{cmd:?}");
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}; install it with: {install_hint}"));
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{shown} failed ({}):\n{t}", o.status);
    t
}

/// Man pages from the clap definitions, as `kirqd man` / `kirq-hub man` write them.
pub fn write_man_pages(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for bin in [KIRQD, HUB] {
        check(
            Command::new(bin).arg("man").arg("--out").arg(dir),
            "cargo build",
        );
    }
}

/// Builds `tmp/kirq.deb` from the test build's binaries and returns its path.
pub fn build(tmp: &Path) -> PathBuf {
    // cargo-deb takes `target/release/*` from CARGO_TARGET_DIR: a staging directory with the
    // stripped test binaries, so this never waits on the build lock cargo test holds.
    let stage = tmp.join("stage");
    std::fs::create_dir_all(stage.join("release")).unwrap();
    for (bin, name) in [(KIRQD, "kirqd"), (HUB, "kirq-hub")] {
        check(
            Command::new("strip")
                .arg("-o")
                .arg(stage.join("release").join(name))
                .arg(bin),
            "apt-get install binutils",
        );
    }
    write_man_pages(&root().join("target/man"));
    let deb = tmp.join("kirq.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = check(
        Command::new(cargo)
            .args(["deb", "--no-build", "--no-strip", "--fast", "-o"])
            .arg(&deb)
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &stage),
        "cargo install cargo-deb --locked (scripts/test.sh does)",
    );
    println!("cargo deb: {out}");
    std::fs::remove_dir_all(&stage).unwrap();
    deb
}
