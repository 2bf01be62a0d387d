//! Helpers shared by the integration tests that drive real programs and kernels.
#![allow(dead_code)]

pub mod vm;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Fails (never skips) when a program the test needs is missing, naming the Debian package.
pub fn need_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "this test needs `{program}`: install it with `apt-get install {package}` \
         (scripts/test.sh installs scripts/apt-packages.txt)"
    );
}

pub fn need_path(path: &str, hint: &str) {
    assert!(Path::new(path).exists(), "this test needs {path}: {hint}");
}

/// Runs `sh -c script` under coreutils `timeout` (so a hung read cannot hang the test); returns
/// (exit code, stdout, stderr). Runs on a blocking thread: std::process, not tokio's, so a child
/// is reaped no matter which test runtime is alive.
pub async fn sh(script: &str, limit: Duration) -> (i32, Vec<u8>, String) {
    let script = script.to_owned();
    let secs = limit.as_secs().max(1).to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["-k", "5", &secs, "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .map(|o| (o, script))
    })
    .await
    .expect("join")
    .expect("spawn timeout/sh");
    let (o, script) = out;
    let code = o.status.code().unwrap_or(-1);
    assert!(
        code != 124 && code != 137,
        "{script:?} did not finish within {limit:?}"
    );
    (
        code,
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts no 16-byte window occurs twice within or across the outputs.
pub fn assert_no_repeated_window(outputs: &[Vec<u8>]) {
    let mut seen = std::collections::HashSet::new();
    for (i, o) in outputs.iter().enumerate() {
        for w in o.windows(16) {
            let key: [u8; 16] = w.try_into().expect("16 bytes");
            assert!(seen.insert(key), "a 16-byte window repeats (output {i})");
        }
    }
}
