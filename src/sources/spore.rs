//! The `spore` source: Crypto4A's entropy-as-a-service protocol (SPORE).
//!
//! Each call sends a fresh 32-byte random challenge (`POST /eaasp/getEntropy?challenge=…`) and
//! gets back `{entropy, challenge, timestamp, JWT}`. The JWT (ES256: ECDSA P-256 with SHA-256) is
//! the authority: its signature must verify with a certificate pinned in config (or, when the
//! header carries `x5c`, one that chains to the pinned anchor), and its claims `entropy`,
//! `challenge` and `timestamp` must match the challenge sent, be fresh (within `max_age_secs`
//! either way) and equal the outer fields when those are present. Any failed check refuses the
//! whole response. No public document fixes the claim names; these are the ones the response
//! itself uses.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde_json::Value;
use zeroize::Zeroizing;

use super::rest::BASE64URL;
use super::{FetchFuture, Meta, Source, SourceError, httpx};
use crate::config::SporeConfig;
use crate::secret::SecretBytes;

/// Most certificates accepted in a JWT's `x5c`.
const MAX_X5C: usize = 8;

/// The certificates responses are checked against.
#[derive(Debug)]
pub struct Pinned {
    leaf: Option<CertificateDer<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

fn bad(why: impl Into<String>) -> SourceError {
    SourceError::BadResponse(why.into())
}

/// The signing certificate's purpose is pinned by config, not by its EKU: accept any EKU.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

fn algs() -> &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm] {
    webpki::ALL_VERIFICATION_ALGS
}

impl Pinned {
    /// Loads a PEM chain: signing certificate first (optional), trust anchor last. The pinned
    /// signing certificate must chain to the anchor.
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        let certs = crate::tls::load_certs(path)
            .map_err(|e| SourceError::Fatal(format!("cert_chain: {e}")))?;
        Self::from_certs(certs)
    }

    pub fn from_certs(mut certs: Vec<CertificateDer<'static>>) -> Result<Self, SourceError> {
        let root = certs
            .pop()
            .ok_or_else(|| SourceError::Fatal("cert_chain holds no certificate".into()))?;
        let anchor = webpki::anchor_from_trusted_cert(&root)
            .map_err(|e| SourceError::Fatal(format!("cert_chain anchor: {e}")))?
            .to_owned();
        let leaf = (!certs.is_empty()).then(|| certs.remove(0));
        let p = Self {
            leaf,
            intermediates: certs,
            anchors: vec![anchor],
        };
        if let Some(leaf) = &p.leaf {
            p.chain(leaf, &[])
                .map_err(|e| SourceError::Fatal(format!("cert_chain: {e}")))?;
        }
        Ok(p)
    }

    /// Checks that `leaf` chains to the pinned anchor (through pinned or extra intermediates).
    fn chain(
        &self,
        leaf: &CertificateDer<'_>,
        extra: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let ee =
            webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("bad certificate: {e}"))?;
        let mut inter = self.intermediates.clone();
        inter.extend_from_slice(extra);
        ee.verify_for_usage(
            algs(),
            &self.anchors,
            &inter,
            UnixTime::now(),
            AnyUsage,
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| format!("signing certificate does not chain to the pinned anchor: {e}"))
    }

    /// Verifies the JWT's signature and certificate; returns its claims.
    pub fn verify_jwt(&self, jwt: &str) -> Result<Value, SourceError> {
        let mut parts = jwt.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("JWT is not three dot-separated parts"));
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("JWT header is not base64url JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(bad("JWT alg is not ES256"));
        }
        let leaf: CertificateDer<'static> = match header.get("x5c") {
            Some(x5c) => {
                let list = x5c
                    .as_array()
                    .filter(|a| !a.is_empty() && a.len() <= MAX_X5C)
                    .ok_or_else(|| bad("JWT x5c is not a list of 1-8 certificates"))?;
                let mut ders = list
                    .iter()
                    .map(|c| c.as_str().and_then(|s| STANDARD.decode(s).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("JWT x5c holds something other than base64 DER"))?
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect::<Vec<_>>();
                let leaf = ders.remove(0);
                if let Some(pinned) = &self.leaf
                    && pinned != &leaf
                {
                    return Err(bad("JWT x5c signing certificate is not the pinned one"));
                }
                self.chain(&leaf, &ders).map_err(bad)?;
                leaf
            }
            None => self
                .leaf
                .clone()
                .ok_or_else(|| bad("JWT has no x5c and no signing certificate is pinned"))?,
        };
        let raw = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| bad("JWT signature is not base64url"))?;
        let sig = p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|_| bad("JWT signature is not a 64-byte P-256 signature"))?;
        let ee = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| bad(format!("bad certificate: {e}")))?;
        let signed = &jwt[..h64.len() + 1 + p64.len()];
        ee.verify_signature(
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            signed.as_bytes(),
            sig.to_der().as_bytes(),
        )
        .map_err(|_| bad("JWT signature does not verify"))?;
        URL_SAFE_NO_PAD
            .decode(p64)
            .ok()
            .and_then(|b| serde_json::from_slice(&Zeroizing::new(b)).ok())
            .ok_or_else(|| bad("JWT payload is not base64url JSON"))
    }
}

