//! The rounds a node holds: one commitment per (client, round), revealed at most once, zeroed on
//! reveal or expiry. Pure state with time passed in, so the rules are tested without sleeping.
//!
//! The one rule a reader must know: a round number a client has used can never be committed again.
//! A revealed round stays as a tombstone (commitment only, bytes zeroed) until its TTL ends; when
//! any round leaves the store its number raises the client's *floor*, and a commit at or below
//! the floor is refused. So a client cannot get two different commitments for one round, even
//! after the first has expired, while rounds may still arrive out of order within the TTL.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::crypto::stark::Commitment;
use crate::secret::SecretBytes;

/// Who asked: a hash of the client certificate the request arrived with.
pub type ClientId = [u8; 32];

/// One committed round.
#[derive(Debug)]
pub struct Entry {
    pub commitment: Commitment,
    pub signature: Vec<u8>,
    pub len: usize,
    expires: Instant,
    /// `None` once revealed (the bytes were handed out and are zeroed).
    bytes: Option<SecretBytes>,
}

/// Why a commit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefusal {
    #[error("round {0} was already revealed")]
    AlreadyRevealed(u64),
    #[error("round {round} was committed with {committed} bytes, not {asked}")]
    SizeMismatch {
        round: u64,
        committed: usize,
        asked: usize,
    },
    #[error("round {round} is not above round {floor}, which expired or was revealed")]
    Stale { round: u64, floor: u64 },
    #[error("{0} rounds are open; try again when some are revealed or expire")]
    TooMany(usize),
}

impl CommitRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyRevealed(_) => "already_revealed",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::Stale { .. } => "stale_round",
            Self::TooMany(_) => "too_many_rounds",
        }
    }
}

/// Why a reveal finds nothing to reveal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevealRefusal {
    #[error("no commitment for round {0}")]
    Unknown(u64),
    #[error("round {0} expired or was revealed; its bytes are gone")]
    Gone(u64),
    #[error("round {0} was already revealed")]
    AlreadyRevealed(u64),
}

impl RevealRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown_round",
            Self::Gone(_) => "expired_round",
            Self::AlreadyRevealed(_) => "already_revealed",
        }
    }
}

#[derive(Debug, Default)]
struct ClientRounds {
    floor: Option<u64>,
    rounds: BTreeMap<u64, Entry>,
}

/// Every client's rounds.
#[derive(Debug)]
pub struct Rounds {
    ttl: Duration,
    max_open: usize,
    open: usize,
    clients: HashMap<ClientId, ClientRounds>,
}

impl Rounds {
    pub fn new(ttl: Duration, max_open: usize) -> Self {
        Self {
            ttl,
            max_open,
            open: 0,
            clients: HashMap::new(),
        }
    }

    /// Rounds held (committed or revealed tombstones).
    pub fn open(&self) -> usize {
        self.open
    }

