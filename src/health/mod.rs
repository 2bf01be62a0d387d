//! SP 800-90B continuous health tests (section 4.4) on 8-bit samples, and a per-source quality
//! score.
//!
//! The cutoffs are computed from the false-positive probability `alpha = 2^-alpha_exp` and the
//! claimed min-entropy per sample `H`, exactly as 800-90B defines them, not read from a table:
//! repetition count `C = 1 + ceil(alpha_exp / H)`, adaptive proportion `C = 1 + CRITBINOM(W, 2^-H,
//! 1 - alpha)` with `W = 512`. Failures never report the sample value that repeated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Adaptive proportion window for non-binary samples.
pub const APT_WINDOW: usize = 512;
/// Default false-positive exponent: alpha = 2^-30.
pub const DEFAULT_ALPHA_EXP: u32 = 30;

/// Which test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HealthFailure {
    #[error("repetition count test failed: a value repeated {run} times (cutoff {cutoff})")]
    RepetitionCount { run: usize, cutoff: usize },
    #[error(
        "adaptive proportion test failed: a value occurred {count} times in {APT_WINDOW} (cutoff {cutoff})"
    )]
    AdaptiveProportion { count: usize, cutoff: usize },
}

/// Repetition-count cutoff for `alpha = 2^-alpha_exp` and `h` bits of min-entropy per sample.
pub fn rct_cutoff(alpha_exp: u32, h: f64) -> usize {
    1 + (f64::from(alpha_exp) / h).ceil() as usize
}

/// Adaptive-proportion cutoff: one more than the smallest `k` with `P(Binom(W, 2^-h) > k) <= alpha`.
pub fn apt_cutoff(alpha_exp: u32, h: f64, window: usize) -> usize {
    let p = (-h).exp2();
    let alpha = (-f64::from(alpha_exp)).exp2();
    let n = window as f64;
    // log pmf(j) by the recurrence pmf(j+1) = pmf(j) * (n-j)/(j+1) * p/(1-p).
    let mut log_pmf = Vec::with_capacity(window + 1);
    let mut lp = n * (1.0 - p).ln();
    for j in 0..=window {
        log_pmf.push(lp);
        let jf = j as f64;
        lp += ((n - jf) / (jf + 1.0)).ln() + (p / (1.0 - p)).ln();
    }
    let mut tail = 0.0; // P(X > k), built from the top down
    for k in (0..=window).rev() {
        // tail currently holds P(X > k).
        if tail > alpha {
            return k + 2;
        }
        tail += log_pmf[k].exp();
    }
    1
}

/// Continuous health tests over one stream of bytes.
#[derive(Debug, Clone)]
pub struct HealthTester {
    rct_cutoff: usize,
    apt_cutoff: usize,
    rct_last: Option<u8>,
    rct_run: usize,
    apt_ref: u8,
    apt_count: usize,
    apt_seen: usize,
}

impl HealthTester {
    /// Tests for samples claimed to carry `h` bits of min-entropy each (0 < h <= 8).
    pub fn new(alpha_exp: u32, h: f64) -> Self {
        let h = h.clamp(0.01, 8.0);
        Self {
            rct_cutoff: rct_cutoff(alpha_exp, h),
            apt_cutoff: apt_cutoff(alpha_exp, h, APT_WINDOW),
            rct_last: None,
            rct_run: 0,
            apt_ref: 0,
            apt_count: 0,
            apt_seen: 0,
        }
    }

    pub fn cutoffs(&self) -> (usize, usize) {
        (self.rct_cutoff, self.apt_cutoff)
    }

