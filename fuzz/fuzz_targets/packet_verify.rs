//! Decode + verify under the test-only verifier policy: the first byte chooses whether the hub's
//! and the nodes' signatures are checked (0) or waived (1, `kirq::verify::fuzzing`), so random
//! packets also reach the quorum, proof, health and replay checks. Never panics; a packet that
//! is admitted must decode, name this daemon and be live at the verification time; with the
//! signatures checked, it must carry a valid signature from a trusted key.
#![no_main]

use std::sync::atomic::Ordering;

use kirq::verify::fuzzing::WAIVE_SIGNATURES;
use kirq::wire::Packet;
use kirq_fuzz::{NOW_MS, RECIPIENT, verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kirq_fuzz::tolerate_caught_winterfell_panics();
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let waive = mode & 1 == 1;
    WAIVE_SIGNATURES.store(waive, Ordering::Relaxed);
    // Bit 1: require a proof; bit 2: a node quorum of two.
    let v = verifier(mode & 2 != 0, if mode & 4 != 0 { 2 } else { 0 });
    let now = NOW_MS + u64::from(mode >> 3) * 1_000;
    let first = v.verify(bytes, now);
    if let Ok(ok) = &first {
        let d = Packet::decode(bytes).expect("an admitted packet decodes");
        assert_eq!(d.packet.recipient, RECIPIENT);
        assert!(d.packet.expires_at_ms >= now);
        assert_eq!(ok.len(), d.packet.entropy.len());
        if !waive {
            let keys = kirq_fuzz::trusted_keys();
            let digest = kirq::wire::signing_digest(d.signed);
            assert!(keys.iter().any(|k| k.verify(&digest, &d.packet.signature)));
        }
        // The same bytes again are a replay.
        assert_eq!(v.verify(bytes, now).unwrap_err().reason(), "replayed");
    }
    WAIVE_SIGNATURES.store(false, Ordering::Relaxed);
});
