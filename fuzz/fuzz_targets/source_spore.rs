//! SPORE answers (`sources::spore::check_response`: the outer JSON, the JWT's three parts, its
//! header, x5c chain, ES256 signature and claims) against the committed pinned CA. Never panics;
//! accepted entropy is exactly the signed claim's.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use kirq::sources::spore::{Pinned, check_response};
use libfuzzer_sys::fuzz_target;

fn pinned() -> &'static Pinned {
    static P: OnceLock<Pinned> = OnceLock::new();
    P.get_or_init(|| {
        let pem = include_bytes!("../keys/spore-ca.pem");
        let path = kirq_fuzz::scratch().join("spore-ca.pem");
        std::fs::write(&path, pem).unwrap();
        Pinned::load(&path).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 32]);
    let now = UNIX_EPOCH + Duration::from_millis(kirq_fuzz::NOW_MS);
    if let Ok(e) = check_response(pinned(), data, &challenge, Duration::from_secs(60), now) {
        assert!(!e.is_empty());
    }
    let _ = SystemTime::now();
});