    /// Runs both tests over `bytes`, continuing from earlier calls.
    ///
    /// Whole adaptive-proportion windows are first screened by a branch-free pass (the longest
    /// run, and how often the window's first byte occurs); a window that cannot alarm only moves
    /// the state on, and any other window, and the partial windows at either end, go through
    /// [`Self::feed_bytewise`], the tests exactly as SP 800-90B words them. So the result, the
    /// failure and the state after a failure are the byte-by-byte ones.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        let head = ((APT_WINDOW - self.apt_seen) % APT_WINDOW).min(bytes.len());
        let (head, rest) = bytes.split_at(head);
        self.feed_bytewise(head)?;
        let mut windows = rest.chunks_exact(APT_WINDOW);
        for w in &mut windows {
            if !self.window_passes(w) {
                self.feed_bytewise(w)?;
            }
        }
        self.feed_bytewise(windows.remainder())
    }

    /// For one whole window starting a new adaptive-proportion window: when neither test can
    /// reach its cutoff in it, applies the window's effect on the state and returns true;
    /// otherwise changes nothing and returns false.
    fn window_passes(&mut self, w: &[u8]) -> bool {
        debug_assert!(self.apt_seen == 0 && w.len() == APT_WINDOW);
        let first = w[0];
        // The first sample is the reference and counts once; later occurrences count too.
        let count = w.iter().filter(|&&b| b == first).count();
        if count >= self.apt_cutoff {
            return false;
        }
        // Runs: the run carried in from before continues while bytes equal `rct_last`. A run
        // of length L inside the window has L - 1 equal neighbours, so with fewer equal
        // neighbours in all than the cutoff needs, no run can reach it.
        let carried = if self.rct_last == Some(first) {
            self.rct_run
        } else {
            0
        };
        let pairs = w[..APT_WINDOW - 1]
            .iter()
            .zip(&w[1..])
            .filter(|(a, b)| a == b)
            .count();
        if carried + 1 + pairs >= self.rct_cutoff {
            return false;
        }
        let last = w[APT_WINDOW - 1];
        let trailing = w.iter().rev().take_while(|&&b| b == last).count();
        let run = if trailing == APT_WINDOW {
            carried + APT_WINDOW
        } else {
            trailing
        };
        self.rct_last = Some(last);
        self.rct_run = run;
        // After a whole window the proportion test is back at the start of one.
        self.apt_ref = first;
        self.apt_count = count;
        self.apt_seen = 0;
        true
    }

    /// The tests byte by byte, as SP 800-90B states them.
    fn feed_bytewise(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        for &b in bytes {
            if self.rct_last == Some(b) {
                self.rct_run += 1;
                if self.rct_run >= self.rct_cutoff {
                    return Err(HealthFailure::RepetitionCount {
                        run: self.rct_run,
                        cutoff: self.rct_cutoff,
                    });
                }
            } else {
                self.rct_last = Some(b);
                self.rct_run = 1;
            }
            if self.apt_seen == 0 {
                self.apt_ref = b;
                self.apt_count = 1;
            } else if b == self.apt_ref {
                self.apt_count += 1;
                if self.apt_count >= self.apt_cutoff {
                    return Err(HealthFailure::AdaptiveProportion {
                        count: self.apt_count,
                        cutoff: self.apt_cutoff,
                    });
                }
            }
            self.apt_seen = (self.apt_seen + 1) % APT_WINDOW;
        }
        Ok(())
    }

    /// Starts over, as after a source is re-admitted from quarantine.
    pub fn reset(&mut self) {
        self.rct_last = None;
        self.rct_run = 0;
        self.apt_seen = 0;
        self.apt_count = 0;
    }
}

/// Status of a source for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = SourceState)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    Degraded,
    Quarantined,
}

impl Status {
    /// The name `/health` shows (the serialized form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Quarantined => "quarantined",
        }
    }
}

/// One source's health over time: its tests, a quality score and quarantine.
///
/// The quality score is the fraction of the last [`QUALITY_WINDOW`] tested blocks that passed (a
/// failure or fetch error counts as a failed block); it reads 0 before any block was seen.
#[derive(Debug)]
pub struct SourceHealth {
    tester: HealthTester,
    recent: VecDeque<bool>,
    quarantine: Duration,
    quarantined_until: Option<Instant>,
    last_failure: Option<String>,
    last_success: Option<std::time::SystemTime>,
}

pub const QUALITY_WINDOW: usize = 64;

impl SourceHealth {
    pub fn new(alpha_exp: u32, min_entropy_per_byte: f64, quarantine: Duration) -> Self {
        Self {
            tester: HealthTester::new(alpha_exp, min_entropy_per_byte),
            recent: VecDeque::with_capacity(QUALITY_WINDOW),
            quarantine,
            quarantined_until: None,
            last_failure: None,
            last_success: None,
        }
    }

    fn record(&mut self, ok: bool) {
        if self.recent.len() == QUALITY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(ok);
    }

