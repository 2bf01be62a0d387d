//! The `rest` source: QRNG services over HTTPS.
//!
//! One generic adapter (method, URL template, optional JSON body, token header, JSON pointer,
//! decoder) and presets that fill it in for the services whose formats we know: ANU (legacy
//! `jsonI.php` and the current keyed API), Qrypt and the ID Quantique Quantis appliance. Every
//! response is bounded in size before it is parsed, and refused whole when anything about it is
//! off (type, length, range): a partial answer never contributes bytes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::{FetchFuture, Meta, Source, SourceError, httpx};
use crate::config::{DataFormat, HttpMethod, RestConfig, RestPreset};
use crate::secret::SecretBytes;

/// Largest allowed `max_response_bytes`.
pub const MAX_RESPONSE_LIMIT: usize = 64 << 20;

/// A preset: default origin (none: the user gives `base_url`), path template, decoding, limits.
struct Preset {
    origin: Option<&'static str>,
    path: &'static str,
    auth_header: Option<(&'static str, &'static str)>,
    pointer: Option<&'static str>,
    format: DataFormat,
    max_per_call: usize,
}

fn preset(p: RestPreset) -> Preset {
    match p {
        // GET jsonI.php?length=1..1024&type=uint8 -> {"type":"uint8","length":n,"data":[..],"success":true}
        RestPreset::AnuLegacy => Preset {
            origin: Some("https://qrng.anu.edu.au"),
            path: "/API/jsonI.php?length={values}&type=uint8",
            auth_header: None,
            pointer: Some("/data"),
            format: DataFormat::Uint8,
            max_per_call: 1024,
        },
        // GET ?length=N&type=uint8 with x-api-key -> {"data":[..],"success":true,...}
        RestPreset::Anu => Preset {
            origin: Some("https://api.quantumnumbers.anu.edu.au"),
            path: "/?length={values}&type=uint8",
            auth_header: Some(("x-api-key", "")),
            pointer: Some("/data"),
            format: DataFormat::Uint8,
            max_per_call: 1024,
        },
        // GET /api/v1/quantum-entropy?size=KiB, Bearer -> {"random":[base64 of 1024 B,..],"size":n}
        RestPreset::Qrypt => Preset {
            origin: Some("https://api-eus.qrypt.com"),
            path: "/api/v1/quantum-entropy?size={kib}",
            auth_header: Some(("authorization", "Bearer ")),
            pointer: Some("/random"),
            format: DataFormat::Base64,
            max_per_call: 64 * 1024,
        },
        // GET /api/2.0/streambytes?size=N -> raw bytes
        RestPreset::Quantis => Preset {
            origin: None,
            path: "/api/2.0/streambytes?size={n}",
            auth_header: None,
            pointer: None,
            format: DataFormat::Octets,
            max_per_call: 64 * 1024,
        },
    }
}

/// A `rest` config with its preset applied and every field checked.
#[derive(Debug, Clone)]
pub struct Spec {
    pub method: HttpMethod,
    pub url: String,
    pub body: Option<String>,
    pub auth: Option<(HeaderName, String, PathBuf)>,
    pub pointer: Option<String>,
    pub format: DataFormat,
    pub max_per_call: usize,
    pub max_response: usize,
    pub ca_cert: Option<PathBuf>,
}

