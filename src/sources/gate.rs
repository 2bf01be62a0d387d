//! Rate limit and backoff, the same for every source (modelled on rng-tools' qrypt source).
//!
//! A [`Gate`] says whether a source may be asked now. After each fetch it is told the outcome:
//! success clears the failure count and spaces the next call by `min_interval`; a
//! [`SourceError::Fatal`] (HTTP 400/401, wrong PIN, missing token) disables the source until the
//! hub restarts; a quota error (403) waits `quota_wait` or the server's Retry-After; 429 honours
//! Retry-After; everything else (5xx, timeouts, malformed answers) backs off exponentially from
//! `backoff_base` up to `backoff_max`. Time is passed in, so the policy is tested without sleeping.

use std::time::{Duration, Instant};

use super::SourceError;

/// The longest a server's Retry-After is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub quota_wait: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_interval: Duration::ZERO,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            quota_wait: Duration::from_secs(3600),
        }
    }
}

/// Why a source is not asked now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Disabled until restart; the reason names the failure.
    Disabled(String),
    /// Backing off until the instant; the reason names the failure that caused it.
    Waiting { until: Instant, reason: String },
    /// Healthy, but the rate limit allows the next call only at the instant.
    Pacing(Instant),
}

#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    next_at: Option<Instant>,
    next_reason: String,
    pacing: bool,
    failures: u32,
    fatal: Option<String>,
}

impl Gate {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            next_at: None,
            next_reason: String::new(),
            pacing: false,
            failures: 0,
            fatal: None,
        }
    }

    /// `Ok` when the source may be asked at `now`.
    pub fn check(&self, now: Instant) -> Result<(), Blocked> {
        if let Some(r) = &self.fatal {
            return Err(Blocked::Disabled(r.clone()));
        }
        match self.next_at {
            Some(t) if now < t && self.pacing => Err(Blocked::Pacing(t)),
            Some(t) if now < t => Err(Blocked::Waiting {
                until: t,
                reason: self.next_reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub fn success(&mut self, now: Instant) {
        self.failures = 0;
        self.next_at =
            (!self.policy.min_interval.is_zero()).then(|| now + self.policy.min_interval);
        self.next_reason.clear();
        self.pacing = true;
    }

    /// Records a failed fetch; returns how long the source now waits (`None`: disabled).
    pub fn failure(&mut self, e: &SourceError, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let wait = match e {
            SourceError::Fatal(r) => {
                self.fatal = Some(r.clone());
                return None;
            }
            SourceError::Quota { retry_after } => retry_after
                .unwrap_or(self.policy.quota_wait)
                .min(MAX_RETRY_AFTER),
            SourceError::RateLimited {
                retry_after: Some(d),
            } => (*d).min(MAX_RETRY_AFTER),
            _ => self.exponential(),
        };
        self.next_at = Some(now + wait);
        self.next_reason = e.to_string();
        self.pacing = false;
        Some(wait)
    }

    fn exponential(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(30);
        self.policy
            .backoff_base
            .saturating_mul(1u32 << shift)
            .min(self.policy.backoff_max)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate::new(Policy {
            min_interval: Duration::from_millis(100),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            quota_wait: Duration::from_secs(600),
        })
    }

    #[test]
    fn exponential_backoff_is_capped_and_reset_by_success() {
        let mut g = gate();
        let t = Instant::now();
        let e = SourceError::Unavailable("HTTP 500".into());
        let waits: Vec<_> = (0..6)
            .map(|_| g.failure(&e, t).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert!(matches!(g.check(t), Err(Blocked::Waiting { .. })));
        assert!(g.check(t + Duration::from_secs(10)).is_ok());
        g.success(t);
        assert_eq!(g.consecutive_failures(), 0);
        assert_eq!(
            g.check(t + Duration::from_millis(50)),
            Err(Blocked::Pacing(t + Duration::from_millis(100)))
        );
        assert!(g.check(t + Duration::from_millis(100)).is_ok());
        assert_eq!(g.failure(&e, t), Some(Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_quota_and_fatal() {
        let t = Instant::now();
        let mut g = gate();
        let rl = SourceError::RateLimited {
            retry_after: Some(Duration::from_secs(42)),
        };
        assert_eq!(g.failure(&rl, t), Some(Duration::from_secs(42)));
        let rl = SourceError::RateLimited { retry_after: None };
        assert_eq!(g.failure(&rl, t), Some(Duration::from_secs(2)));
        let q = SourceError::Quota { retry_after: None };
        assert_eq!(g.failure(&q, t), Some(Duration::from_secs(600)));
        let q = SourceError::Quota {
            retry_after: Some(Duration::from_secs(10 * 24 * 3600)),
        };
        assert_eq!(g.failure(&q, t), Some(MAX_RETRY_AFTER));
        let f = SourceError::Fatal("HTTP 401".into());
        assert_eq!(g.failure(&f, t), None);
        let far = t + Duration::from_secs(365 * 24 * 3600);
        assert_eq!(g.check(far), Err(Blocked::Disabled("HTTP 401".into())));
    }
}
