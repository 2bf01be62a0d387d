//! A `rest` source's config resolved: its preset applied and every field checked, without I/O.
//!
//! This lives with the config, not with the source, so that loading a config can refuse a bad
//! `rest` table with the same message the source would give, and the config module imports
//! nothing above it. [`crate::sources::rest`] takes the resolved [`RestSpec`] and does the calls.

use std::path::PathBuf;

use reqwest::header::HeaderName;
use serde_json::Value;

use super::{DataFormat, HttpMethod, RestConfig, RestPreset};

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
pub struct RestSpec {
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

/// A refused `rest` table: the config key and why.
pub type RestInvalid = (&'static str, String);

fn bad(key: &'static str, why: impl Into<String>) -> RestInvalid {
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

impl RestConfig {
    /// Applies the preset and checks every field; errors name the config key.
    pub fn resolve(&self) -> Result<RestSpec, RestInvalid> {
        let p = self.preset.map(preset);
        let p = p.as_ref();
        let url = self.url_template(p)?;
        let format = self
            .format
            .or(p.map(|p| p.format))
            .ok_or_else(|| bad("sources.format", "required without a preset"))?;
        check_url(&render(&url, 1, format))?;
        let method = self.method.unwrap_or(HttpMethod::Get);
        self.check_body(method, format)?;
        let auth = self.auth(p)?;
        let pointer = self.data_pointer(p, format)?;
        let (max_per_call, max_response) = self.limits(p, format)?;
        Ok(RestSpec {
            method,
            url,
            body: self.body.clone(),
            auth,
            pointer,
            format,
            max_per_call,
            max_response,
            ca_cert: self.ca_cert.clone(),
        })
    }

    /// The URL template: `url`, or the preset's path on its origin or on `base_url`.
    fn url_template(&self, p: Option<&Preset>) -> Result<String, RestInvalid> {
        match (&self.url, p, &self.base_url) {
            (Some(u), _, None) => Ok(u.clone()),
            (Some(_), _, Some(_)) => Err(bad("sources.base_url", "give url or base_url, not both")),
            (None, Some(p), Some(b)) => Ok(format!("{}{}", b.trim_end_matches('/'), p.path)),
            (None, Some(p), None) => match p.origin {
                Some(o) => Ok(format!("{o}{}", p.path)),
                None => Err(bad(
                    "sources.base_url",
                    "this preset needs the appliance's base_url",
                )),
            },
            (None, None, _) => Err(bad("sources.url", "give a preset or a url")),
        }
    }

    /// A body template must be JSON once filled in, and needs POST.
    fn check_body(&self, method: HttpMethod, format: DataFormat) -> Result<(), RestInvalid> {
        let Some(b) = &self.body else {
            return Ok(());
        };
        if serde_json::from_str::<Value>(&render(b, 1, format)).is_err() {
            return Err(bad(
                "sources.body",
                "must be JSON once {n}, {values}, {kib} are filled in",
            ));
        }
        if method == HttpMethod::Get {
            return Err(bad("sources.body", "a body needs method = \"POST\""));
        }
        Ok(())
    }

    /// The token header (name, prefix, token file): both a header and a file, or neither.
    fn auth(
        &self,
        p: Option<&Preset>,
    ) -> Result<Option<(HeaderName, String, PathBuf)>, RestInvalid> {
        let preset_header = p.and_then(|p| p.auth_header);
        let header = self
            .auth_header
            .clone()
            .or(preset_header.map(|(h, _)| h.to_owned()));
        let prefix = self
            .auth_prefix
            .clone()
            .or(preset_header.map(|(_, x)| x.to_owned()))
            .unwrap_or_default();
        match (header, &self.token_file) {
            (Some(h), Some(f)) => {
                let name = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| bad("sources.auth_header", "not a valid header name"))?;
                Ok(Some((name, prefix, f.clone())))
            }
            (Some(_), None) => Err(bad(
                "sources.token_file",
                "the auth header needs a token_file",
            )),
            (None, Some(_)) => Err(bad(
                "sources.auth_header",
                "a token_file needs an auth_header",
            )),
            (None, None) => Ok(None),
        }
    }

    /// The JSON pointer to the data: required for JSON formats, refused for octets.
    fn data_pointer(
        &self,
        p: Option<&Preset>,
        format: DataFormat,
    ) -> Result<Option<String>, RestInvalid> {
        let pointer = self
            .data_pointer
            .clone()
            .or(p.and_then(|p| p.pointer.map(str::to_owned)));
        match (&pointer, format) {
            (Some(_), DataFormat::Octets) => Err(bad(
                "sources.data_pointer",
                "octets are the raw body: no pointer",
            )),
            (None, f) if f != DataFormat::Octets => {
                Err(bad("sources.data_pointer", "required for JSON formats"))
            }
            (Some(ptr), _) if !ptr.is_empty() && !ptr.starts_with('/') => Err(bad(
                "sources.data_pointer",
                "a JSON pointer starts with '/'",
            )),
            _ => Ok(pointer),
        }
    }

    /// `max_bytes_per_call` and `max_response_bytes`, defaulted and bounded.
    fn limits(
        &self,
        p: Option<&Preset>,
        format: DataFormat,
    ) -> Result<(usize, usize), RestInvalid> {
        let max_per_call = self
            .max_bytes_per_call
            .or(p.map(|p| p.max_per_call))
            .unwrap_or(1024);
        if !(1..=crate::wire::MAX_ENTROPY_BYTES).contains(&max_per_call) {
            return Err(bad("sources.max_bytes_per_call", "must be 1..=1048576"));
        }
        let max_response = self.max_response_bytes.unwrap_or(match format {
            DataFormat::Octets => max_per_call,
            _ => max_per_call * 8 + 4096,
        });
        if !(1..=MAX_RESPONSE_LIMIT).contains(&max_response) {
            return Err(bad("sources.max_response_bytes", "must be 1..=67108864"));
        }
        Ok((max_per_call, max_response))
    }
}

/// The URL template, filled in for one byte, must be an https URL with a host.
fn check_url(probe: &str) -> Result<(), RestInvalid> {
    match reqwest::Url::parse(probe) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        Ok(_) => Err(bad("sources.url", "must be an https:// URL with a host")),
        Err(e) => Err(bad("sources.url", format!("not a URL: {e}"))),
    }
}

impl RestSpec {
    /// `template` (the URL or the body) filled in for a call of `bytes` bytes.
    pub fn render(&self, template: &str, bytes: usize) -> String {
        render(template, bytes, self.format)
    }

