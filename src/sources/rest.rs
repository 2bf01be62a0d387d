//! The `rest` source: QRNG services over HTTPS.
//!
//! One generic adapter (method, URL template, optional JSON body, token header, JSON pointer,
//! decoder) and presets that fill it in for the services whose formats we know: ANU (legacy
//! `jsonI.php` and the current keyed API), Qrypt and the ID Quantique Quantis appliance. The
//! config side ([`crate::config::RestConfig::resolve`]) applies the preset and checks every field
//! into a [`RestSpec`]; this module does the calls and decodes the answers. Every
//! response is bounded in size before it is parsed, and refused whole when anything about it is
//! off (type, length, range): a partial answer never contributes bytes.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::{FetchFuture, Meta, Source, SourceError, httpx};
use crate::config::{DataFormat, HttpMethod, RestSpec};
use crate::secret::SecretBytes;

/// A QRNG service over HTTPS.
pub struct RestSource {
    meta: Meta,
    spec: RestSpec,
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
        spec: RestSpec,
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
        let url = self.spec.render(&self.spec.url, bytes);
        let mut req = match self.spec.method {
            HttpMethod::Get => self.client.get(&url),
            HttpMethod::Post => self.client.post(&url),
        };
        if let Some(b) = &self.spec.body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(self.spec.render(b, bytes));
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
