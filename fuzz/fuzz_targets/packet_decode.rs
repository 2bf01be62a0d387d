//! Packet decoding: never panics, and whatever decodes re-encodes to exactly the input (one
//! encoding per packet: canonical), with the signed prefix being everything before `sig_len`.
#![no_main]

use kirq::wire::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = Packet::decode(data) else { return };
    let prefix = d.packet.encode_unsigned();
    assert_eq!(
        &prefix[..],
        d.signed,
        "signed prefix is not the re-encoding"
    );
    let sig = &d.packet.signature;
    assert_eq!(data.len(), prefix.len() + 2 + sig.len(), "not canonical");
    assert_eq!(
        &data[prefix.len()..prefix.len() + 2],
        &(sig.len() as u16).to_be_bytes()
    );
    assert_eq!(&data[prefix.len() + 2..], &sig[..]);
});
