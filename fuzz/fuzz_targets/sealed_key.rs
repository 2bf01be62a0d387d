//! The sealed-key reader (`quantum::keystore::open`): byte 0 picks the kind (VRF, Falcon), the rest
//! is the file's text. Never panics; what opens under the fixed key round-trips through `seal`.
#![no_main]

use kirq::quantum::keystore::{AtRestKey, Kind, open};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let kind = if sel & 1 == 0 {
        Kind::Vrf
    } else {
        Kind::Falcon
    };
    let path = kirq_fuzz::scratch().join("sealed.key");
    std::fs::write(&path, text).unwrap();
    let key = AtRestKey::from_bytes([7; 32]);
    if let Ok(Some(o)) = open(&key, kind, &path) {
        let again = kirq::quantum::keystore::seal(&key, kind, &o.public, o.secret.expose());
        std::fs::write(&path, again).unwrap();
        let back = open(&key, kind, &path).unwrap().unwrap();
        assert_eq!(back.public, o.public);
        assert_eq!(back.secret.expose(), o.secret.expose());
    }
});
