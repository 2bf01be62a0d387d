//! The hub↔daemon transport around packets: the refill request a daemon sends to
//! `POST /api/hub/refill`, the framed answer (`u32 length (big-endian) ‖ packet`, repeated, also
//! the format of a seed spool), the header both directions carry, and the limits that bound them.
//!
//! The hub encodes with [`FrameWriter`], the daemon reads with [`Frames`]; both sides and the
//! tests use these, so the format is written down once.

use crate::secret::SecretBytes;

use super::{MAX_PACKET_BYTES, Provenance};

/// The header every transport request carries (push to the daemon, pull from the hub).
pub const TRANSPORT_HEADER: &str = "X-Quantum-Transport";
/// Its one accepted value.
pub const TRANSPORT_VERSION: &str = "v1";
/// The message for a request without it, the same on both faces.
pub const TRANSPORT_REQUIRED: &str = "header X-Quantum-Transport: v1 is required";

/// The hub's pull path.
pub const REFILL_PATH: &str = "/api/hub/refill";
/// Most packets one refill answer holds.
pub const MAX_PACKETS_PER_PULL: usize = 256;
/// Largest refill request body the hub reads.
pub const MAX_REQUEST_BYTES: usize = 1024;
/// Largest refill answer a daemon reads: [`MAX_PACKETS_PER_PULL`] frames of the largest packet.
pub const MAX_ANSWER_BYTES: usize = MAX_PACKETS_PER_PULL * (MAX_PACKET_BYTES + FRAME_HEADER);
/// Bytes before each packet in a frame.
pub const FRAME_HEADER: usize = 4;

/// `POST /api/hub/refill`'s body: `bytes` of entropy for `recipient` (0 = a reachability probe,
/// answered with nothing), optionally only from the sources with this id or kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillRequest {
    pub recipient: String,
    pub bytes: usize,
    /// Serve packets from the sources with this id or kind only (e.g. `"qrng"`, `"hsm"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl RefillRequest {
    /// A daemon's request for `bytes`, of one provenance class if `class` is given.
    pub fn new(recipient: &str, bytes: usize, class: Option<Provenance>) -> Self {
        Self {
            recipient: recipient.to_owned(),
            bytes,
            source: class.map(|c| c.as_str().to_owned()),
        }
    }
}

/// A malformed run of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated frame")]
    Truncated,
}

/// Reads frames from a refill answer or a spool, borrowing each packet. After an error it ends.
#[derive(Debug, Clone)]
pub struct Frames<'a>(&'a [u8]);

impl<'a> Frames<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0;
        if rest.is_empty() {
            return None;
        }
        let Some((len, tail)) = rest.split_first_chunk::<FRAME_HEADER>() else {
            self.0 = &[];
            return Some(Err(FrameError::Truncated));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            self.0 = &[];
            return Some(Err(FrameError::Truncated));
        }
        let (packet, rest) = tail.split_at(len);
        self.0 = rest;
        Some(Ok(packet))
    }
}

/// Writes frames into a buffer that is zeroed when dropped (the packets carry entropy).
#[derive(Debug, Default)]
pub struct FrameWriter(SecretBytes);

impl FrameWriter {
    /// A writer with room for `bytes` (more is grown into, zeroing the old buffer).
    pub fn with_capacity(bytes: usize) -> Self {
        Self(SecretBytes::new(Vec::with_capacity(bytes)))
    }

    pub fn push(&mut self, packet: &[u8]) {
        let len = u32::try_from(packet.len()).expect("a packet is far below 4 GiB");
        self.0.append(&len.to_be_bytes());
        self.0.append(packet);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_inner(self) -> SecretBytes {
        self.0
    }
}

/// Frames `packets` into one plain buffer (tests, fuzz seeds and spools written by hand).
pub fn encode<'a>(packets: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let len = u32::try_from(p.len()).expect("a packet is far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_cut_frame_is_an_error() {
        let a = [1u8; 3];
        let b = [2u8; 0];
        let c = [3u8; 70];
        let bytes = encode([&a[..], &b[..], &c[..]]);
        let mut w = FrameWriter::default();
        for p in [&a[..], &b[..], &c[..]] {
            w.push(p);
        }
        assert_eq!(w.into_inner().expose(), &bytes[..]);
        let got: Vec<_> = Frames::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![&a[..], &b[..], &c[..]]);
        for cut in 1..bytes.len() {
            let frames: Vec<_> = Frames::new(&bytes[..cut]).collect();
            let whole = frames.iter().take_while(|f| f.is_ok()).count();
            let complete = [4 + 3, 4 + 3 + 4, 4 + 3 + 4 + 4 + 70]
                .iter()
                .filter(|&&end| end <= cut)
                .count();
            assert_eq!(whole, complete, "cut at {cut}");
            if ![7, 11].contains(&cut) {
                assert_eq!(
                    frames.last(),
                    Some(&Err(FrameError::Truncated)),
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn a_request_names_its_class_by_kind() {
        let r = RefillRequest::new("d", 10, Some(Provenance::Qrng));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"recipient":"d","bytes":10,"source":"qrng"}"#);
        let probe = serde_json::to_string(&RefillRequest::new("d", 0, None)).unwrap();
        assert_eq!(probe, r#"{"recipient":"d","bytes":0}"#);
        assert!(
            serde_json::from_str::<RefillRequest>(r#"{"recipient":"d","bytes":1,"x":1}"#).is_err()
        );
    }
}