/// A timestamp as seconds or milliseconds since the epoch, or RFC 3339; in milliseconds.
fn timestamp_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            let t = n.as_u64()?;
            Some(if t < 100_000_000_000 {
                t.checked_mul(1000)?
            } else {
                t
            })
        }
        Value::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
        _ => None,
    }
}

/// Checks one response body against the challenge sent; returns the entropy.
pub fn check_response(
    pinned: &Pinned,
    body: &[u8],
    challenge: &str,
    max_age: Duration,
    now: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    let outer: Value = serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?;
    let jwt = outer
        .get("JWT")
        .or_else(|| outer.get("jwt"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no JWT in the response"))?;
    let claims = pinned.verify_jwt(jwt)?;
    for k in ["entropy", "challenge", "timestamp"] {
        if let Some(v) = outer.get(k)
            && claims.get(k) != Some(v)
        {
            return Err(bad(format!("outer {k} differs from the signed one")));
        }
    }
    if claims.get("challenge").and_then(Value::as_str) != Some(challenge) {
        return Err(bad("challenge does not match the one sent"));
    }
    let ts = claims
        .get("timestamp")
        .and_then(timestamp_ms)
        .ok_or_else(|| bad("no valid timestamp"))?;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let max = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    if ts.saturating_add(max) < now_ms {
        return Err(bad(format!(
            "stale timestamp ({} s old)",
            (now_ms - ts) / 1000
        )));
    }
    if ts > now_ms.saturating_add(max) {
        return Err(bad("timestamp is in the future"));
    }
    let e = claims
        .get("entropy")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no entropy claim"))?;
    let bytes = Zeroizing::new(
        BASE64URL
            .decode(e)
            .map_err(|_| bad("entropy is not base64url"))?,
    );
    if bytes.is_empty() {
        return Err(bad("empty entropy"));
    }
    Ok(bytes)
}

/// Crypto4A's signed entropy service.
#[derive(Debug)]
pub struct SporeSource {
    meta: Meta,
    url: String,
    client: reqwest::Client,
    pinned: Pinned,
    max_age: Duration,
    max_per_call: usize,
    timeout: Duration,
}

impl SporeSource {
    pub fn new(meta: Meta, c: &SporeConfig, timeout: Duration) -> Result<Self, SourceError> {
        Ok(Self {
            meta,
            url: format!("{}/eaasp/getEntropy", c.base_url.trim_end_matches('/')),
            client: httpx::client(c.ca_cert.as_deref(), timeout)?,
            pinned: Pinned::load(&c.cert_chain)?,
            max_age: Duration::from_secs(c.max_age_secs),
            max_per_call: c.max_bytes_per_call,
            timeout,
        })
    }

    async fn call(&self) -> Result<Zeroizing<Vec<u8>>, SourceError> {
        let mut c = [0u8; 32];
        getrandom::fill(&mut c).map_err(|e| SourceError::Failed(e.to_string()))?;
        let challenge = URL_SAFE_NO_PAD.encode(c);
        let resp = self
            .client
            // base64url needs no percent-encoding.
            .post(format!("{}?challenge={challenge}", self.url))
            .send()
            .await
            .map_err(|e| httpx::transport_error(&e, self.timeout))?;
        if !resp.status().is_success() {
            return Err(httpx::status_error(resp.status(), resp.headers()));
        }
        // base64url entropy twice (outer and JWT) plus certificates.
        let limit = self.max_per_call * 3 + 64 * 1024;
        let body = httpx::read_body(resp, limit, self.timeout).await?;
        let bytes = check_response(
            &self.pinned,
            &body,
            &challenge,
            self.max_age,
            SystemTime::now(),
        )?;
        if bytes.len() > self.max_per_call {
            return Err(bad(format!(
                "{} bytes in one response, more than max_bytes_per_call",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

impl Source for SporeSource {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn fetch(&self, n: usize) -> FetchFuture<'_> {
        Box::pin(async move {
            let mut out = SecretBytes::zeroed(n);
            let mut filled = 0;
            while filled < n {
                let part = self.call().await?;
                let take = part.len().min(n - filled);
                out.expose_mut()[filled..filled + take].copy_from_slice(&part[..take]);
                filled += take;
            }
            Ok(out)
        })
    }
}
