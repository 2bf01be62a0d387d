//! The `pkcs11` source against SoftHSM2: a token made in a temporary SOFTHSM2_CONF, found by
//! label; a wrong PIN, a missing token and a missing module each give a clear, PIN-free error.
//!
//! SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, once per process, so the test
//! makes the token, then runs the checks in a child copy of this test binary with that variable
//! set (no process-wide `set_var` while other threads run).
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::sources::{factory, source_from_toml};
use kirq::config::HybridConfig;
use kirq::metrics::HubMetrics;
use kirq::wire::{Packet, SourceKind};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "kirq-test";
const PIN: &str = "4711-user-pin";
const CHILD: &str = "KIRQ_PKCS11_CHILD_DIR";

fn install_hint() -> String {
    "SoftHSM2 is missing: install it with `apt-get install softhsm2` (scripts/test.sh installs \
     everything in scripts/apt-packages.txt)"
        .into()
}

#[test]
fn softhsm2_token() {
    match std::env::var_os(CHILD) {
        Some(dir) => checks(Path::new(&dir)),
        None => parent(),
    }
}

/// Makes the token and runs [`checks`] in a child process with SOFTHSM2_CONF set.
fn parent() {
    assert!(Path::new(MODULE).exists(), "{}", install_hint());
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--so-pin",
            "so-pin-1",
            "--pin",
            PIN,
        ])
        .output()
        .unwrap_or_else(|e| panic!("softhsm2-util: {e}. {}", install_hint()));
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
    std::fs::write(dir.path().join("wrong-pin"), "0000\n").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "softhsm2_token",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the SoftHSM2 checks failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

fn toml(dir: &Path, label: &str, pin: &str, module: &str, chunk: usize) -> String {
    format!(
        "type = \"pkcs11\"\nid = \"hsm-a\"\nmodule = \"{module}\"\ntoken_label = \"{label}\"\n\
         pin_file = \"{}\"\nchunk_bytes = {chunk}",
        dir.join(pin).display()
    )
}

fn checks(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A wrong PIN is fatal and says so, without the PIN. (First: PKCS#11 login state is
        // per process and token, so after a good login any C_Login answers "already logged in".)
        let (bad, _) = source_from_toml(&toml(dir, LABEL, "wrong-pin", MODULE, 4096));
        let e = bad.fetch(16).await.unwrap_err();
        assert_eq!(e.reason(), "fatal", "{e}");
        assert!(e.to_string().contains("CKR_PIN_INCORRECT"), "{e}");
        assert!(
            !e.to_string().contains("0000") && !e.to_string().contains(PIN),
            "{e}"
        );

        // Found by label; any length, in chunks.
        let (src, settings) = source_from_toml(&toml(dir, LABEL, "pin", MODULE, 4096));
        assert_eq!(src.kind(), SourceKind::Hsm);
        let a = src.fetch(10_000).await.unwrap();
        let b = src.fetch(10_000).await.unwrap();
        assert_eq!(a.len(), 10_000);
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{src:?}").contains(PIN));

        // Throughput: 4 KiB calls against 32-byte calls, 4 MiB each.
        let (small, _) = source_from_toml(&toml(dir, LABEL, "pin", MODULE, 32));
        for (name, s) in [("4 KiB", &src), ("32 B", &small)] {
            s.fetch(1).await.unwrap();
            let t = Instant::now();
            s.fetch(4 << 20).await.unwrap();
            let mbps = 4.0 / t.elapsed().as_secs_f64();
            let build = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            println!("C_GenerateRandom in {name} calls: {mbps:.0} MiB/s ({build} build)");
        }

        // Packets from it carry kind hsm.
        let f = factory(vec![(src, settings)], HybridConfig::default());
        let p = f.build("d1", 4096, &HubMetrics::new()).await.unwrap();
        let p = Packet::decode(&p).unwrap().packet;
        assert_eq!(p.provenance[0].kind, SourceKind::Hsm);
        assert_eq!(p.provenance[0].id, "hsm-a");

        // A missing token is fatal and names the label.
        let (gone, _) = source_from_toml(&toml(dir, "no-such-token", "pin", MODULE, 4096));
        let e = gone.fetch(16).await.unwrap_err();
        assert_eq!(e.reason(), "fatal", "{e}");
        assert!(
            e.to_string()
                .contains("no token labelled \"no-such-token\""),
            "{e}"
        );

        // A missing module is fatal and names the path.
        let (nomod, _) = source_from_toml(&toml(dir, LABEL, "pin", "/nonexistent/libp11.so", 4096));
        let e = nomod.fetch(16).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot load PKCS#11 module /nonexistent/libp11.so"),
            "{e}"
        );

        // A missing PIN file stops the source at start, naming the file.
        let c: kirq::config::SourceConfig =
            toml::from_str(&toml(dir, LABEL, "no-pin-file", MODULE, 4096)).unwrap();
        let e = kirq::sources::make_source(&c).unwrap_err();
        assert!(e.to_string().contains("no-pin-file"), "{e}");
    });
}
