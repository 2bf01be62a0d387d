//! Parsing one message read from /dev/cuse into a typed request. Pure: no I/O, no allocation.
//!
//! Every length is checked against both the header and the bytes that arrived; a malformed
//! message becomes a [`ParseError`] that still carries the request's `unique` when the header
//! was readable, so the server can answer it with `EINVAL` instead of leaving the caller hanging.

use super::abi::*;

/// One request from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub header: FuseInHeader,
    pub op: Operation<'a>,
}

/// The operations this server distinguishes; everything else is [`Operation::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    CuseInit(CuseInitIn),
    Open(FuseOpenIn),
    Read(FuseReadIn),
    /// A write (refused); only its size is kept.
    Write {
        arg: FuseReadIn,
        data_len: usize,
    },
    Release(FuseReleaseIn),
    Flush {
        fh: u64,
    },
    Interrupt(FuseInterruptIn),
    Ioctl {
        arg: FuseIoctlIn,
        in_data: &'a [u8],
    },
    Poll(FusePollIn),
    /// FORGET and BATCH_FORGET: the kernel expects no reply.
    Forget,
    Other(u32),
}

impl Operation<'_> {
    /// Whether the kernel waits for an answer to this operation.
    pub fn expects_reply(&self) -> bool {
        !matches!(self, Self::Forget | Self::Interrupt(_))
    }
}

/// A message that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CUSE request (opcode {opcode:?})")]
pub struct ParseError {
    /// Set when the header was readable, so the request can be answered.
    pub unique: Option<u64>,
    pub opcode: Option<u32>,
    #[source]
    pub error: AbiError,
}

fn body<'a, T>(
    h: &FuseInHeader,
    r: &mut Reader<'a>,
    need: usize,
    f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Result<T, AbiError> {
    let short = AbiError::ShortBody {
        opcode: h.opcode,
        got: r.remaining(),
        need,
    };
    if r.remaining() < need {
        return Err(short);
    }
    f(r).ok_or(short)
}

