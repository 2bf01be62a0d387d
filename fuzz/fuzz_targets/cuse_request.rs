//! The CUSE request parser: any bytes one read of /dev/cuse might return. Never panics; what
//! parses declared exactly its own length, and an error names the request it can answer.
#![no_main]

use kirq::device::cuse::request::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(r) => {
            assert_eq!(r.header.len as usize, data.len());
            let _ = r.op.expects_reply();
        }
        Err(e) => {
            if let Some(u) = e.unique {
                assert_eq!(u.to_le_bytes(), data[8..16]);
            }
        }
    }
});
