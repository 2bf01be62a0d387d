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

/// Runs `sh -c script` with a timeout; returns (exit code, stdout, stderr).
pub async fn sh(script: &str, timeout: Duration) -> (i32, Vec<u8>, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh");
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => (
            o.status.code().unwrap_or(-1),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("running {script:?}: {e}"),
        Err(_) => panic!("{script:?} did not finish within {timeout:?}"),
    }
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