/// Parses one whole message (exactly what one read of /dev/cuse returned).
pub fn parse(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut r = Reader::new(buf);
    let header = FuseInHeader::read(&mut r).ok_or(ParseError {
        unique: None,
        opcode: None,
        error: AbiError::ShortHeader {
            got: buf.len(),
            need: IN_HEADER_LEN,
        },
    })?;
    let fail = |error| ParseError {
        unique: Some(header.unique),
        opcode: Some(header.opcode),
        error,
    };
    if header.len as usize != buf.len() {
        return Err(fail(AbiError::LengthMismatch {
            declared: header.len as usize,
            got: buf.len(),
        }));
    }
    let h = &header;
    let op = match header.opcode {
        CUSE_INIT => {
            Operation::CuseInit(body(h, &mut r, CuseInitIn::LEN, CuseInitIn::read).map_err(fail)?)
        }
        FUSE_OPEN => {
            Operation::Open(body(h, &mut r, FuseOpenIn::LEN, FuseOpenIn::read).map_err(fail)?)
        }
        FUSE_READ => {
            Operation::Read(body(h, &mut r, FuseReadIn::LEN, FuseReadIn::read).map_err(fail)?)
        }
        FUSE_WRITE => {
            let arg = body(h, &mut r, FuseReadIn::LEN, FuseReadIn::read).map_err(fail)?;
            if r.remaining() < arg.size as usize {
                return Err(fail(AbiError::ShortBody {
                    opcode: h.opcode,
                    got: r.remaining(),
                    need: arg.size as usize,
                }));
            }
            Operation::Write {
                arg,
                data_len: arg.size as usize,
            }
        }
        FUSE_RELEASE => Operation::Release(
            body(h, &mut r, FuseReleaseIn::LEN, FuseReleaseIn::read).map_err(fail)?,
        ),
        FUSE_FLUSH => Operation::Flush {
            fh: body(h, &mut r, 24, |r| r.u64()).map_err(fail)?,
        },
        FUSE_INTERRUPT => Operation::Interrupt(
            body(h, &mut r, FuseInterruptIn::LEN, FuseInterruptIn::read).map_err(fail)?,
        ),
        FUSE_IOCTL => {
            let arg = body(h, &mut r, FuseIoctlIn::LEN, FuseIoctlIn::read).map_err(fail)?;
            let n = arg.in_size as usize;
            if r.remaining() < n {
                return Err(fail(AbiError::ShortBody {
                    opcode: h.opcode,
                    got: r.remaining(),
                    need: n,
                }));
            }
            Operation::Ioctl {
                arg,
                in_data: &r.rest()[..n],
            }
        }
        FUSE_POLL => {
            Operation::Poll(body(h, &mut r, FusePollIn::LEN, FusePollIn::read).map_err(fail)?)
        }
        FUSE_FORGET | FUSE_BATCH_FORGET => Operation::Forget,
        other => Operation::Other(other),
    };
    Ok(Request { header, op })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request as the kernel writes it: header (with the right `len`) + body.
    pub(crate) fn msg(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
        v.extend_from_slice(&opcode.to_le_bytes());
        v.extend_from_slice(&unique.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes()); // nodeid
        v.extend_from_slice(&[0; 4]); // uid
        v.extend_from_slice(&[0; 4]); // gid
        v.extend_from_slice(&1234u32.to_le_bytes()); // pid
        v.extend_from_slice(&[0; 4]); // total_extlen, padding
        v.extend_from_slice(body);
        v
    }

    fn le(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn cuse_init_as_seen_from_kernel_6_1() {
        // cuse_init_in {major 7, minor 38, unused 0, flags CUSE_UNRESTRICTED_IOCTL}
        let m = msg(
            CUSE_INIT,
            2,
            &le(&[
                &7u32.to_le_bytes(),
                &38u32.to_le_bytes(),
                &[0; 4],
                &1u32.to_le_bytes(),
            ]),
        );
        let r = parse(&m).unwrap();
        assert_eq!(r.header.unique, 2);
        assert_eq!(r.header.pid, 1234);
        assert_eq!(
            r.op,
            Operation::CuseInit(CuseInitIn {
                major: 7,
                minor: 38,
                unused: 0,
                flags: 1
            })
        );
    }

    #[test]
    fn read_with_nonblock_flag() {
        let body = le(&[
            &5u64.to_le_bytes(),
            &0u64.to_le_bytes(),
            &65536u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0u64.to_le_bytes(),
            &(0o4000u32 | 0o2).to_le_bytes(),
            &0u32.to_le_bytes(),
        ]);
        let m = msg(FUSE_READ, 9, &body);
        let r = parse(&m).unwrap();
        let Operation::Read(a) = r.op else {
            panic!("not a read")
        };
        assert_eq!((a.fh, a.size, a.flags & O_NONBLOCK), (5, 65536, O_NONBLOCK));
    }

    #[test]
    fn ioctl_rndgetentcnt_restricted() {
        let body = le(&[
            &1u64.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0x8004_5200u32.to_le_bytes(),
            &0x7ffc_0000u64.to_le_bytes(),
            &0u32.to_le_bytes(),
            &4u32.to_le_bytes(),
        ]);
        let m = msg(FUSE_IOCTL, 3, &body);
        let r = parse(&m).unwrap();
        let Operation::Ioctl { arg, in_data } = r.op else {
            panic!("not ioctl")
        };
        assert_eq!((arg.cmd, arg.out_size, in_data.len()), (0x8004_5200, 4, 0));
    }

    #[test]
    fn poll_interrupt_release_forget_other() {
        let poll = le(&[
            &1u64.to_le_bytes(),
            &77u64.to_le_bytes(),
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
        ]);
        assert_eq!(
            parse(&msg(FUSE_POLL, 4, &poll)).unwrap().op,
            Operation::Poll(FusePollIn {
                fh: 1,
                kh: 77,
                flags: 1,
                events: 1
            })
        );
        let m = msg(FUSE_INTERRUPT, 5, &9u64.to_le_bytes());
        let intr = parse(&m).unwrap();
        assert_eq!(intr.op, Operation::Interrupt(FuseInterruptIn { unique: 9 }));
        assert!(!intr.op.expects_reply());
        let rel = le(&[
            &1u64.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0u32.to_le_bytes(),
            &0u64.to_le_bytes(),
        ]);
        assert!(matches!(
            parse(&msg(FUSE_RELEASE, 6, &rel)).unwrap().op,
            Operation::Release(_)
        ));
        assert!(matches!(
            parse(&msg(FUSE_FLUSH, 7, &rel)).unwrap().op,
            Operation::Flush { fh: 1 }
        ));
        let m = msg(FUSE_FORGET, 8, &[0; 8]);
        let f = parse(&m).unwrap();
        assert!(!f.op.expects_reply());
        assert_eq!(
            parse(&msg(FUSE_FSYNC, 9, &[0; 16])).unwrap().op,
            Operation::Other(FUSE_FSYNC)
        );
    }

    #[test]
    fn malformed_requests_are_precise_errors() {
        assert_eq!(
            parse(&[0; 10]).unwrap_err(),
            ParseError {
                unique: None,
                opcode: None,
                error: AbiError::ShortHeader { got: 10, need: 40 }
            }
        );
        let mut m = msg(FUSE_READ, 11, &[0; 40]);
        m.push(0);
        assert_eq!(
            parse(&m).unwrap_err().error,
            AbiError::LengthMismatch {
                declared: 80,
                got: 81
            }
        );
        let e = parse(&msg(FUSE_READ, 12, &[0; 39])).unwrap_err();
        assert_eq!(e.unique, Some(12));
        assert_eq!(
            e.error,
            AbiError::ShortBody {
                opcode: FUSE_READ,
                got: 39,
                need: 40
            }
        );
        let mut ioctl = vec![0u8; 32];
        ioctl[24..28].copy_from_slice(&100u32.to_le_bytes()); // in_size 100, no data
        assert!(matches!(
            parse(&msg(FUSE_IOCTL, 13, &ioctl)).unwrap_err().error,
            AbiError::ShortBody { need: 100, .. }
        ));
        let mut w = vec![0u8; 40];
        w[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert!(parse(&msg(FUSE_WRITE, 14, &w)).is_err());
        w.extend_from_slice(&[1; 8]);
        assert!(matches!(
            parse(&msg(FUSE_WRITE, 14, &w)).unwrap().op,
            Operation::Write { data_len: 8, .. }
        ));
    }
}
