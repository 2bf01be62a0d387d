//! The FUSE/CUSE reply builder round trip: a parsed request (or fuzzed fields) → each reply the
//! server can write → its `fuse_out_header` read back: `len` is the exact total, `unique` and
//! `error` are what was asked, and the body follows unchanged.
#![no_main]

use kirq::device::cuse::abi::{CuseInitOut, OUT_HEADER_LEN};
use kirq::device::cuse::{reply, request};
use libfuzzer_sys::fuzz_target;

fn check(msg: &[u8], unique: u64, error: i32, body: Option<&[u8]>) {
    assert!(msg.len() >= OUT_HEADER_LEN);
    let len = u32::from_le_bytes(msg[0..4].try_into().unwrap());
    let err = i32::from_le_bytes(msg[4..8].try_into().unwrap());
    let uniq = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    assert_eq!(len as usize, msg.len(), "len is the exact total");
    assert_eq!(err, error);
    assert_eq!(uniq, unique);
    if let Some(b) = body {
        assert_eq!(&msg[OUT_HEADER_LEN..], b);
    }
}

fuzz_target!(|data: &[u8]| {
    let unique = match request::parse(data) {
        Ok(r) => r.header.unique,
        Err(e) => e.unique.unwrap_or(0),
    };
    let word = |i: usize| {
        let mut b = [0u8; 4];
        for (k, x) in b.iter_mut().enumerate() {
            *x = data.get(i + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(b)
    };
    let errno = (word(0) % 4096) as i32;
    check(&reply::error(unique, errno), unique, -errno, Some(&[]));
    check(&reply::empty(unique), unique, 0, Some(&[]));
    let tail = data.get(16..).unwrap_or(&[]);
    check(&reply::data(unique, tail), unique, 0, Some(tail));
    check(
        &reply::open(unique, u64::from(word(4)), word(8)),
        unique,
        0,
        None,
    );
    check(&reply::poll(unique, word(12)), unique, 0, None);
    let out = &tail[..tail.len().min(4096)];
    check(&reply::ioctl(unique, word(0) as i32, out), unique, 0, None);
    let name: String = String::from_utf8_lossy(&tail[..tail.len().min(64)])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let init = reply::cuse_init(
        unique,
        &CuseInitOut {
            major: 7,
            minor: word(0),
            flags: word(4),
            max_read: word(8),
            max_write: word(12),
            dev_major: 0,
            dev_minor: 0,
        },
        &name,
    );
    check(&init, unique, 0, None);
    assert!(init.ends_with(format!("DEVNAME={name}\0").as_bytes()));
    let max = (word(8) % 65_536) as usize;
    let filled = reply::data_with::<()>(unique, max, |buf| {
        let n = buf.len().min(tail.len());
        buf[..n].copy_from_slice(&tail[..n]);
        Ok(n + (word(12) % 8) as usize)
    })
    .unwrap();
    // The reply holds what `fill` said it wrote (zeros past what it copied), at most `max`.
    let copied = max.min(tail.len());
    let said = (copied + (word(12) % 8) as usize).min(max);
    let mut want = tail[..copied].to_vec();
    want.resize(said, 0);
    check(&filled, unique, 0, Some(&want));
    let kh = u64::from(word(4)) << 32 | u64::from(word(8));
    let n = reply::notify_poll(kh);
    assert_eq!(
        u32::from_le_bytes(n[0..4].try_into().unwrap()) as usize,
        n.len()
    );
});
