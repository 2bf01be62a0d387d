//! Handlers for the `/api/rng/*` endpoints and `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zeroize::Zeroizing;

#[allow(unused_imports)] // named only by the OpenAPI annotations
use super::ErrorBody;
use super::openapi::{Accepted, ReceiveResponse};
use super::openapi::{
    Hardening, HealthResponse, HealthStatus, HubHealth, SourceHealth, StatsResponse,
};
#[allow(unused_imports)] // named only by the OpenAPI annotations
use super::openapi::{RandomRequestBody, RandomResponse};
use super::quantum::{BAD_ENCODING, Encoding};
use super::{ApiError, Handles};
use crate::pool::{Consumer, PoolError, Want};
use crate::verify::Reject;
use crate::wire::Provenance;
use crate::wire::refill;

pub const MAX_RANDOM_BYTES: u64 = 65_536;

struct RandomRequest {
    num_bytes: usize,
    encoding: Encoding,
    want: Want,
}

fn parse_random(body: &[u8]) -> Result<RandomRequest, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "num_bytes" | "encoding" | "source"))
    {
        return Err(ApiError::bad_request(format!(
            "unknown field `{k}`; expected num_bytes, encoding, source"
        )));
    }
    let num_bytes = match obj.get("num_bytes") {
        None => return Err(ApiError::bad_request("field `num_bytes` is required")),
        // JSON Schema's integer includes 2207.0: accept an integral number however written.
        Some(n) => match n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }) {
            Some(n) if (1..=MAX_RANDOM_BYTES).contains(&n) => n as usize,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "field `num_bytes` must be an integer 1..={MAX_RANDOM_BYTES}"
                )));
            }
        },
    };
    let encoding = Encoding::from_field(obj.get("encoding"))
        .ok_or_else(|| ApiError::bad_request(BAD_ENCODING))?;
    let want = match obj.get("source").map(|e| e.as_str()) {
        None | Some(Some("any")) => Want::Any,
        Some(Some(s)) => match Provenance::ALL.iter().find(|p| p.as_str() == s) {
            Some(p) => Want::Only(*p),
            None => return Err(bad_source()),
        },
        Some(None) => return Err(bad_source()),
    };
    Ok(RandomRequest {
        num_bytes,
        encoding,
        want,
    })
}

fn bad_source() -> ApiError {
    ApiError::bad_request(
        "field `source` must be one of any, hybrid, qrng, hsm, decentralized, local",
    )
}

/// `POST /api/rng/random`.
///
/// Takes `num_bytes` from the single-use pool: each byte is served once and erased.
#[utoipa::path(post, path = "/api/rng/random", tag = "rng",
    request_body(content = RandomRequestBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Random bytes", body = RandomResponse),
        (status = 400, description = "Bad field (named)", body = ErrorBody),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 413, description = "Body over http.max_request_bytes", body = ErrorBody),
        (status = 503, description = "Pool cannot serve the request now (reason pool_depleted)",
            body = ErrorBody),
    ))]
pub async fn random(State(d): State<Arc<Handles>>, body: Body) -> Response {
    let limit = d.http.max_request_bytes;
    let parsed = match read_limited(body, limit).await {
        Some(b) => parse_random(b.expose()),
        None => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body exceeds {limit} bytes (http.max_request_bytes)"),
            reason: None,
            retry_after: None,
        }),
    };
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            d.metrics.request(Consumer::Http.as_str(), "bad_request");
            d.metrics.http_reject("bad_request");
            return e.into_response();
        }
    };
    let taken = match take_waiting(&d, req.num_bytes, req.want).await {
        Ok(t) => t,
        Err(PoolError::Insufficient { available, wanted }) => {
            d.metrics.request(Consumer::Http.as_str(), "insufficient");
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "entropy pool cannot serve {wanted} bytes ({available} available); refill requested"
                ),
                reason: Some("pool_depleted"),
                retry_after: Some(1),
            }
            .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "unexpected pool error");
            return ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "internal error".into(),
                reason: None,
                retry_after: None,
            }
            .into_response();
        }
    };
    d.metrics.http_ok.inc();
    d.metrics.http_served.inc_by(taken.bytes.len() as u64);
    let data = Zeroizing::new(req.encoding.encode(taken.bytes.expose()));
    let source = taken
        .single_provenance()
        .map_or("mixed", Provenance::as_str);
    // Written by hand (every value is a number or a fixed ASCII label, nothing to escape) so no
    // serde_json::Value ever holds the secret, and with no intermediate allocations.
    let mut body = Zeroizing::new(String::with_capacity(data.len() + 220));
    body.push_str("{\"random_data\":\"");
    body.push_str(&data);
    let encoding = req.encoding.name();
    let _ = write!(
        body,
        "\",\"num_bytes\":{},\"encoding\":\"{encoding}\",\"source\":\"{source}\",\"provenance\":{{",
        req.num_bytes
    );
    let mut first = true;
    for p in Provenance::ALL {
        let n = taken.by_provenance[p as usize];
        if n > 0 {
            let _ = write!(
                body,
                "{}\"{}\":{n}",
                if first { "" } else { "," },
                p.as_str()
            );
            first = false;
        }
    }
    let _ = write!(
        body,
        "}},\"consumed\":true,\"timestamp\":\"{}\"}}",
        crate::util::rfc3339_now()
    );
    // Moved, not copied, into a body that is zeroed when hyper is done with it.
    let body = Zeroizing::new(std::mem::take(&mut *body).into_bytes());
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(crate::secret::body_bytes(body)),
    )
        .into_response()
}

