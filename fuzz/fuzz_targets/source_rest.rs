//! The REST source decoders (`sources::rest::decode_json` and its formats): byte 0 picks the
//! format, byte 1 the JSON pointer, the rest is the response body. Never panics (octets inside
//! JSON is refused).
#![no_main]

use kirq::config::DataFormat;
use kirq::sources::rest::decode_json;
use libfuzzer_sys::fuzz_target;

const FORMATS: [DataFormat; 6] = [
    DataFormat::Uint8,
    DataFormat::Uint16,
    DataFormat::Hex,
    DataFormat::Base64,
    DataFormat::Base64url,
    DataFormat::Octets,
];
const POINTERS: [&str; 4] = ["/data", "/random", "/result/random", ""];

fuzz_target!(|data: &[u8]| {
    let [fmt, ptr, body @ ..] = data else { return };
    let format = FORMATS[usize::from(*fmt) % FORMATS.len()];
    let _ = decode_json(body, POINTERS[usize::from(*ptr) % POINTERS.len()], format);
});
