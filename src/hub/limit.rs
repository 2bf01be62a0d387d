//! Each daemon's share of the hub: a byte rate and a burst per recipient id (token bucket).
//!
//! A refill may ask for up to [`crate::wire::refill::MAX_PACKETS_PER_PULL`] packets, each costing source
//! draws, node rounds and proofs; without a share one daemon (or a stolen daemon certificate)
//! could spend the sources' quota for every other. Buckets are keyed by registered recipient
//! ids, so their number is bounded by the hub's config.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct DaemonShare {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl DaemonShare {
    pub fn new(bytes_per_second: u64, burst_bytes: u64) -> Self {
        Self {
            rate: bytes_per_second as f64,
            burst: burst_bytes as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Grants `daemon` up to `packets` packets of `packet_bytes` each from its share now: the
    /// number granted (their bytes taken from the bucket), or `Err(wait)` when not even one
    /// packet's worth is left, with the time until one is.
    pub fn grant(
        &self,
        daemon: &str,
        packets: usize,
        packet_bytes: usize,
        now: Instant,
    ) -> Result<usize, Duration> {
        if packets == 0 {
            return Ok(0);
        }
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = b.entry(daemon.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        let size = packet_bytes as f64;
        let affordable = (*tokens / size).floor() as usize;
        if affordable == 0 {
            let wait = (size - *tokens) / self.rate.max(1.0);
            return Err(Duration::from_secs_f64(wait.max(0.001)));
        }
        let granted = affordable.min(packets);
        *tokens -= granted as f64 * size;
        Ok(granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let share = DaemonShare::new(4096, 16 * 1024);
        let t = Instant::now();
        assert_eq!(
            share.grant("a", 256, 4096, t),
            Ok(4),
            "the burst: 4 packets"
        );
        let wait = share.grant("a", 1, 4096, t).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Another daemon's bucket is its own.
        assert_eq!(share.grant("b", 2, 4096, t), Ok(2));
        // One second later, one packet's worth has come back.
        assert_eq!(
            share.grant("a", 256, 4096, t + Duration::from_secs(1)),
            Ok(1)
        );
        // Never more than the burst, however long the daemon was idle.
        assert_eq!(
            share.grant("a", 256, 4096, t + Duration::from_secs(3600)),
            Ok(4)
        );
        // A probe costs nothing.
        assert_eq!(share.grant("c", 0, 4096, t), Ok(0));
    }
}
