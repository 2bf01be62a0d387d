//! A daemon with no listeners and helpers to fill its pool, for tests and benchmarks.

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::health::SourceHealth;

/// A daemon built from the demo's configs (throwaway keys in a temporary directory).
pub fn local_daemon() -> (tempfile::TempDir, Arc<Daemon>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_hub, cfg) = super::configs(dir.path(), None).expect("demo configs");
    let keys = crate::daemon::load_trusted_keys(&cfg).expect("hub key");
    let hardening = crate::secret::Hardening {
        no_core_dumps: false,
        memory_locked: false,
    };
    (dir, Arc::new(Daemon::new(cfg, keys, hardening)))
}

/// Adds `n` health-tested local bytes (marked `local`) to the pool. A health-test alarm
/// drops that block and the fill goes on with a fresh tester: at 8 bits per byte and
/// alpha = 2^-20 the repetition-count cutoff is 4 identical bytes in a row, which a perfect
/// source produces about once per 16 MiB.
pub fn fill(d: &Daemon, n: usize) -> usize {
    let mut h = SourceHealth::new(20, 8.0, Duration::ZERO);
    let (mut added, mut alarms) = (0, 0);
    while added < n {
        let k = (n - added).min(1 << 20);
        match d.pool.fill_local(k, &mut h) {
            Ok(0) => break,
            Ok(k) => added += k,
            Err(_) if alarms < 16 => {
                alarms += 1;
                h = SourceHealth::new(20, 8.0, Duration::ZERO);
            }
            Err(_) => break,
        }
    }
    added
}
