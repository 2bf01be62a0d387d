//! Bounded big-endian reader and writer for [`super::Packet`]. No I/O, no allocation before a
//! length has been checked.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {len} bytes exceeds the maximum of {max}", max = super::MAX_PACKET_BYTES)]
    TooLarge { len: usize },
    #[error("packet truncated in field {0}")]
    Truncated(&'static str),
    #[error("not a Kirq packet (bad magic)")]
    BadMagic,
    #[error("unknown packet version {0}")]
    UnknownVersion(u8),
    #[error("unknown {field} {value}")]
    UnknownAlgorithm { field: &'static str, value: u8 },
    #[error("field {field} has length {len}, allowed {min}..={max}")]
    LengthOutOfRange {
        field: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("field {field} is {value}, allowed {min}..={max}")]
    CountOutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("field {0} has characters outside [A-Za-z0-9._-]")]
    BadName(&'static str),
    #[error("expiry must follow issue time by at most 60 s")]
    LifetimeOutOfRange,
    #[error("unknown source kind {0}")]
    UnknownSourceKind(u8),
    #[error("{0} trailing bytes after the signature")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The rejection reason label used in responses, stats and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "body_too_large",
            Self::Truncated(_) => "truncated",
            Self::UnknownVersion(_) => "unknown_version",
            Self::TrailingBytes(_) => "trailing_bytes",
            _ => "malformed",
        }
    }
}

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn position(&self) -> usize {
        self.pos
    }

    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        f: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, f)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self, f: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(f)?[0])
    }

    pub(super) fn u16(&mut self, f: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(f)?))
    }

    pub(super) fn u32(&mut self, f: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(f)?))
    }

    pub(super) fn u64(&mut self, f: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(f)?))
    }

    fn check_len(
        len: usize,
        f: &'static str,
        min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        if len < min || len > max {
            return Err(DecodeError::LengthOutOfRange {
                field: f,
                len,
                min,
                max,
            });
        }
        Ok(len)
    }

    pub(super) fn len_u16(
        &mut self,
        f: &'static str,
        min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        Self::check_len(usize::from(self.u16(f)?), f, min, max)
    }

    pub(super) fn len_u32(
        &mut self,
        f: &'static str,
        min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let len = usize::try_from(self.u32(f)?).unwrap_or(usize::MAX);
        Self::check_len(len, f, min, max)
    }

    /// A u8-length-prefixed identifier of 1..=max characters from [A-Za-z0-9._-].
    pub(super) fn name_u8(&mut self, f: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = Self::check_len(usize::from(self.u8(f)?), f, 1, max)?;
        let raw = self.take(len, f)?;
        if !super::valid_name(raw) {
            return Err(DecodeError::BadName(f));
        }
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadName(f))
    }

    pub(super) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
}