type Invalid = (&'static str, String);

fn bad(key: &'static str, why: impl Into<String>) -> Invalid {
    (key, why.into())
}

/// Substitutes `{n}`, `{values}` and `{kib}` for a call of `bytes` bytes.
fn render(template: &str, bytes: usize, format: DataFormat) -> String {
    template
        .replace("{n}", &bytes.to_string())
        .replace("{values}", &values_for(bytes, format).to_string())
        .replace("{kib}", &bytes.div_ceil(1024).to_string())
}

fn values_for(bytes: usize, format: DataFormat) -> usize {
    match format {
        DataFormat::Uint16 => bytes.div_ceil(2),
        _ => bytes,
    }
}

impl Spec {
    /// Applies the preset and checks every field; errors name the config key.
    pub fn resolve(c: &RestConfig) -> Result<Self, Invalid> {
        let p = c.preset.map(preset);
        let url = match (&c.url, &p, &c.base_url) {
            (Some(u), _, None) => u.clone(),
            (Some(_), _, Some(_)) => {
                return Err(bad("sources.base_url", "give url or base_url, not both"));
            }
            (None, Some(p), Some(b)) => format!("{}{}", b.trim_end_matches('/'), p.path),
            (None, Some(p), None) => match p.origin {
                Some(o) => format!("{o}{}", p.path),
                None => {
                    return Err(bad(
                        "sources.base_url",
                        "this preset needs the appliance's base_url",
                    ));
                }
            },
            (None, None, _) => return Err(bad("sources.url", "give a preset or a url")),
        };
        let format = c
            .format
            .or(p.as_ref().map(|p| p.format))
            .ok_or_else(|| bad("sources.format", "required without a preset"))?;
        let probe = render(&url, 1, format);
        match reqwest::Url::parse(&probe) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            Ok(_) => return Err(bad("sources.url", "must be an https:// URL with a host")),
            Err(e) => return Err(bad("sources.url", format!("not a URL: {e}"))),
        }
        let method = c.method.unwrap_or(HttpMethod::Get);
        if let Some(b) = &c.body {
            if serde_json::from_str::<Value>(&render(b, 1, format)).is_err() {
                return Err(bad(
                    "sources.body",
                    "must be JSON once {n}, {values}, {kib} are filled in",
                ));
            }
            if method == HttpMethod::Get {
                return Err(bad("sources.body", "a body needs method = \"POST\""));
            }
        }
        let header = c.auth_header.clone().or(p
            .as_ref()
            .and_then(|p| p.auth_header.map(|(h, _)| h.to_owned())));
        let prefix = c
            .auth_prefix
            .clone()
            .or(p
                .as_ref()
                .and_then(|p| p.auth_header.map(|(_, x)| x.to_owned())))
            .unwrap_or_default();
        let auth = match (header, &c.token_file) {
            (Some(h), Some(f)) => {
                let name = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| bad("sources.auth_header", "not a valid header name"))?;
                Some((name, prefix, f.clone()))
            }
            (Some(_), None) => {
                return Err(bad(
                    "sources.token_file",
                    "the auth header needs a token_file",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "sources.auth_header",
                    "a token_file needs an auth_header",
                ));
            }
            (None, None) => None,
        };
        let pointer = c
            .data_pointer
            .clone()
            .or(p.as_ref().and_then(|p| p.pointer.map(str::to_owned)));
        match (&pointer, format) {
            (Some(_), DataFormat::Octets) => {
                return Err(bad(
                    "sources.data_pointer",
                    "octets are the raw body: no pointer",
                ));
            }
            (None, f) if f != DataFormat::Octets => {
                return Err(bad("sources.data_pointer", "required for JSON formats"));
            }
            (Some(ptr), _) if !ptr.is_empty() && !ptr.starts_with('/') => {
                return Err(bad(
                    "sources.data_pointer",
                    "a JSON pointer starts with '/'",
                ));
            }
            _ => {}
        }
        let max_per_call = c
            .max_bytes_per_call
            .or(p.as_ref().map(|p| p.max_per_call))
            .unwrap_or(1024);
        if !(1..=crate::wire::MAX_ENTROPY_BYTES).contains(&max_per_call) {
            return Err(bad("sources.max_bytes_per_call", "must be 1..=1048576"));
        }
        let max_response = c.max_response_bytes.unwrap_or(match format {
            DataFormat::Octets => max_per_call,
            _ => max_per_call * 8 + 4096,
        });
        if !(1..=MAX_RESPONSE_LIMIT).contains(&max_response) {
            return Err(bad("sources.max_response_bytes", "must be 1..=67108864"));
        }
        Ok(Self {
            method,
            url,
            body: c.body.clone(),
            auth,
            pointer,
            format,
            max_per_call,
            max_response,
            ca_cert: c.ca_cert.clone(),
        })
    }

    /// The exact decoded length a call for `bytes` bytes must return.
    fn expected_len(&self, bytes: usize) -> usize {
        let uses_kib =
            self.url.contains("{kib}") || self.body.as_ref().is_some_and(|b| b.contains("{kib}"));
        if uses_kib {
            bytes.div_ceil(1024) * 1024
        } else if self.format == DataFormat::Uint16 {
            bytes.div_ceil(2) * 2
        } else {
            bytes
        }
    }
}

/// A QRNG service over HTTPS.
pub struct RestSource {
    meta: Meta,
    spec: Spec,
    client: reqwest::Client,
    auth: Option<(HeaderName, HeaderValue)>,
    timeout: Duration,
    min_interval: Duration,
    last_call: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSource")
            .field("id", &self.meta.id)
            .field("url", &self.spec.url)
            .finish_non_exhaustive()
    }
}

