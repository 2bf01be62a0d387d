//! Each daemon's share of the hub, and the hub's own budget (token buckets, `[limits]`).
//!
//! A refill may ask for up to [`crate::wire::refill::MAX_PACKETS_PER_PULL`] packets, each costing
//! source draws, node rounds and proofs; without a share one daemon (or a stolen daemon
//! certificate) could spend the sources' quota for every other. Each recipient id has a bucket
//! (`daemon_bytes_per_second`, `daemon_burst_bytes`), and when `hub_bytes_per_second` is set
//! every grant also comes out of one hub-wide bucket: the most this hub draws from its sources
//! for all daemons together, so a greedy daemon takes at most its own share of that budget.
//!
//! Pulls need no config entry, so ids come from certificates: at most [`MAX_DAEMONS`] buckets are
//! kept. A full bucket carries no state (a new one would start full too), so at the cap full
//! buckets are dropped; only when every kept daemon is mid-burst is a new id refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::HubLimits;

/// The most daemons whose buckets are kept at once.
pub const MAX_DAEMONS: usize = 65_536;

/// Why nothing was granted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// This daemon's share is used up; one packet's worth is back after this long.
    Daemon(Duration),
    /// The hub-wide budget is used up; one packet's worth is back after this long.
    Hub(Duration),
    /// [`MAX_DAEMONS`] daemons are each in the middle of a burst.
    TooManyDaemons,
}

impl Refusal {
    /// When to ask again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Daemon(d) | Self::Hub(d) => *d,
            Self::TooManyDaemons => Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Adds what `rate` earned since the last look, up to `burst`.
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.last = now;
    }

    /// Whole packets of `size` bytes in the bucket now.
    fn affordable(&self, size: f64) -> usize {
        (self.tokens / size).floor() as usize
    }

    /// Time until one packet of `size` bytes is affordable at `rate`.
    fn wait(&self, size: f64, rate: f64) -> Duration {
        Duration::from_secs_f64(((size - self.tokens) / rate.max(1.0)).max(0.001))
    }
}

#[derive(Debug)]
struct Shares {
    rate: f64,
    burst: f64,
    /// The hub-wide bucket's rate and burst, when `hub_bytes_per_second` is set.
    hub_limits: Option<(f64, f64)>,
    hub: Bucket,
    daemons: HashMap<String, Bucket>,
}

/// Every daemon's bucket and the hub-wide one.
#[derive(Debug)]
pub struct DaemonShare {
    shares: Mutex<Shares>,
}

fn hub_limits(l: &HubLimits) -> Option<(f64, f64)> {
    (l.hub_bytes_per_second > 0)
        .then_some((l.hub_bytes_per_second as f64, l.hub_burst_bytes as f64))
}

