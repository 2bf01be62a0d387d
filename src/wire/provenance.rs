//! The provenance class of pool bytes: what kinds of source a packet was mixed from, as the
//! verifier derives it from the packet's signed source list (or `local` for the fallback).

use super::SourceKind;

/// Where the bytes of a packet (or a fallback fill) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    Hybrid,
    Decentralized,
    Qrng,
    Hsm,
    Local,
}

impl Provenance {
    /// How many classes there are: the length of per-class arrays.
    pub const COUNT: usize = 5;

    /// In the order `any` serves them: best first.
    pub const ALL: [Provenance; Self::COUNT] = [
        Self::Hybrid,
        Self::Decentralized,
        Self::Qrng,
        Self::Hsm,
        Self::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Decentralized => "decentralized",
            Self::Qrng => "qrng",
            Self::Hsm => "hsm",
            Self::Local => "local",
        }
    }

    /// This class's slot in a `[_; Provenance::COUNT]` array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class of a packet mixed from sources of these kinds: their common kind, or hybrid.
    pub fn of_sources(kinds: impl IntoIterator<Item = SourceKind>) -> Self {
        let mut kinds = kinds.into_iter();
        let Some(first) = kinds.next() else {
            return Self::Local;
        };
        if kinds.any(|k| k != first) {
            return Self::Hybrid;
        }
        match first {
            SourceKind::Qrng => Self::Qrng,
            SourceKind::Hsm => Self::Hsm,
            SourceKind::Decentralized => Self::Decentralized,
            SourceKind::Local => Self::Local,
        }
    }
}
