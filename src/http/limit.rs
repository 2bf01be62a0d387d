//! Allowlist and per-address token-bucket rate limit for the HTTP shim.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::Handles;
use crate::config::HttpConfig;

/// Most client addresses tracked; beyond it idle buckets are dropped.
const MAX_BUCKETS: usize = 65_536;

#[derive(Debug)]
pub struct Limiter {
    allow: Vec<ipnet::IpNet>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(cfg: &HttpConfig) -> Self {
        Self {
            allow: cfg.allow.clone(),
            rate: f64::from(cfg.rate_limit_per_second),
            burst: f64::from(cfg.rate_limit_burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    fn take(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_BUCKETS && !b.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (tokens, t)| {
                *tokens + now.duration_since(*t).as_secs_f64() * rate < burst
            });
        }
        let (tokens, last) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn guard(
    State((d, limiter)): State<(Arc<Handles>, Arc<Limiter>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !limiter.allowed(peer.ip()) {
        d.metrics.http_reject("forbidden");
        return ApiError {
            status: StatusCode::FORBIDDEN,
            message: "client address is not in http.allow".into(),
            reason: None,
            retry_after: None,
        }
        .into_response();
    }
    if !limiter.take(peer.ip()) {
        d.metrics.http_reject("rate_limited");
        return ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "rate limit exceeded".into(),
            reason: None,
            retry_after: Some(1),
        }
        .into_response();
    }
    next.run(req).await
}
