//! The pull client: each configured hub's reachability, the provenance classes consumers asked
//! for, and the two tasks that talk to the hubs: [`refill_task`] keeps the pool at its high
//! watermark, [`probe_task`] asks each hub for nothing every few seconds (for `/api/rng/health`)
//! and, when no verified packet arrived for a while, for one packet, so a hub that answers but
//! delivers nothing is not taken for a live one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pool::Pool;
use crate::wire::Provenance;
use crate::wire::refill;

use super::intake::Intake;
use super::lock;

/// One hub as the daemon sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubStatus {
    pub url: String,
    pub reachable: bool,
    #[serde(skip)]
    pub last_answer: Option<Instant>,
    pub last_error: Option<String>,
}

/// The hubs this daemon pulls from, in the order it asks them.
#[derive(Debug)]
pub struct Hubs {
    recipient: String,
    status: Mutex<Vec<HubStatus>>,
    /// Provenance classes consumers asked for and the pool lacked: pulled next, by kind.
    wanted: Mutex<Vec<Provenance>>,
    /// The hub asked first: the last one that delivered. A hub that stops delivering loses the
    /// place to the next that does, and keeps it: its daemons fail over and stay over.
    preferred: AtomicUsize,
    intake: Arc<Intake>,
    pool: Arc<Pool>,
}

impl Hubs {
    /// `recipient` is this daemon's id, as its client certificate names it.
    pub fn new(recipient: &str, urls: &[String], intake: Arc<Intake>, pool: Arc<Pool>) -> Self {
        let status = urls
            .iter()
            .map(|url| HubStatus {
                url: url.clone(),
                reachable: false,
                last_answer: None,
                last_error: None,
            })
            .collect();
        Self {
            recipient: recipient.to_owned(),
            status: Mutex::new(status),
            wanted: Mutex::new(Vec::new()),
            preferred: AtomicUsize::new(0),
            intake,
            pool,
        }
    }

    pub fn status(&self) -> Vec<HubStatus> {
        lock(&self.status).clone()
    }

    fn len(&self) -> usize {
        lock(&self.status).len()
    }

    /// A consumer asked for `class` and the pool had too little: ask the hubs for packets of
    /// that kind at the next refill. Hybrid is what hubs make by default, so it needs no filter.
    pub fn want_class(&self, class: Provenance) {
        if class != Provenance::Hybrid {
            let mut w = lock(&self.wanted);
            if !w.contains(&class) {
                w.push(class);
            }
        }
        self.pool.request_refill();
    }

    /// Records the outcome of talking to hub `i`, logging only changes of state.
    fn set(&self, i: usize, result: Result<(), String>) {
        let mut hubs = lock(&self.status);
        let h = &mut hubs[i];
        match result {
            Ok(()) => {
                if !h.reachable {
                    tracing::info!(hub = %h.url, "hub reachable");
                }
                h.reachable = true;
                h.last_answer = Some(Instant::now());
                h.last_error = None;
            }
            Err(e) => {
                if h.reachable || h.last_error.is_none() {
                    tracing::warn!(hub = %h.url, error = %e, "hub unreachable");
                }
                h.reachable = false;
                h.last_error = Some(e);
            }
        }
    }

    fn url(&self, i: usize) -> String {
        lock(&self.status)[i].url.clone()
    }

    /// Asks hub `i` for `bytes` of packets (0 = a reachability probe); admits what verifies.
    /// Returns the bytes admitted. An answer is not contact: only a verified packet ends the
    /// silence that starts the fallback.
    async fn pull(
        &self,
        client: &reqwest::Client,
        i: usize,
        bytes: usize,
        source: Option<Provenance>,
    ) -> Result<usize, String> {
        let url = format!(
            "{}{}",
            self.url(i).trim_end_matches('/'),
            refill::REFILL_PATH
        );
        let resp = client
            .post(&url)
            .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
            .json(&refill::RefillRequest::new(&self.recipient, bytes, source))
            .send()
            .await
            .map_err(|e| format!("request failed: {}", crate::util::error_chain(&e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::BAD_REQUEST && source.is_some() {
            // The hub answered: it just has no source of that kind.
            return Ok(0);
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // Reachable, but this daemon has used its share for now.
            return Ok(0);
        }
        if !status.is_success() {
            return Err(format!("hub answered {status}"));
        }
        let body = read_answer(resp).await?;
        // CPU work and a journal sync: on the blocking pool, off the async workers.
        let intake = self.intake.clone();
        let (_, admitted) =
            tokio::task::spawn_blocking(move || intake.receive_frames(body.expose()))
                .await
                .map_err(|_| "refill answer: verification panicked".to_owned())?
                .map_err(|e| format!("refill answer: {e}"))?;
        Ok(admitted)
    }

    /// The hub asked first: the last one that delivered.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    /// Pulls `want` bytes of `class` (or of any class), asking the hubs in turn, starting with
    /// the [`Self::preferred`] one, until one delivers; that one is asked first next time.
    /// Returns the bytes admitted (0 when none did).
    async fn pull_from_any(
        &self,
        client: &reqwest::Client,
        want: usize,
        class: Option<Provenance>,
    ) -> usize {
        let hubs = self.len();
        let first = self.preferred();
        for i in (0..hubs).map(|k| (first + k) % hubs) {
            match self.pull(client, i, want, class).await {
                Ok(n) => {
                    if class.is_none() {
                        self.set(i, Ok(()));
                    }
                    tracing::debug!(hub = i, asked = want, admitted = n, "refill pull");
                    if n > 0 {
                        if self.preferred.swap(i, Ordering::Relaxed) != i {
                            tracing::info!(hub = %self.url(i), "refilling from this hub now");
                        }
                        return n;
                    }
                }
                Err(e) => self.set(i, Err(e)),
            }
        }
        0
    }
}

/// Reads a refill answer, bounded by [`refill::MAX_ANSWER_BYTES`] (declared and actual).
/// Reserved once from the declared length; beyond it the buffer grows by hand, zeroing the old
/// allocation, so no unzeroed copy of the entropy is left behind.
async fn read_answer(mut resp: reqwest::Response) -> Result<crate::secret::SecretBytes, String> {
    let limit = refill::MAX_ANSWER_BYTES;
    let declared = resp.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err("refill answer too large".into());
    }
    let mut body = crate::secret::SecretBytes::new(Vec::with_capacity(declared as usize));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading refill: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err("refill answer too large".into());
        }
        body.append(&chunk);
    }
    Ok(body)
}

