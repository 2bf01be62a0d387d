//! HTTP plumbing shared by the `rest` and `spore` sources: the client, what a status code means
//! for backoff, and reading a body with a hard size bound.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use super::SourceError;

/// A client for one source: its own timeout, and either the system's roots or only `ca_cert`.
pub fn client(ca_cert: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, SourceError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kirq-hub/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_cert {
        let cas = crate::tls::load_certs(path)
            .map_err(|e| SourceError::Fatal(format!("ca_cert: {e}")))?;
        let roots =
            crate::tls::roots(&cas).map_err(|e| SourceError::Fatal(format!("ca_cert: {e}")))?;
        let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider(false))
            .with_safe_default_protocol_versions()
            .map_err(|e| SourceError::Fatal(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        b = b.tls_backend_preconfigured(cfg);
    }
    b.build()
        .map_err(|e| SourceError::Fatal(format!("HTTP client: {e}")))
}

/// Maps a non-success status to the error that sets the right backoff.
pub fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> SourceError {
    let code = status.as_u16();
    match code {
        403 => SourceError::Quota {
            retry_after: retry_after(headers),
        },
        429 => SourceError::RateLimited {
            retry_after: retry_after(headers),
        },
        400 | 401 => SourceError::Fatal(format!("HTTP {code}: request or credentials refused")),
        500..=599 => SourceError::Unavailable(format!("HTTP {code}")),
        _ if status.is_redirection() => {
            SourceError::Fatal(format!("HTTP {code}: redirects are not followed"))
        }
        _ => SourceError::Fatal(format!("HTTP {code}")),
    }
}

/// `Retry-After` in delta-seconds (HTTP-dates are not honoured: backoff applies instead).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Maps a transport error (connect, timeout, broken body).
pub fn transport_error(e: &reqwest::Error, timeout: Duration) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout(timeout)
    } else if e.is_body() || e.is_decode() {
        SourceError::BadResponse("truncated or broken body".into())
    } else if e.is_connect() {
        SourceError::Unavailable("cannot connect".into())
    } else {
        SourceError::Unavailable("request failed".into())
    }
}

/// Reads the whole body, refusing more than `max` bytes (checked against Content-Length first,
/// then while streaming). The buffer is zeroed on drop.
pub async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    if let Some(len) = resp.content_length()
        && len > max as u64
    {
        return Err(SourceError::BadResponse(format!(
            "body of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(&e, timeout))?
    {
        if body.len() + chunk.len() > max {
            return Err(SourceError::BadResponse(format!(
                "body exceeds the {max}-byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