impl DaemonShare {
    pub fn new(limits: &HubLimits) -> Self {
        let now = Instant::now();
        let hub_limits = hub_limits(limits);
        Self {
            shares: Mutex::new(Shares {
                rate: limits.daemon_bytes_per_second as f64,
                burst: limits.daemon_burst_bytes as f64,
                hub_limits,
                hub: Bucket::full(hub_limits.map_or(0.0, |(_, b)| b), now),
                daemons: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shares> {
        self.shares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits (a config reload). Every bucket keeps what it holds, capped at the new burst:
    /// a reload never hands out a fresh burst.
    pub fn set_limits(&self, limits: &HubLimits) {
        let mut s = self.lock();
        s.rate = limits.daemon_bytes_per_second as f64;
        s.burst = limits.daemon_burst_bytes as f64;
        let burst = s.burst;
        for b in s.daemons.values_mut() {
            b.tokens = b.tokens.min(burst);
        }
        let new_hub = hub_limits(limits);
        if s.hub_limits.is_none() {
            // A budget that did not exist starts full.
            s.hub = Bucket::full(new_hub.map_or(0.0, |(_, b)| b), Instant::now());
        } else if let Some((_, b)) = new_hub {
            s.hub.tokens = s.hub.tokens.min(b);
        }
        s.hub_limits = new_hub;
    }

    /// Daemons with a bucket now.
    pub fn daemons(&self) -> usize {
        self.lock().daemons.len()
    }

    /// Grants `daemon` up to `packets` packets of `packet_bytes` each now: the number granted
    /// (their bytes taken from its bucket and the hub's), or why none was.
    pub fn grant(
        &self,
        daemon: &str,
        packets: usize,
        packet_bytes: usize,
        now: Instant,
    ) -> Result<usize, Refusal> {
        if packets == 0 {
            return Ok(0);
        }
        let mut guard = self.lock();
        let s = &mut *guard;
        let size = packet_bytes as f64;
        if !s.daemons.contains_key(daemon) && s.daemons.len() >= MAX_DAEMONS {
            let (rate, burst) = (s.rate, s.burst);
            s.daemons.retain(|_, b| {
                b.refill(rate, burst, now);
                b.tokens < burst
            });
            if s.daemons.len() >= MAX_DAEMONS {
                return Err(Refusal::TooManyDaemons);
            }
        }
        let (rate, burst) = (s.rate, s.burst);
        let mine = s
            .daemons
            .entry(daemon.to_owned())
            .or_insert(Bucket::full(burst, now));
        mine.refill(rate, burst, now);
        let mut granted = mine.affordable(size).min(packets);
        if granted == 0 {
            return Err(Refusal::Daemon(mine.wait(size, rate)));
        }
        if let Some((hub_rate, hub_burst)) = s.hub_limits {
            s.hub.refill(hub_rate, hub_burst, now);
            granted = granted.min(s.hub.affordable(size));
            if granted == 0 {
                return Err(Refusal::Hub(s.hub.wait(size, hub_rate)));
            }
            s.hub.tokens -= granted as f64 * size;
        }
        mine.tokens -= granted as f64 * size;
        Ok(granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u64, burst: u64, hub_rate: u64, hub_burst: u64) -> HubLimits {
        HubLimits {
            daemon_bytes_per_second: rate,
            daemon_burst_bytes: burst,
            hub_bytes_per_second: hub_rate,
            hub_burst_bytes: hub_burst,
            ..HubLimits::default()
        }
    }

    #[test]
    fn a_daemon_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let share = DaemonShare::new(&limits(4096, 16 * 1024, 0, 0));
        let t = Instant::now();
        assert_eq!(
            share.grant("a", 256, 4096, t),
            Ok(4),
            "the burst: 4 packets"
        );
        let Err(Refusal::Daemon(wait)) = share.grant("a", 1, 4096, t) else {
            panic!("a's share is used up");
        };
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Another daemon's bucket is its own.
        assert_eq!(share.grant("b", 2, 4096, t), Ok(2));
        // One second later, one packet's worth has come back.
        assert_eq!(
            share.grant("a", 256, 4096, t + Duration::from_secs(1)),
            Ok(1)
        );
        // Never more than the burst, however long the daemon was idle.
        let later = t + Duration::from_secs(3600);
        assert_eq!(share.grant("a", 256, 4096, later), Ok(4));
        // A probe costs nothing.
        assert_eq!(share.grant("c", 0, 4096, t), Ok(0));
    }

    #[test]
    fn a_greedy_daemon_takes_no_more_than_its_share_of_the_hub_budget() {
        // Hub: 10 packets/s, burst 20; each daemon: 4 packets/s, burst 8.
        let p = 1000;
        let share = DaemonShare::new(&limits(4 * p, 8 * p, 10 * p, 20 * p));
        let t = Instant::now();
        let (mut greedy, mut others) = (0, 0);
        for ms in (0..10_000).step_by(100) {
            let now = t + Duration::from_millis(ms);
            greedy += share.grant("greedy", 256, p as usize, now).unwrap_or(0);
            for d in ["b", "c"] {
                others += share.grant(d, 1, p as usize, now).unwrap_or(0);
            }
        }
        // The hub's whole budget over 9.9 s is 20 + 99 = 119 packets. The greedy daemon gets its
        // burst and its rate (8 + 4 * 9.9, at most 47), not the budget; the rest of it goes to
        // the two modest daemons asking 1 per 100 ms.
        assert!((40..=47).contains(&greedy), "greedy got {greedy}");
        assert!(others >= 119 - 47, "the others got {others}");
        assert!(
            greedy + others <= 119,
            "{greedy} + {others} over the hub budget"
        );
        // With the hub budget spent, the refusal says so.
        let share = DaemonShare::new(&limits(100 * p, 100 * p, p, p));
        assert_eq!(share.grant("a", 10, p as usize, t), Ok(1));
        assert!(matches!(
            share.grant("b", 1, p as usize, t),
            Err(Refusal::Hub(_))
        ));
    }

    #[test]
    fn new_limits_apply_at_once_and_hand_out_no_fresh_burst() {
        let share = DaemonShare::new(&limits(1000, 10_000, 0, 0));
        let t = Instant::now();
        assert_eq!(share.grant("a", 100, 1000, t), Ok(10));
        share.set_limits(&limits(1000, 4000, 0, 0));
        // Still empty: the reload did not refill it.
        assert!(share.grant("a", 1, 1000, t).is_err());
        // A new daemon starts with the new, smaller burst.
        assert_eq!(share.grant("b", 100, 1000, t), Ok(4));
        // A hub budget added by a reload starts full and binds from then on.
        share.set_limits(&limits(1000, 4000, 1000, 2000));
        assert_eq!(share.grant("c", 100, 1000, t), Ok(2));
        assert!(matches!(share.grant("d", 1, 1000, t), Err(Refusal::Hub(_))));
    }

    #[test]
    fn the_number_of_buckets_is_bounded_and_idle_ones_make_room() {
        let share = DaemonShare::new(&limits(1000, 2000, 0, 0));
        let t = Instant::now();
        for i in 0..MAX_DAEMONS {
            assert_eq!(share.grant(&format!("d{i}"), 1, 1000, t), Ok(1));
        }
        assert_eq!(share.daemons(), MAX_DAEMONS);
        // Every kept daemon is mid-burst: a new one is refused, a known one still served.
        assert_eq!(share.grant("new", 1, 1000, t), Err(Refusal::TooManyDaemons));
        assert_eq!(share.grant("d0", 1, 1000, t), Ok(1));
        // A second later the buckets that refilled are dropped; d0 (emptied) is kept.
        let later = t + Duration::from_secs(1);
        assert_eq!(share.grant("new", 1, 1000, later), Ok(1));
        assert_eq!(share.daemons(), 2, "d0 and new");
    }
}