    /// Drops expired rounds (zeroing their bytes) and raises the floors; returns how many.
    pub fn purge(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        for c in self.clients.values_mut() {
            let expired: Vec<u64> = c
                .rounds
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(r, _)| *r)
                .collect();
            for r in expired {
                // Dropping the entry zeroes its bytes (SecretBytes).
                c.rounds.remove(&r);
                c.floor = Some(c.floor.map_or(r, |f| f.max(r)));
                purged += 1;
            }
        }
        self.open -= purged;
        purged
    }

    /// The commitment already made for (client, round), or `None` when a new one may be made.
    pub fn existing(
        &self,
        client: &ClientId,
        round: u64,
        len: usize,
    ) -> Result<Option<(&Commitment, &[u8])>, CommitRefusal> {
        let c = self.clients.get(client);
        if let Some(e) = c.and_then(|c| c.rounds.get(&round)) {
            if e.bytes.is_none() {
                return Err(CommitRefusal::AlreadyRevealed(round));
            }
            if e.len != len {
                return Err(CommitRefusal::SizeMismatch {
                    round,
                    committed: e.len,
                    asked: len,
                });
            }
            return Ok(Some((&e.commitment, &e.signature)));
        }
        if let Some(floor) = c.and_then(|c| c.floor)
            && round <= floor
        {
            return Err(CommitRefusal::Stale { round, floor });
        }
        if self.open >= self.max_open {
            return Err(CommitRefusal::TooMany(self.open));
        }
        Ok(None)
    }

    /// Stores a new commitment; call only after [`Self::existing`] returned `Ok(None)`.
    pub fn insert(
        &mut self,
        client: ClientId,
        round: u64,
        commitment: Commitment,
        signature: Vec<u8>,
        bytes: SecretBytes,
        now: Instant,
    ) {
        let entry = Entry {
            commitment,
            signature,
            len: bytes.len(),
            expires: now + self.ttl,
            bytes: Some(bytes),
        };
        let c = self.clients.entry(client).or_default();
        if c.rounds.insert(round, entry).is_none() {
            self.open += 1;
        }
    }

    /// The committed entry for (client, round), if its bytes are still there.
    pub fn get(&self, client: &ClientId, round: u64) -> Result<&Entry, RevealRefusal> {
        let c = self.clients.get(client);
        match c.and_then(|c| c.rounds.get(&round)) {
            Some(e) if e.bytes.is_some() => Ok(e),
            Some(_) => Err(RevealRefusal::AlreadyRevealed(round)),
            None if c.and_then(|c| c.floor).is_some_and(|f| round <= f) => {
                Err(RevealRefusal::Gone(round))
            }
            None => Err(RevealRefusal::Unknown(round)),
        }
    }

    /// Takes the bytes out for the one reveal; the entry stays as a tombstone.
    pub fn take(&mut self, client: &ClientId, round: u64) -> Result<SecretBytes, RevealRefusal> {
        self.get(client, round)?;
        self.clients
            .get_mut(client)
            .and_then(|c| c.rounds.get_mut(&round))
            .and_then(|e| e.bytes.take())
            .ok_or(RevealRefusal::AlreadyRevealed(round))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(n: usize) -> SecretBytes {
        SecretBytes::new(vec![7; n])
    }

    #[test]
    fn one_commitment_per_round_revealed_once() {
        let t = Instant::now();
        let mut r = Rounds::new(Duration::from_secs(10), 8);
        let a = [1; 32];
        let b = [2; 32];
        assert_eq!(r.existing(&a, 5, 16), Ok(None));
        r.insert(a, 5, [9; 32], vec![1], sb(16), t);
        // Idempotent for the same size; a different size is a conflict.
        assert_eq!(r.existing(&a, 5, 16).unwrap().unwrap().0, &[9; 32]);
        assert_eq!(r.existing(&a, 5, 17).unwrap_err().reason(), "size_mismatch");
        // Another client's round 5 is its own.
        assert_eq!(r.existing(&b, 5, 16), Ok(None));
        assert_eq!(r.get(&b, 5).unwrap_err(), RevealRefusal::Unknown(5));
        assert_eq!(r.take(&a, 5).unwrap().len(), 16);
        assert_eq!(
            r.take(&a, 5).unwrap_err(),
            RevealRefusal::AlreadyRevealed(5)
        );
        assert_eq!(
            r.existing(&a, 5, 16),
            Err(CommitRefusal::AlreadyRevealed(5))
        );
        // Expiry zeroes and raises the floor: round 5 and below can never be committed again.
        assert_eq!(r.purge(t + Duration::from_secs(10)), 1);
        assert_eq!(r.open(), 0);
        assert_eq!(
            r.existing(&a, 5, 16),
            Err(CommitRefusal::Stale { round: 5, floor: 5 })
        );
        assert_eq!(r.get(&a, 4).unwrap_err(), RevealRefusal::Gone(4));
        assert_eq!(r.existing(&a, 6, 16), Ok(None));
    }

    #[test]
    fn open_rounds_are_bounded() {
        let t = Instant::now();
        let mut r = Rounds::new(Duration::from_secs(10), 2);
        r.insert([1; 32], 1, [0; 32], vec![], sb(1), t);
        r.insert([1; 32], 2, [0; 32], vec![], sb(1), t);
        assert_eq!(r.existing(&[1; 32], 3, 1), Err(CommitRefusal::TooMany(2)));
        // Out of order within the TTL is fine.
        r.purge(t);
        assert_eq!(r.open(), 2);
    }
}