    /// Tests one block of raw bytes. On failure the source is quarantined.
    pub fn check_block(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        match self.tester.feed(bytes) {
            Ok(()) => {
                self.record(true);
                self.last_success = Some(std::time::SystemTime::now());
                Ok(())
            }
            Err(e) => {
                self.record(false);
                self.tester.reset();
                self.quarantined_until = Some(Instant::now() + self.quarantine);
                self.last_failure = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Records a block that passed tests run elsewhere (the daemon's verifier).
    pub fn record_pass(&mut self) {
        self.record(true);
        self.last_success = Some(std::time::SystemTime::now());
    }

    /// Records a failed fetch (timeout, error): lowers quality, does not quarantine.
    pub fn record_error(&mut self, reason: String) {
        self.record(false);
        self.last_failure = Some(reason);
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined_until.is_some_and(|t| Instant::now() < t)
    }

    pub fn quality(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().filter(|&&ok| ok).count() as f64 / self.recent.len() as f64
    }

    pub fn status(&self) -> Status {
        if self.is_quarantined() {
            Status::Quarantined
        } else if self.recent.back() == Some(&true) {
            Status::Up
        } else {
            Status::Degraded
        }
    }

    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    pub fn last_success(&self) -> Option<std::time::SystemTime> {
        self.last_success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cutoffs FACTS.md lists, computed independently.
    #[test]
    fn cutoffs_match_sp800_90b_values() {
        for (a, h, rct) in [(20, 1.0, 21), (20, 2.0, 11), (20, 4.0, 6), (20, 8.0, 4)] {
            assert_eq!(rct_cutoff(a, h), rct, "rct a={a} h={h}");
        }
        for (a, h, rct) in [(30, 1.0, 31), (30, 2.0, 16), (30, 4.0, 9), (30, 8.0, 5)] {
            assert_eq!(rct_cutoff(a, h), rct, "rct a={a} h={h}");
        }
        for (a, h, c) in [(20, 1.0, 311), (20, 2.0, 177), (20, 4.0, 62), (20, 8.0, 13)] {
            assert_eq!(apt_cutoff(a, h, 512), c, "apt a={a} h={h}");
        }
        for (a, h, c) in [(30, 1.0, 325), (30, 2.0, 190), (30, 4.0, 71), (30, 8.0, 16)] {
            assert_eq!(apt_cutoff(a, h, 512), c, "apt a={a} h={h}");
        }
        assert_eq!(apt_cutoff(20, 0.5, 1024), 793);
        assert_eq!(apt_cutoff(20, 1.0, 1024), 589);
    }

    #[test]
    fn stuck_source_fails_rct() {
        let mut t = HealthTester::new(30, 8.0);
        assert_eq!(
            t.feed(&[7; 5]),
            Err(HealthFailure::RepetitionCount { run: 5, cutoff: 5 })
        );
        let mut t = HealthTester::new(30, 8.0);
        assert!(t.feed(&[7, 7, 7, 7, 8, 7, 7, 7, 7]).is_ok());
    }

    #[test]
    fn biased_source_fails_apt() {
        // Every other byte is 0: no long runs, but far too many zeros per window.
        let biased: Vec<u8> = (0..1024u32)
            .map(|i| if i % 2 == 0 { 0 } else { (i % 251) as u8 + 1 })
            .collect();
        let mut t = HealthTester::new(30, 8.0);
        assert!(matches!(
            t.feed(&biased),
            Err(HealthFailure::AdaptiveProportion { .. })
        ));
    }

    /// The windowed fast path gives what the byte-by-byte tests give: the same verdict, the same
    /// failure, the same state after, wherever calls split the stream.
    #[test]
    fn fast_path_matches_bytewise() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..400 {
            let len = (next() % 5000) as usize;
            // Low-entropy alphabets make runs and repeats that reach the cutoffs.
            let alphabet = [256u64, 64, 16, 4, 2][case % 5];
            let mut bytes: Vec<u8> = (0..len).map(|_| (next() % alphabet) as u8).collect();
            if case % 7 == 0 && len > 600 {
                let at = (next() as usize) % (len - 10);
                bytes[at..at + 6].fill(0xAA);
            }
            let h = [8.0, 6.0, 4.0, 2.0, 1.0][case % 5];
            let mut fast = HealthTester::new(30, h);
            let mut slow = fast.clone();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let take = ((next() % 1500) as usize + 1).min(rest.len());
                let (part, tail) = rest.split_at(take);
                rest = tail;
                let a = fast.feed(part);
                let b = slow.feed_bytewise(part);
                assert_eq!(a, b, "case {case}");
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "case {case}");
                if a.is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn random_bytes_pass() {
        let mut buf = vec![0u8; 1 << 20];
        getrandom::fill(&mut buf).unwrap();
        let mut t = HealthTester::new(30, 8.0);
        assert!(t.feed(&buf).is_ok());
    }

    #[test]
    fn quarantine_and_quality() {
        let mut s = SourceHealth::new(30, 8.0, Duration::from_secs(60));
        assert_eq!(s.quality(), 0.0);
        let mut good = vec![0u8; 4096];
        getrandom::fill(&mut good).unwrap();
        s.check_block(&good).unwrap();
        assert_eq!(s.quality(), 1.0);
        assert_eq!(s.status(), Status::Up);
        assert!(s.check_block(&[0; 64]).is_err());
        assert!(s.is_quarantined());
        assert_eq!(s.status(), Status::Quarantined);
        assert_eq!(s.quality(), 0.5);
        assert!(s.last_failure().unwrap().contains("repetition"));
    }
}
