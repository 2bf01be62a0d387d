//! Building replies and notifications for /dev/cuse. Pure: each function returns the exact bytes
//! of one `write(2)`, with `fuse_out_header.len` equal to the total.

use zeroize::Zeroizing;

use super::abi::*;

fn framed(unique: u64, error: i32, body_len: usize) -> Vec<u8> {
    let total = OUT_HEADER_LEN + body_len;
    let mut v = Vec::with_capacity(total);
    FuseOutHeader {
        len: u32::try_from(total).unwrap_or(u32::MAX),
        error,
        unique,
    }
    .write(&mut v);
    v
}

/// An error reply; `errno` is positive (it is sent negated).
pub fn error(unique: u64, errno: i32) -> Vec<u8> {
    framed(unique, -errno, 0)
}

/// A success with no body (FLUSH, RELEASE).
pub fn empty(unique: u64) -> Vec<u8> {
    framed(unique, 0, 0)
}

/// The CUSE_INIT answer: header, the whole `cuse_init_out`, then `DEVNAME=<name>\0`.
pub fn cuse_init(unique: u64, out: &CuseInitOut, devname: &str) -> Vec<u8> {
    let info = format!("DEVNAME={devname}\0");
    let mut v = framed(unique, 0, CUSE_INIT_OUT_LEN + info.len());
    out.write(&mut v);
    v.extend_from_slice(info.as_bytes());
    v
}

/// `fuse_open_out`.
pub fn open(unique: u64, fh: u64, open_flags: u32) -> Vec<u8> {
    let mut v = framed(unique, 0, 16);
    v.extend_from_slice(&fh.to_le_bytes());
    v.extend_from_slice(&open_flags.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// Read data. The buffer holds entropy, so it is zeroed when dropped.
pub fn data(unique: u64, bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(framed(unique, 0, bytes.len()));
    v.extend_from_slice(bytes);
    v
}

/// A read reply filled in place: `fill` writes up to `max` bytes after the header and returns
/// how many it wrote; the header then gets the final length. Zeroed when dropped.
pub fn data_with<E>(
    unique: u64,
    max: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
) -> Result<Zeroizing<Vec<u8>>, E> {
    let mut v = Zeroizing::new(vec![0u8; OUT_HEADER_LEN + max]);
    let n = fill(&mut v[OUT_HEADER_LEN..])?.min(max);
    v.truncate(OUT_HEADER_LEN + n);
    let mut h = Vec::with_capacity(OUT_HEADER_LEN);
    FuseOutHeader {
        len: u32::try_from(OUT_HEADER_LEN + n).unwrap_or(u32::MAX),
        error: 0,
        unique,
    }
    .write(&mut h);
    v[..OUT_HEADER_LEN].copy_from_slice(&h);
    Ok(v)
}

/// `fuse_ioctl_out` for a restricted ioctl answered directly, then its output bytes.
pub fn ioctl(unique: u64, result: i32, out: &[u8]) -> Vec<u8> {
    let mut v = framed(unique, 0, 16 + out.len());
    v.extend_from_slice(&result.to_le_bytes());
    v.extend_from_slice(&[0; 12]); // flags, in_iovs, out_iovs
    v.extend_from_slice(out);
    v
}

/// `fuse_poll_out`.
pub fn poll(unique: u64, revents: u32) -> Vec<u8> {
    let mut v = framed(unique, 0, 8);
    v.extend_from_slice(&revents.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// `FUSE_NOTIFY_POLL` with `fuse_notify_poll_wakeup_out { kh }`: wakes the kernel's poller.
pub fn notify_poll(kh: u64) -> Vec<u8> {
    let mut v = framed(0, FUSE_NOTIFY_POLL, 8);
    v.extend_from_slice(&kh.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_bytes() {
        assert_eq!(
            error(0x0102, 38),
            [16, 0, 0, 0, 0xda, 0xff, 0xff, 0xff, 2, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn cuse_init_reply_bytes() {
        let out = CuseInitOut {
            major: 7,
            minor: 31,
            flags: 0,
            max_read: 131072,
            max_write: 4096,
            dev_major: 0,
            dev_minor: 0,
        };
        let v = cuse_init(1, &out, "kirq-rng");
        let tail = b"DEVNAME=kirq-rng\0";
        assert_eq!(v.len(), 16 + 72 + tail.len());
        assert_eq!(&v[0..4], &(v.len() as u32).to_le_bytes());
        assert_eq!(&v[4..8], &[0; 4]);
        assert_eq!(&v[16..20], &7u32.to_le_bytes());
        assert_eq!(&v[20..24], &31u32.to_le_bytes());
        assert_eq!(&v[32..36], &131072u32.to_le_bytes());
        assert_eq!(&v[88..], tail);
    }

    #[test]
    fn other_replies() {
        let o = open(3, 42, FOPEN_DIRECT_IO);
        assert_eq!(o.len(), 32);
        assert_eq!(&o[16..24], &42u64.to_le_bytes());
        assert_eq!(&o[24..28], &1u32.to_le_bytes());
        let w = data_with(4, 8, |b| {
            b[..3].copy_from_slice(&[9, 9, 9]);
            Ok::<_, ()>(3)
        });
        assert_eq!(w.map(|v| v.to_vec()), Ok(data(4, &[9, 9, 9]).to_vec()));
        let d = data(4, &[9, 9, 9]);
        assert_eq!(&d[..4], &19u32.to_le_bytes());
        assert_eq!(&d[16..], &[9, 9, 9]);
        let i = ioctl(5, 0, &2048i32.to_le_bytes());
        assert_eq!(i.len(), 36);
        assert_eq!(&i[32..], &2048i32.to_le_bytes());
        assert_eq!(poll(6, POLLIN)[16..20], 1u32.to_le_bytes());
        let n = notify_poll(77);
        assert_eq!(&n[4..8], &1i32.to_le_bytes());
        assert_eq!(&n[8..16], &[0; 8]);
        assert_eq!(&n[16..24], &77u64.to_le_bytes());
        assert_eq!(empty(8).len(), 16);
    }
}