impl RestSource {
    /// Reads the token file and builds the client. `min_interval` spaces calls within a fetch.
    pub fn new(
        meta: Meta,
        spec: Spec,
        timeout: Duration,
        min_interval: Duration,
    ) -> Result<Self, SourceError> {
        let auth = match &spec.auth {
            Some((name, prefix, file)) => {
                let token = super::read_secret_file(file)?;
                let value = Zeroizing::new(format!("{prefix}{}", token.as_str()));
                let mut v = HeaderValue::from_str(&value).map_err(|_| {
                    SourceError::Fatal(format!(
                        "token in {} is not a valid header value",
                        file.display()
                    ))
                })?;
                v.set_sensitive(true);
                Some((name.clone(), v))
            }
            None => None,
        };
        let client = httpx::client(spec.ca_cert.as_deref(), timeout)?;
        Ok(Self {
            meta,
            spec,
            client,
            auth,
            timeout,
            min_interval,
            last_call: tokio::sync::Mutex::new(None),
        })
    }

    /// One call for `bytes` bytes: exactly `bytes` bytes or an error.
    async fn call(&self, bytes: usize) -> Result<SecretBytes, SourceError> {
        {
            let mut last = self.last_call.lock().await;
            if let Some(t) = *last {
                tokio::time::sleep_until((t + self.min_interval).into()).await;
            }
            *last = Some(Instant::now());
        }
        let url = render(&self.spec.url, bytes, self.spec.format);
        let mut req = match self.spec.method {
            HttpMethod::Get => self.client.get(&url),
            HttpMethod::Post => self.client.post(&url),
        };
        if let Some(b) = &self.spec.body {
            req = req.header(CONTENT_TYPE, "application/json").body(render(
                b,
                bytes,
                self.spec.format,
            ));
        }
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| httpx::transport_error(&e, self.timeout))?;
        if !resp.status().is_success() {
            return Err(httpx::status_error(resp.status(), resp.headers()));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = httpx::read_body(resp, self.spec.max_response, self.timeout).await?;
        let mut data = if self.spec.format == DataFormat::Octets {
            if !content_type.starts_with("application/octet-stream") {
                let shown: String = content_type.chars().take(64).collect();
                return Err(SourceError::BadResponse(format!(
                    "content type {shown:?}, expected application/octet-stream"
                )));
            }
            Zeroizing::new(body.to_vec())
        } else {
            decode_json(
                &body,
                self.spec.pointer.as_deref().unwrap_or(""),
                self.spec.format,
            )?
        };
        let want = self.spec.expected_len(bytes);
        if data.len() != want {
            return Err(SourceError::BadResponse(format!(
                "wrong length: {} bytes, expected {want}",
                data.len()
            )));
        }
        data.truncate(bytes);
        Ok(SecretBytes::new(std::mem::take(&mut *data)))
    }
}

impl Source for RestSource {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn fetch(&self, n: usize) -> FetchFuture<'_> {
        Box::pin(async move {
            let mut out = SecretBytes::zeroed(n);
            let mut filled = 0;
            while filled < n {
                let c = (n - filled).min(self.spec.max_per_call);
                let part = self.call(c).await?;
                out.expose_mut()[filled..filled + c].copy_from_slice(part.expose());
                filled += c;
            }
            Ok(out)
        })
    }
}

/// Parses `body` as JSON and decodes the value at `pointer`. Strings in the parsed document are
/// zeroed afterwards (numbers cannot be).
pub fn decode_json(
    body: &[u8],
    pointer: &str,
    format: DataFormat,
) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|_| SourceError::BadResponse("body is not JSON".into()))?;
    let r = decode_doc(&doc, pointer, format);
    wipe(&mut doc);
    r
}

fn decode_doc(
    doc: &Value,
    pointer: &str,
    format: DataFormat,
) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    if doc.get("success") == Some(&Value::Bool(false)) {
        return Err(SourceError::BadResponse(
            "the service reported success=false".into(),
        ));
    }
    let v = doc
        .pointer(pointer)
        .ok_or_else(|| SourceError::BadResponse(format!("no data at {pointer:?}")))?;
    let wrong = |what: &str| SourceError::BadResponse(format!("data at {pointer:?} {what}"));
    let mut out = Zeroizing::new(Vec::new());
    match format {
        DataFormat::Uint8 | DataFormat::Uint16 => {
            let (max, width) = if format == DataFormat::Uint8 {
                (255, 1)
            } else {
                (65535, 2)
            };
            let arr = v
                .as_array()
                .ok_or_else(|| wrong("is not an array of integers"))?;
            out.reserve(arr.len() * width);
            for (i, x) in arr.iter().enumerate() {
                let x = x
                    .as_u64()
                    .ok_or_else(|| wrong(&format!("has a non-integer at index {i}")))?;
                if x > max {
                    return Err(wrong(&format!(
                        "has a value out of range 0..={max} at index {i}"
                    )));
                }
                let be = (x as u16).to_be_bytes();
                out.extend_from_slice(&be[2 - width..]);
            }
        }
        DataFormat::Hex | DataFormat::Base64 | DataFormat::Base64url => {
            let strings: Vec<&str> = match v {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Option<_>>()
                    .ok_or_else(|| wrong("is not a string or an array of strings"))?,
                _ => return Err(wrong("is not a string or an array of strings")),
            };
            for s in strings {
                let mut part = Zeroizing::new(match format {
                    DataFormat::Hex => hex::decode(s).map_err(|_| wrong("is not valid hex"))?,
                    DataFormat::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|_| wrong("is not valid base64"))?,
                    _ => BASE64URL
                        .decode(s)
                        .map_err(|_| wrong("is not valid base64url"))?,
                });
                out.extend_from_slice(&part);
                part.zeroize();
            }
        }
        DataFormat::Octets => return Err(wrong("cannot be octets inside JSON")),
    }
    Ok(out)
}