    /// The exact decoded length a call for `bytes` bytes must return.
    pub fn expected_len(&self, bytes: usize) -> usize {
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
        let s = cfg(Some(RestPreset::AnuLegacy)).resolve().unwrap();
        assert_eq!(
            s.render(&s.url, 10),
            "https://qrng.anu.edu.au/API/jsonI.php?length=10&type=uint8"
        );
        let mut c = cfg(Some(RestPreset::Qrypt));
        assert_eq!(c.resolve().unwrap_err().0, "sources.token_file");
        c.token_file = Some("/t".into());
        let s = c.resolve().unwrap();
        assert_eq!(s.expected_len(1500), 2048);
        assert_eq!(s.auth.as_ref().unwrap().1, "Bearer ");
        let mut c = cfg(Some(RestPreset::Quantis));
        assert_eq!(c.resolve().unwrap_err().0, "sources.base_url");
        c.base_url = Some("https://quantis.lan:8443/".into());
        let s = c.resolve().unwrap();
        assert_eq!(
            s.render(&s.url, 7),
            "https://quantis.lan:8443/api/2.0/streambytes?size=7"
        );
    }

    #[test]
    fn generic_needs_url_format_pointer() {
        let mut c = cfg(None);
        assert_eq!(c.resolve().unwrap_err().0, "sources.url");
        c.url = Some("http://x/{n}".into());
        c.format = Some(DataFormat::Hex);
        assert_eq!(c.resolve().unwrap_err().0, "sources.url");
        c.url = Some("https://x/r?n={n}".into());
        assert_eq!(c.resolve().unwrap_err().0, "sources.data_pointer");
        c.data_pointer = Some("/d".into());
        c.body = Some("{\"n\": {n}}".into());
        assert_eq!(c.resolve().unwrap_err().0, "sources.body");
        c.method = Some(HttpMethod::Post);
        assert!(c.resolve().is_ok());
        c.body = Some("{n: }".into());
        assert_eq!(c.resolve().unwrap_err().0, "sources.body");
    }
}