/// Takes `n` bytes, waiting up to `http.max_wait_ms` for a refill when the pool cannot serve them
/// whole (the shortfall is already counted into the next pull). At most
/// [`MAX_HTTP_WAITERS`] requests wait; the rest are answered at once.
async fn take_waiting(d: &Handles, n: usize, want: Want) -> Result<crate::pool::Taken, PoolError> {
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(d.http.max_wait_ms);
    let mut permit = None;
    loop {
        let arrival = d.pool.arrival();
        tokio::pin!(arrival);
        arrival.as_mut().enable();
        let err = match d.pool.take(n, want) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        if let Want::Only(class) = want {
            d.supply.hubs.want_class(class);
        }
        if permit.is_none() {
            match d.waiters.try_acquire() {
                Ok(p) => permit = Some(p),
                Err(_) => return Err(err),
            }
        }
        tokio::select! {
            () = &mut arrival => {}
            () = tokio::time::sleep_until(deadline) => return Err(err),
        }
    }
}

/// `POST /api/rng/receive` on the mutual-TLS listener: one canonical packet as the body.
///
/// Served only on the mutual-TLS listener (`receive.listen`); the HTTP shim answers 403.
#[utoipa::path(post, path = "/api/rng/receive", tag = "rng",
    params(("X-Quantum-Transport" = String, Header, description = "Must be `v1`")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "One canonical Kirq packet"),
    responses(
        (status = 200, description = "Packet verified and admitted", body = ReceiveResponse),
        (status = 400, description = "Packet rejected (reason)", body = ErrorBody),
        (status = 403, description = "Not the mutual-TLS listener, or client not allowed",
            body = ErrorBody),
        (status = 413, description = "Packet too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Pool full", body = ErrorBody),
    ))]
pub async fn receive(State(d): State<Arc<Handles>>, headers: HeaderMap, body: Body) -> Response {
    if headers.get(refill::TRANSPORT_HEADER).map(|v| v.as_bytes())
        != Some(refill::TRANSPORT_VERSION.as_bytes())
    {
        d.metrics.http_reject("bad_transport_header");
        return ApiError::bad_request(refill::TRANSPORT_REQUIRED).into_response();
    }
    let limit = d.max_body_bytes;
    let too_large = || {
        d.metrics.reject("body_too_large");
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("packet body exceeds {limit} bytes"),
            reason: Some("body_too_large"),
            retry_after: None,
        }
        .into_response()
    };
    let bytes = match read_limited(body, limit).await {
        Some(b) => b,
        None => return too_large(),
    };
    // Verification is CPU work (hashes, health tests, Falcon) and admission waits for the
    // replay journal's fdatasync: both run on the blocking pool, so packets arriving on other
    // connections are verified on the other cores meanwhile and share that sync.
    let intake = d.supply.intake.clone();
    let result = tokio::task::spawn_blocking(move || {
        // `bytes` is a SecretBytes: our copy of the packet is zeroed as it drops.
        let r = intake.receive(bytes.expose());
        drop(bytes);
        r
    })
    .await;
    let Ok(result) = result else {
        return ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "packet verification failed unexpectedly".into(),
            reason: None,
            retry_after: None,
        }
        .into_response();
    };
    match result {
        Ok((nonce, n)) => Json(ReceiveResponse {
            status: Accepted::Accepted,
            id: hex::encode(nonce),
            bytes: n as u64,
        })
        .into_response(),
        Err(e) => {
            let status = match &e {
                crate::supply::ReceiveError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
                crate::supply::ReceiveError::Rejected(Reject::Decode(
                    crate::wire::DecodeError::TooLarge { .. },
                )) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError {
                status,
                message: e.to_string(),
                reason: Some(e.reason()),
                retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
            }
            .into_response()
        }
    }
}

/// Most bytes of an oversized body read and discarded so the client sees the 413 answer instead
/// of a reset connection; beyond this the connection is simply closed.
const DRAIN_CAP: usize = 8 << 20;