/// base64url with or without padding.
pub const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(preset: Option<RestPreset>) -> RestConfig {
        RestConfig {
            preset,
            url: None,
            base_url: None,
            method: None,
            body: None,
            auth_header: None,
            auth_prefix: None,
            token_file: None,
            data_pointer: None,
            format: None,
            max_bytes_per_call: None,
            max_response_bytes: None,
            ca_cert: None,
        }
    }

    #[test]
    fn presets_resolve() {
        let s = Spec::resolve(&cfg(Some(RestPreset::AnuLegacy))).unwrap();
        assert_eq!(
            render(&s.url, 10, s.format),
            "https://qrng.anu.edu.au/API/jsonI.php?length=10&type=uint8"
        );
        let mut c = cfg(Some(RestPreset::Qrypt));
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.token_file");
        c.token_file = Some("/t".into());
        let s = Spec::resolve(&c).unwrap();
        assert_eq!(s.expected_len(1500), 2048);
        assert_eq!(s.auth.as_ref().unwrap().1, "Bearer ");
        let mut c = cfg(Some(RestPreset::Quantis));
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.base_url");
        c.base_url = Some("https://quantis.lan:8443/".into());
        let s = Spec::resolve(&c).unwrap();
        assert_eq!(
            render(&s.url, 7, s.format),
            "https://quantis.lan:8443/api/2.0/streambytes?size=7"
        );
    }

    #[test]
    fn generic_needs_url_format_pointer() {
        let mut c = cfg(None);
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.url");
        c.url = Some("http://x/{n}".into());
        c.format = Some(DataFormat::Hex);
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.url");
        c.url = Some("https://x/r?n={n}".into());
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.data_pointer");
        c.data_pointer = Some("/d".into());
        c.body = Some("{\"n\": {n}}".into());
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.body");
        c.method = Some(HttpMethod::Post);
        assert!(Spec::resolve(&c).is_ok());
        c.body = Some("{n: }".into());
        assert_eq!(Spec::resolve(&c).unwrap_err().0, "sources.body");
    }

    #[test]
    fn decoders() {
        let d = |b: &str, p: &str, f| decode_json(b.as_bytes(), p, f).map(|v| v.to_vec());
        assert_eq!(
            d(r#"{"data":[0,1,255]}"#, "/data", DataFormat::Uint8).unwrap(),
            [0, 1, 255]
        );
        assert_eq!(
            d(r#"{"data":[258,65535]}"#, "/data", DataFormat::Uint16).unwrap(),
            [1, 2, 255, 255]
        );
        assert_eq!(
            d(r#"{"d":["0aff","10"]}"#, "/d", DataFormat::Hex).unwrap(),
            [10, 255, 16]
        );
        assert_eq!(
            d(r#"{"d":"AP8="}"#, "/d", DataFormat::Base64).unwrap(),
            [0, 255]
        );
        assert_eq!(
            d(r#"{"d":"_-8"}"#, "/d", DataFormat::Base64url).unwrap(),
            [255, 239]
        );
        let e = |b: &str, f| d(b, "/data", f).unwrap_err().to_string();
        assert!(e(r#"{"data":[256]}"#, DataFormat::Uint8).contains("out of range"));
        assert!(e(r#"{"data":[1.5]}"#, DataFormat::Uint8).contains("non-integer"));
        assert!(e(r#"{"data":"00"}"#, DataFormat::Uint8).contains("not an array"));
        assert!(e(r#"{"data":[1],"success":false}"#, DataFormat::Uint8).contains("success=false"));
        assert!(e(r#"{"x":[1]}"#, DataFormat::Uint8).contains("no data"));
        assert!(e(r#"{"data":"zz"}"#, DataFormat::Hex).contains("hex"));
        assert!(e(r#"{"data":[1]}"#, DataFormat::Base64).contains("array of strings"));
        assert!(e("<html>", DataFormat::Uint8).contains("not JSON"));
    }
}
