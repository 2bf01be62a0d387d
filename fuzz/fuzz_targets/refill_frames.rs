//! Refill answers and spools: a run of `u32 length ‖ packet` frames given to the daemon's
//! `receive_frames`. Never panics; never admits more than the frames carry, and nothing that
//! its verifier would not admit (the seeds are signed by a key this daemon does not trust).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = kirq_fuzz::daemon();
    match d.receive_frames(data) {
        Ok((packets, bytes)) => {
            assert!(bytes <= data.len());
            assert!(packets * 4 <= data.len());
            assert_eq!(packets, 0, "a packet from an untrusted key was admitted");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
