//! Round continuity: each node numbers the rounds it reveals for this daemon (its receipt's
//! `sequence`, 1, 2, ... within one node run, its `epoch`), so a round the hub discarded after the
//! nodes revealed, to pick an output it liked, leaves a number that never arrives.
//!
//! Packets may arrive a little out of order (push and pull race), so a number counts as missing
//! only once [`WINDOW`] later numbers have arrived. A new epoch (the node restarted) starts a new
//! window; numbers from before the first one seen are not counted. One window per node id: the
//! ids are the daemon's trusted nodes, so the state is bounded by its config.

use std::collections::HashMap;

/// How far out of order a number may arrive before it counts as missing.
pub const WINDOW: u64 = 32;

#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    /// Highest number seen, and a bit per number `max - i` (i < WINDOW) that arrived.
    max: u64,
    seen: u64,
    /// The first number seen in this epoch: nothing below it is missing.
    base: u64,
}

#[derive(Debug, Default)]
pub struct Continuity {
    nodes: HashMap<String, Window>,
}

impl Continuity {
    /// Records that `node` revealed round number `sequence` of `epoch` for this daemon; returns
    /// how many numbers are now known to be missing.
    pub fn observe(&mut self, node: &str, epoch: u64, sequence: u64) -> u64 {
        let fresh = Window {
            epoch,
            max: sequence,
            seen: 1,
            base: sequence,
        };
        let Some(w) = self.nodes.get_mut(node) else {
            self.nodes.insert(node.to_owned(), fresh);
            return 0;
        };
        if w.epoch != epoch {
            *w = fresh;
            return 0;
        }
        if sequence <= w.max {
            let i = w.max - sequence;
            if i < WINDOW {
                w.seen |= 1 << i;
            }
            return 0;
        }
        let shift = sequence - w.max;
        let mut missing = 0;
        // Numbers that leave the window now without having arrived.
        for i in WINDOW.saturating_sub(shift)..WINDOW {
            let Some(n) = w.max.checked_sub(i) else { break };
            if n >= w.base && w.seen & (1 << i) == 0 {
                missing += 1;
            }
        }
        // Numbers jumped over so far that they never enter the window.
        missing += shift.saturating_sub(WINDOW);
        w.seen = if shift >= WINDOW {
            0
        } else {
            (w.seen << shift) & ((1u64 << WINDOW) - 1)
        };
        w.seen |= 1;
        w.max = sequence;
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut Continuity, seqs: impl IntoIterator<Item = u64>) -> u64 {
        seqs.into_iter().map(|s| c.observe("n", 1, s)).sum()
    }

    #[test]
    fn in_order_and_slightly_out_of_order_rounds_are_no_gaps() {
        let mut c = Continuity::default();
        assert_eq!(feed(&mut c, 1..=200), 0);
        let mut c = Continuity::default();
        let mut order: Vec<u64> = (1..=200).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        assert_eq!(feed(&mut c, order), 0);
    }

    #[test]
    fn a_hub_that_drops_every_other_round_shows_its_gaps() {
        let mut c = Continuity::default();
        let gaps = feed(&mut c, (1..=401).step_by(2));
        // 200 numbers never arrived; the last WINDOW / 2 are still within the window.
        assert_eq!(gaps, 200 - WINDOW / 2);
        // A jump far ahead counts every number skipped.
        assert_eq!(c.observe("n", 1, 1_000), WINDOW / 2 + (599 - WINDOW));
    }

    #[test]
    fn a_restarted_node_starts_a_new_window_and_nothing_before_the_first_is_missing() {
        let mut c = Continuity::default();
        assert_eq!(feed(&mut c, 500..=510), 0);
        assert_eq!(c.observe("n", 2, 1), 0, "a new epoch");
        assert_eq!(c.observe("n", 2, 2), 0);
        assert_eq!(c.observe("other", 9, 7), 0);
    }
}