/// Reads a body of at most `limit` bytes into a buffer that is zeroed on drop (a packet body is
/// entropy), reserved from the declared length and otherwise grown by hand with zeroing, so no
/// unzeroed copy is left behind. An oversized body is drained (up to [`DRAIN_CAP`]) and `None`
/// returned: nothing of it is kept.
async fn read_limited(body: Body, limit: usize) -> Option<crate::secret::SecretBytes> {
    use axum::body::HttpBody;
    use futures::StreamExt;
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut buf = crate::secret::SecretBytes::new(Vec::with_capacity(declared.min(limit)));
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return None };
        seen += chunk.len();
        if seen > limit {
            buf.wipe();
            buf.truncate(0);
            if seen > DRAIN_CAP {
                return None;
            }
            continue;
        }
        buf.append(&chunk);
    }
    (seen <= limit).then_some(buf)
}

/// `POST /api/rng/receive` on the plain shim: refused, with the reason.
pub async fn receive_on_plain(State(d): State<Arc<Handles>>) -> ApiError {
    d.metrics.http_reject("receive_without_mtls");
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: "packets are accepted only on the mutual-TLS listener (receive.listen)".into(),
        reason: None,
        retry_after: None,
    }
}

/// `GET /api/rng/health`.
#[utoipa::path(get, path = "/api/rng/health", tag = "rng",
    responses(
        (status = 200, description = "Pool, hubs, sources and hardening", body = HealthResponse),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn health(State(d): State<Arc<Handles>>) -> Json<HealthResponse> {
    let pool = d.pool.snapshot();
    let hubs = d.supply.hubs.status();
    let fallback = d.supply.fallback.active();
    let sources = d.supply.source_quality();
    let low = pool.total_bytes < d.low_watermark_bytes;
    let poor = sources.iter().any(|(_, q, _)| *q < 0.9);
    let status = if pool.total_bytes == 0 && (fallback || !hubs.iter().any(|h| h.reachable)) {
        HealthStatus::Critical
    } else if fallback || low || poor {
        HealthStatus::Degraded
    } else {
        HealthStatus::Ok
    };
    let hubs = hubs
        .into_iter()
        .map(|h| HubHealth {
            last_answer_age_seconds: h.last_answer.map(|t| t.elapsed().as_secs_f64()),
            url: h.url,
            reachable: h.reachable,
            last_error: h.last_error,
        })
        .collect();
    let sources = sources
        .into_iter()
        .map(|(k, quality, status)| (k, SourceHealth { quality, status }))
        .collect();
    Json(HealthResponse {
        status,
        daemon_id: d.id.clone(),
        memory: Hardening {
            no_core_dumps: d.hardening.no_core_dumps,
            memory_locked: d.hardening.memory_locked,
            pool_secret_memory: d.pool.secret_memory(),
        },
        pool,
        low_watermark_bytes: d.low_watermark_bytes as u64,
        hubs,
        last_packet_age_seconds: d.supply.intake.last_packet_age().map(|a| a.as_secs_f64()),
        fallback_active: fallback,
        sources,
        uptime_seconds: d.started.elapsed().as_secs(),
        device: d.device.borrow().clone(),
        kernel_feeder: d.kernel.borrow().clone(),
    })
}

/// `GET /api/rng/stats`: read back from the metrics counters.
#[utoipa::path(get, path = "/api/rng/stats", tag = "rng",
    responses(
        (status = 200, description = "Counters", body = StatsResponse),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn stats(State(d): State<Arc<Handles>>) -> Json<StatsResponse> {
    let m = &d.metrics;
    let pool = d.pool.snapshot();
    let admitted = Provenance::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                m.admitted_bytes
                    .get_or_create(&[("provenance", p.as_str().into())])
                    .get(),
            )
        })
        .collect();
    let consumers = Consumer::ALL;
    let served = consumers
        .iter()
        .map(|c| {
            (
                c.as_str().to_owned(),
                m.served_bytes
                    .get_or_create(&[("consumer", c.as_str().into())])
                    .get(),
            )
        })
        .collect();
    let rejected = Reject::REASONS
        .iter()
        .map(|r| ((*r).to_owned(), m.rejected_count(r)))
        .collect();
    let mut requests = BTreeMap::new();
    for c in consumers {
        for o in ["ok", "insufficient", "bad_request"] {
            let n = m
                .requests
                .get_or_create(&[("consumer", c.as_str().into()), ("outcome", o.into())])
                .get();
            if n > 0 {
                requests.insert(format!("{}_{o}", c.as_str()), n);
            }
        }
    }
    Json(StatsResponse {
        bytes_admitted: admitted,
        bytes_admitted_total: pool.admitted_bytes_total,
        bytes_served: served,
        bytes_served_total: pool.served_bytes_total,
        packets_accepted: m.packets_accepted.get(),
        packets_rejected: rejected,
        requests,
        replay_cache_entries: d.supply.intake.verifier.replay_cache_len() as u64,
        tls_handshake_failures: m.tls_handshake_failures.get(),
    })
}

/// `GET /metrics`: Prometheus/OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "OpenMetrics text",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body = String),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn metrics(State(d): State<Arc<Handles>>) -> Response {
    d.metrics.set_pool(&d.pool.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.metrics.encode(),
    )
        .into_response()
}