/// Keeps the pool at its high watermark: whenever [`Pool::refill_plan`] asks for bytes (the
/// pool fell a refill's worth below the high watermark, below the low watermark, or a consumer
/// went unserved), pulls that much from the hubs in order, at most `chunk` bytes per pull.
/// While no hub delivers, waits between attempts (doubling to 5 s).
pub async fn refill_task(hubs: Arc<Hubs>, client: reqwest::Client, chunk: usize) {
    if hubs.len() == 0 {
        return;
    }
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            _ = hubs.pool.refill_needed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        // Consumers that asked for one provenance class the pool lacked come first.
        let classes = std::mem::take(&mut *lock(&hubs.wanted));
        for class in classes {
            let want = chunk.min(hubs.pool.free());
            hubs.pull_from_any(&client, want, Some(class)).await;
        }
        let plan = hubs.pool.refill_plan(chunk);
        let delivered = plan == 0 || pull_plan(&hubs, &client, plan, chunk).await;
        backoff = if delivered {
            Duration::ZERO
        } else {
            (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
        };
    }
}

/// Pulls a refill's worth in `chunk`-sized answers, [`REFILL_IN_FLIGHT`] at once: while the
/// daemon verifies one answer (on the blocking pool) the hub builds the next, instead of each end
/// waiting for the other. Never asks for more than `plan` in all; stops asking once a pull
/// delivers nothing. Returns whether any pull delivered.
async fn pull_plan(hubs: &Hubs, client: &reqwest::Client, mut plan: usize, chunk: usize) -> bool {
    use futures::StreamExt;
    let mut flying = futures::stream::FuturesUnordered::new();
    let (mut asked, mut delivered, mut dry) = (0usize, false, false);
    loop {
        while !dry && flying.len() < REFILL_IN_FLIGHT && plan > asked {
            let want = (plan - asked).min(chunk);
            asked += want;
            flying.push(async move { (want, hubs.pull_from_any(client, want, None).await) });
        }
        let Some((want, got)) = flying.next().await else {
            return delivered;
        };
        asked -= want;
        dry |= got == 0;
        delivered |= got > 0;
        plan = plan.saturating_sub(got);
    }
}

/// Refill pulls one daemon has outstanding at once (see [`pull_plan`]).
pub const REFILL_IN_FLIGHT: usize = 2;

/// Asks every hub for nothing (`bytes: 0`) `every` so /health shows each hub's reachability.
/// When no verified packet arrived for that long (an idle daemon whose pool is full, or a hub
/// that answers but delivers nothing), it also asks the hubs, in order, for one packet: silence
/// is "no verified bytes", never "no answer", so a hub that answers but cannot or will not
/// deliver good packets still starts the fallback.
pub async fn probe_task(hubs: Arc<Hubs>, client: reqwest::Client, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let probes = (0..hubs.len()).map(|i| {
            let (hubs, client) = (&hubs, &client);
            async move {
                let r = hubs.pull(client, i, 0, None).await;
                if let Err(e) = &r {
                    tracing::debug!(hub = %hubs.url(i), error = %e, "hub probe failed");
                }
                hubs.set(i, r.map(|_| ()));
            }
        });
        futures::future::join_all(probes).await;
        if hubs.intake.silence() < every {
            continue;
        }
        for i in 0..hubs.len() {
            let before = hubs.intake.silence();
            if let Err(e) = hubs.pull(&client, i, 1, None).await {
                tracing::debug!(hub = %hubs.url(i), error = %e, "liveness pull failed");
            }
            if hubs.intake.silence() < before {
                break;
            }
        }
    }
}
