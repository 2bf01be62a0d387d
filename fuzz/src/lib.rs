//! Shared fixtures for Kirq's fuzz targets: the verifier of the committed packet vectors, a
//! daemon built once per process, a current-thread runtime, and the fixed time all seeds are
//! issued at. Targets call the library's own entry points; nothing here re-implements a parser.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use kirq::crypto::falcon::VerifyingKey;
use kirq::daemon::Daemon;
use kirq::verify::{Policy, Verifier};

/// The time every committed seed packet was issued for (`testdata/packet-vectors.json` `now_ms`).
pub const NOW_MS: u64 = 1_800_000_000_000;
/// The recipient of the vectors and of the generated seeds.
pub const RECIPIENT: &str = "kirqd-vectors";

const VECTORS: &str = include_str!("../../testdata/packet-vectors.json");
/// The fuzz hub key's public half (`examples/fuzz_seeds.rs` signs the generated seeds with it).
const FUZZ_HUB_PUB: &str = include_str!("../keys/fuzz-hub.pub");

/// The vectors' hub key and the fuzz hub key.
pub fn trusted_keys() -> Vec<VerifyingKey> {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    [v["public_key"].as_str().unwrap(), FUZZ_HUB_PUB.trim()]
        .iter()
        .map(|t| {
            use base64::Engine;
            let b64 = t.strip_prefix("falcon512-public:").unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            VerifyingKey::from_bytes(&bytes).expect("a committed public key")
        })
        .collect()
}

/// A fresh verifier (an empty replay cache, so each input is judged alone) trusting
/// [`trusted_keys`], with nodes `node-a` and `node-b` (the fuzz hub key) and `quorum` needed.
pub fn verifier(require_proof: bool, quorum: usize) -> Verifier {
    static KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(trusted_keys);
    let v = Verifier::new(
        Policy {
            recipient: RECIPIENT.into(),
            max_skew_ms: 5_000,
            require_proof,
            min_node_quorum: quorum,
            replay_capacity: 64,
            alpha_exp: 30,
        },
        keys.clone(),
    );
    v.set_trusted_nodes(vec![
        ("node-a".into(), keys[1].clone()),
        ("node-b".into(), keys[1].clone()),
    ]);
    v
}

/// One daemon per fuzz process (the demo's throwaway keys), for the HTTP and frame targets. Its
/// pool is topped up with local bytes whenever it runs low, so that `/api/rng/random` answers at
/// once instead of waiting for a refill that never comes.
pub fn daemon() -> &'static Arc<Daemon> {
    static D: OnceLock<(tempfile::TempDir, Arc<Daemon>)> = OnceLock::new();
    let d = &D
        .get_or_init(|| {
            // `device::testing::local_daemon`, with requests that never wait for a refill.
            let dir = tempfile::tempdir().unwrap();
            let (_hub, mut cfg) = kirq::demo::configs(dir.path(), None).unwrap();
            cfg.http.max_wait_ms = 0;
            let keys = kirq::daemon::load_trusted_keys(&cfg).unwrap();
            let hardening = kirq::secret::Hardening {
                no_core_dumps: false,
                memory_locked: false,
            };
            (dir, Arc::new(Daemon::new(cfg, keys, hardening)))
        })
        .1;
    if d.pool.len() < 256 * 1024 {
        kirq::demo::testing::fill(d, (d.pool.capacity() - d.pool.len()).min(1 << 20));
    }
    d
}

/// The peer address the HTTP shim's guard reads (the router is built per input, so its rate
/// limiter starts full each time).
pub fn loopback_peer() -> axum::extract::ConnectInfo<std::net::SocketAddr> {
    axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)))
}

/// A current-thread runtime shared by the HTTP targets.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A scratch directory on tmpfs when there is one (the file readers write one file per input).
pub fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    })
    .path()
}

/// Sends one request through `app` and returns the status; a 5xx other than the designed 503
/// (empty pool, no key configured) is a finding.
pub fn call(app: axum::Router, req: axum::http::Request<axum::body::Body>) -> u16 {
    use tower::ServiceExt;
    runtime().block_on(async {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        if status >= 500 && status != 503 {
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
            panic!("server error {status} for a fuzzed request: {body:?}");
        }
        status
    })
}

/// Makes a panic raised inside winterfell (which the STARK verifier catches with
/// `catch_unwind` and refuses the proof for) non-fatal, as it is in the daemon; every other panic
/// still aborts the fuzzer (libfuzzer-sys aborts on any panic that reaches the target's edge).
/// Needed because winterfell's generic decoders are instantiated in kirq, which the fuzz build
/// compiles with overflow checks, so a wrapped multiplication there is a caught panic here.
pub fn tolerate_caught_winterfell_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let fatal = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_winterfell = info.location().is_some_and(|l| {
                l.file().contains("/winter-") || l.file().contains("core/src/num")
            });
            let caught_by_kirq = std::backtrace::Backtrace::force_capture()
                .to_string()
                .contains("kirq::crypto::stark::verifier::verify");
            if !(in_winterfell && caught_by_kirq) {
                fatal(info);
            }
        }));
    });
}
