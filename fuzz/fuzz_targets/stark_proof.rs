//! The STARK proof decoder and verifier (`crypto::stark::verify`) for the statement of the
//! committed proven packet (`fuzz/seeds/stark_packet.bin`); the input is the proof. Never
//! panics; only the committed proof itself may verify.
#![no_main]

use std::sync::OnceLock;

use kirq::crypto::stark::{self, PublicPart};
use kirq::wire::Packet;
use libfuzzer_sys::fuzz_target;

struct Statement {
    round: u64,
    parts: Vec<PublicPart>,
    output: Vec<u8>,
    proof: Vec<u8>,
}

fn statement() -> &'static Statement {
    static S: OnceLock<Statement> = OnceLock::new();
    S.get_or_init(|| {
        let p = Packet::decode(include_bytes!("../seeds/stark_packet.bin"))
            .unwrap()
            .packet;
        Statement {
            round: p.round,
            parts: p
                .provenance
                .iter()
                .map(|s| PublicPart {
                    id: s.id.clone(),
                    len: s.byte_count as usize,
                    commitment: s.commitment,
                })
                .collect(),
            output: p.entropy.expose().to_vec(),
            proof: p.proof.clone(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    kirq_fuzz::tolerate_caught_winterfell_panics();
    let s = statement();
    if stark::verify(s.round, &s.parts, &s.output, data).is_ok() {
        assert_eq!(
            data,
            &s.proof[..],
            "a proof other than the honest one verified"
        );
    }
});
