//! The kernel's FUSE/CUSE ABI (linux/fuse.h, protocol 7.x) as plain Rust structs.
//!
//! Names follow the kernel header. Nothing here is `#[repr(C)]`-cast from bytes: every struct is
//! read field by field, little-endian (x86_64 and aarch64), from a bounds-checked [`Reader`], and
//! written the same way, so a short or malformed request is an error, never undefined behaviour.

pub const FUSE_KERNEL_VERSION: u32 = 7;
/// The newest minor version this server speaks; the reply carries `min(kernel, ours)`.
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 31;

pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_FORGET: u32 = 2;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_WRITE: u32 = 16;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_FSYNC: u32 = 20;
pub const FUSE_FLUSH: u32 = 25;
pub const FUSE_INTERRUPT: u32 = 36;
pub const FUSE_IOCTL: u32 = 39;
pub const FUSE_POLL: u32 = 40;
pub const FUSE_BATCH_FORGET: u32 = 42;
pub const CUSE_INIT: u32 = 4096;

/// `fuse_notify_code::FUSE_NOTIFY_POLL`, sent in `fuse_out_header.error` with `unique = 0`.
pub const FUSE_NOTIFY_POLL: i32 = 1;
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
/// `O_NONBLOCK` on Linux (x86_64, aarch64).
pub const O_NONBLOCK: u32 = 0o4000;
/// `POLLIN` as in the poll(2) ABI.
pub const POLLIN: u32 = 0x1;
/// `FUSE_MIN_READ_BUFFER`: the kernel refuses reads of /dev/cuse with smaller buffers.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
pub const CUSE_INIT_OUT_LEN: usize = 72;

/// Why bytes could not be parsed as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("request of {got} bytes is shorter than the {need}-byte header")]
    ShortHeader { got: usize, need: usize },
    #[error("header says {declared} bytes but {got} arrived")]
    LengthMismatch { declared: usize, got: usize },
    #[error("opcode {opcode}: body of {got} bytes, need at least {need}")]
    ShortBody {
        opcode: u32,
        got: usize,
        need: usize,
    },
}

/// A bounds-checked little-endian cursor.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.buf.split_first_chunk::<N>()?;
        self.buf = tail;
        Some(*head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseInHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

impl FuseInHeader {
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            len: r.u32()?,
            opcode: r.u32()?,
            unique: r.u64()?,
            nodeid: r.u64()?,
            uid: r.u32()?,
            gid: r.u32()?,
            pid: r.u32()?,
            total_extlen: r.u16()?,
            padding: r.u16()?,
        })
    }
}

/// `struct fuse_out_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseOutHeader {
    pub len: u32,
    /// Zero or a negative errno; for notifications, the notify code.
    pub error: i32,
    pub unique: u64,
}

impl FuseOutHeader {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.error.to_le_bytes());
        out.extend_from_slice(&self.unique.to_le_bytes());
    }
}

/// `struct cuse_init_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CuseInitIn {
    pub major: u32,
    pub minor: u32,
    pub unused: u32,
    pub flags: u32,
}

impl CuseInitIn {
    pub const LEN: usize = 16;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            major: r.u32()?,
            minor: r.u32()?,
            unused: r.u32()?,
            flags: r.u32()?,
        })
    }
}

/// `struct cuse_init_out` (72 bytes: eight `u32` and `spare[10]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CuseInitOut {
    pub major: u32,
    pub minor: u32,
    pub flags: u32,
    pub max_read: u32,
    pub max_write: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
}

impl CuseInitOut {
    pub fn write(&self, out: &mut Vec<u8>) {
        for v in [
            self.major,
            self.minor,
            0, // unused
            self.flags,
            self.max_read,
            self.max_write,
            self.dev_major,
            self.dev_minor,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0u8; 40]); // spare[10]
    }
}

/// `struct fuse_open_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseOpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

impl FuseOpenIn {
    pub const LEN: usize = 8;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            flags: r.u32()?,
            open_flags: r.u32()?,
        })
    }
}

/// `struct fuse_read_in` (also the layout of `fuse_write_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    /// The file's current flags (`O_NONBLOCK` lives here).
    pub flags: u32,
    pub padding: u32,
}

impl FuseReadIn {
    pub const LEN: usize = 40;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            fh: r.u64()?,
            offset: r.u64()?,
            size: r.u32()?,
            read_flags: r.u32()?,
            lock_owner: r.u64()?,
            flags: r.u32()?,
            padding: r.u32()?,
        })
    }
}

/// `struct fuse_release_in` (`fuse_flush_in` has the same size and starts with `fh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

impl FuseReleaseIn {
    pub const LEN: usize = 24;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            fh: r.u64()?,
            flags: r.u32()?,
            release_flags: r.u32()?,
            lock_owner: r.u64()?,
        })
    }
}

/// `struct fuse_interrupt_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseInterruptIn {
    pub unique: u64,
}

impl FuseInterruptIn {
    pub const LEN: usize = 8;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self { unique: r.u64()? })
    }
}

/// `struct fuse_ioctl_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseIoctlIn {
    pub fh: u64,
    pub flags: u32,
    pub cmd: u32,
    pub arg: u64,
    pub in_size: u32,
    pub out_size: u32,
}

impl FuseIoctlIn {
    pub const LEN: usize = 32;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            fh: r.u64()?,
            flags: r.u32()?,
            cmd: r.u32()?,
            arg: r.u64()?,
            in_size: r.u32()?,
            out_size: r.u32()?,
        })
    }
}

/// `struct fuse_poll_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusePollIn {
    pub fh: u64,
    /// The kernel's handle for this poller, echoed in `FUSE_NOTIFY_POLL`.
    pub kh: u64,
    pub flags: u32,
    pub events: u32,
}

impl FusePollIn {
    pub const LEN: usize = 24;
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            fh: r.u64()?,
            kh: r.u64()?,
            flags: r.u32()?,
            events: r.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_out_is_72_bytes() {
        let mut v = Vec::new();
        CuseInitOut {
            major: 7,
            minor: 31,
            flags: 0,
            max_read: 1,
            max_write: 2,
            dev_major: 0,
            dev_minor: 0,
        }
        .write(&mut v);
        assert_eq!(v.len(), CUSE_INIT_OUT_LEN);
        assert_eq!(&v[16..24], &[1, 0, 0, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(&[1, 0, 0]);
        assert_eq!(r.u16(), Some(1));
        assert_eq!(r.u32(), None);
        assert_eq!(r.remaining(), 1);
    }
}
