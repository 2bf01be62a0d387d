use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::daemon::{HealthConfig, check_health};
use super::{ConfigError, check_https, check_id, invalid, read_toml, resolve};
use crate::wire::MAX_ENTROPY_BYTES;

/// Most `limits.connections_per_peer` (a listener never holds more than 16,384 connections).
pub const MAX_CONNECTIONS_PER_PEER: usize = 16_384;

/// kirq-hub's configuration file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub id: String,
    /// Falcon-512 secret key file (from `kirq-hub keygen`).
    pub signing_key: PathBuf,
    #[serde(default = "d_packet")]
    pub packet_bytes: usize,
    /// Milliseconds between pushes to each daemon; 0 disables push.
    #[serde(default = "d_push")]
    pub push_interval_ms: u64,
    /// Packet lifetime in milliseconds (at most 60000).
    #[serde(default = "d_lifetime")]
    pub packet_lifetime_ms: u64,
    pub tls: HubTlsConfig,
    /// Mutual-TLS listener for daemons' refill requests.
    pub listen: SocketAddr,
    /// Plain HTTP listener for `/metrics` and `/health` (loopback recommended).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub daemons: Vec<DaemonEndpoint>,
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub hybrid: HybridConfig,
    /// Decentralized QRNG nodes asked each round (commit-reveal with a k-of-n quorum).
    #[serde(default)]
    pub decentralized: Option<super::DecentralizedConfig>,
    #[serde(default)]
    pub proof: ProofConfig,
    #[serde(default)]
    pub limits: HubLimits,
}

/// Each daemon's share of this hub (pull and push together), and the hub's own budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubLimits {
    /// Entropy bytes per second one daemon may take, sustained.
    pub daemon_bytes_per_second: u64,
    /// Entropy bytes one daemon may take at once after being idle.
    pub daemon_burst_bytes: u64,
    /// Entropy bytes per second this hub hands out to all daemons together (what its sources'
    /// quotas allow); 0 = no hub-wide budget.
    pub hub_bytes_per_second: u64,
    /// Entropy bytes the hub may hand out at once after being idle (with a budget set).
    pub hub_burst_bytes: u64,
    /// Connections one peer address (IPv4 address or IPv6 /64) may hold open on the pull
    /// listener. Raise it when many daemons reach the hub from one address (NAT, a node's SNAT,
    /// one test machine); never above the listener's total. Fixed at start.
    pub connections_per_peer: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            daemon_bytes_per_second: 8 << 20,
            daemon_burst_bytes: 16 << 20,
            hub_bytes_per_second: 0,
            hub_burst_bytes: 64 << 20,
            connections_per_peer: 32,
        }
    }
}

/// Mixing proofs: whether packets carry a STARK that their entropy is the Rescue-Prime mix of the
/// contributions their provenance commits to.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofConfig {
    #[serde(default)]
    pub mode: ProofMode,
    /// Proofs made at once (each also uses winterfell's own threads on every core).
    #[serde(default = "d_proof_workers")]
    pub workers: usize,
    /// Most entropy bytes one proof covers; a proven packet is cut to this (a multiple of 56).
    #[serde(default = "d_proof_bytes")]
    pub max_output_bytes: usize,
}

impl Default for ProofConfig {
    fn default() -> Self {
        Self {
            mode: ProofMode::Off,
            workers: d_proof_workers(),
            max_output_bytes: d_proof_bytes(),
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProofMode {
    /// The SHAKE256 mixer and no proof.
    #[default]
    Off,
    /// The provable mixer; every packet waits for its proof.
    Required,
    /// The provable mixer; a proof when a prover worker is free at build time, otherwise the
    /// packet goes without one (daemons with `require_proof` refuse those).
    WhenIdle,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that issues daemon certificates.
    pub daemon_ca: PathBuf,
    #[serde(default)]
    pub pq_only: bool,
    /// Also accept a daemon certificate that names its id as the SPIFFE ID
    /// `spiffe://<trust domain>/kirqd/<id>` (URI SAN), as SPIRE or cert-manager issue them. Unset:
    /// only a DNS name equal to the id names a daemon.
    #[serde(default)]
    pub spiffe_trust_domain: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonEndpoint {
    /// The daemon's recipient id (its config `id`). Only pushing needs a listed daemon: any daemon
    /// whose certificate (from `tls.daemon_ca`) names its id may pull without being listed.
    pub id: String,
    /// Base URL of the daemon's receive listener; omit for pull-only daemons.
    #[serde(default)]
    pub url: Option<String>,
}

/// One entropy source: the options every source has, then its `type` and that type's own keys.
///
/// Parsing splits the table: the common keys go to [`SourceCommon`], the rest must match the
/// `type` (each with `deny_unknown_fields`), so a key that belongs to no one is still an error.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub common: SourceCommon,
    pub source: SourceType,
}

/// Options every source has.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// Provenance id; defaults to the type's name.
    #[serde(default)]
    pub id: Option<String>,
    /// Provenance kind; defaults by type (`rest`, `usb`, `device`: qrng; `pkcs11`, `spore`: hsm).
    #[serde(default)]
    pub kind: Option<crate::wire::SourceKind>,
    /// Relative share of each hybrid packet's min-entropy (1..=1000).
    #[serde(default = "d_weight")]
    pub weight: u32,
    /// Declared min-entropy per byte, (0, 8]: sets the health-test cutoffs and the credit.
    #[serde(default = "d_min_entropy")]
    pub min_entropy_per_byte: f64,
    /// Longest one fetch may take (100..=60000 ms).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Least time between two fetches (rate limit), milliseconds.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// Exponential backoff starts at 1 s and stops growing here (1..=86400 s).
    #[serde(default = "d_backoff_max")]
    pub backoff_max_secs: u64,
    /// How long to wait after a quota refusal (HTTP 403) without Retry-After (1..=86400 s).
    #[serde(default = "d_quota_wait")]
    pub quota_wait_secs: u64,
}

const COMMON_KEYS: [&str; 8] = [
    "id",
    "kind",
    "weight",
    "min_entropy_per_byte",
    "timeout_ms",
    "min_interval_ms",
    "backoff_max_secs",
    "quota_wait_secs",
];

impl<'de> serde::Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::{Map, Value};
        let mut rest = Map::<String, Value>::deserialize(d)?;
        let mut common = Map::new();
        for k in COMMON_KEYS {
            if let Some(v) = rest.remove(k) {
                common.insert(k.to_owned(), v);
            }
        }
        let common = serde_json::from_value(Value::Object(common)).map_err(D::Error::custom)?;
        let source = serde_json::from_value(Value::Object(rest)).map_err(D::Error::custom)?;
        Ok(Self { common, source })
    }
}

/// Each source type's own keys.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum SourceType {
    /// The operating system's RNG; marked `local`, never counted as quantum.
    Local {},
    /// A QRNG service over HTTPS.
    Rest(RestConfig),
    /// An HSM through its PKCS#11 module (C_GenerateRandom).
    Pkcs11(Pkcs11Config),
    /// Crypto4A's signed entropy service.
    Spore(SporeConfig),
    /// A vendor-class USB device with a bulk IN endpoint.
    Usb(UsbConfig),
    /// A character device or tty.
    Device(DeviceSourceConfig),
}

impl SourceType {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local {} => "local",
            Self::Rest(_) => "rest",
            Self::Pkcs11(_) => "pkcs11",
            Self::Spore(_) => "spore",
            Self::Usb(_) => "usb",
            Self::Device(_) => "device",
        }
    }

    fn default_kind(&self) -> crate::wire::SourceKind {
        use crate::wire::SourceKind;
        match self {
            Self::Local {} => SourceKind::Local,
            Self::Rest(_) | Self::Usb(_) | Self::Device(_) => SourceKind::Qrng,
            Self::Pkcs11(_) | Self::Spore(_) => SourceKind::Hsm,
        }
    }
}

/// `type = "rest"`: either a `preset` or a `url` (a template: `{n}` bytes, `{values}` values,
/// `{kib}` KiB, each rounded up), and how to find and decode the data.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    #[serde(default)]
    pub preset: Option<RestPreset>,
    /// Full URL template; overrides the preset's.
    #[serde(default)]
    pub url: Option<String>,
    /// Replaces the preset URL's scheme, host and port (required for `quantis`).
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// JSON body template (same placeholders as `url`); sent with `Content-Type: application/json`.
    #[serde(default)]
    pub body: Option<String>,
    /// Header that carries the token (e.g. `Authorization`, `x-api-key`).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Text before the token in that header (e.g. `"Bearer "`).
    #[serde(default)]
    pub auth_prefix: Option<String>,
    /// File holding the token (one line). The token is never in the config or a log.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// JSON pointer (RFC 6901) to the data; unused for `octets`.
    #[serde(default)]
    pub data_pointer: Option<String>,
    #[serde(default)]
    pub format: Option<DataFormat>,
    #[serde(default)]
    pub max_bytes_per_call: Option<usize>,
    /// Largest response body read; longer ones are refused.
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// PEM CA certificates trusted for this service instead of the system's (appliances).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestPreset {
    AnuLegacy,
    Anu,
    Qrypt,
    Quantis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

/// How the data at `data_pointer` encodes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Array of integers 0..=255.
    Uint8,
    /// Array of integers 0..=65535, two bytes each (big-endian).
    Uint16,
    /// A hex string or an array of them.
    Hex,
    /// A base64 string or an array of them.
    Base64,
    /// A base64url string or an array of them (padding optional).
    Base64url,
    /// The raw body, `Content-Type: application/octet-stream`.
    Octets,
}

/// `type = "pkcs11"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label (slots get renumbered; labels do not).
    pub token_label: String,
    /// File holding the user PIN (one line).
    pub pin_file: PathBuf,
    /// Bytes per C_GenerateRandom call (1..=1 MiB).
    #[serde(default = "d_chunk")]
    pub chunk_bytes: usize,
}

/// `type = "spore"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SporeConfig {
    /// The service's base URL (`https://host:port`); `/eaasp/getEntropy` is appended.
    pub base_url: String,
    /// PEM chain pinned for the responses' signatures: the signing certificate first (optional
    /// when responses carry `x5c`), the trust anchor last.
    pub cert_chain: PathBuf,
    /// PEM CA certificates trusted for the TLS connection instead of the system's.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Oldest acceptable response timestamp, seconds (also the allowed clock skew ahead).
    #[serde(default = "d_max_age")]
    pub max_age_secs: u64,
    #[serde(default = "d_chunk")]
    pub max_bytes_per_call: usize,
}

/// `type = "usb"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbConfig {
    pub vendor_id: u16,
    pub product_id: u16,
    /// Serial number string, when several such devices are attached.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub interface: u8,
    /// Bytes per bulk read (rounded up to the endpoint's packet size).
    #[serde(default = "d_chunk")]
    pub chunk_bytes: usize,
}

/// `type = "device"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSourceConfig {
    /// `/dev/hwrng`, `/dev/ttyACM0`, ...
    pub path: PathBuf,
    /// Put a tty in raw mode (default: when the path is a tty).
    #[serde(default)]
    pub raw_tty: Option<bool>,
    /// Line speed for a tty (e.g. 115200); unchanged when absent.
    #[serde(default)]
    pub baud: Option<u32>,
    /// Bytes written once after opening (e.g. OneRNG's `"cmdO\n"`).
    #[serde(default)]
    pub init: Option<String>,
}

/// The line speeds `baud` may name: the standard ones the device source has a termios constant
/// for (a test in [`crate::sources::device`] checks that the two lists agree).
pub const STANDARD_BAUD_RATES: [u32; 11] = [
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
];

/// How packets are made from several sources.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridConfig {
    /// Distinct healthy sources each hybrid packet needs.
    #[serde(default = "d_min_sources")]
    pub min_sources: usize,
    /// What to do with fewer: `stop` making packets, or make `single`-source packets.
    #[serde(default)]
    pub below_min: BelowMin,
}

impl Default for HybridConfig {
    fn default() -> Self {
        Self {
            min_sources: 1,
            below_min: BelowMin::Stop,
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BelowMin {
    #[default]
    Stop,
    Single,
}

impl SourceConfig {
    /// A `local` source with default options.
    pub fn local(id: &str) -> Self {
        Self {
            common: SourceCommon {
                id: Some(id.to_owned()),
                kind: None,
                weight: d_weight(),
                min_entropy_per_byte: d_min_entropy(),
                timeout_ms: d_timeout(),
                min_interval_ms: 0,
                backoff_max_secs: d_backoff_max(),
                quota_wait_secs: d_quota_wait(),
            },
            source: SourceType::Local {},
        }
    }

    pub fn id(&self) -> &str {
        self.common.id.as_deref().unwrap_or(self.source.name())
    }

    pub fn kind(&self) -> crate::wire::SourceKind {
        self.common.kind.unwrap_or(self.source.default_kind())
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        match &mut self.source {
            SourceType::Local {} | SourceType::Usb(_) => {}
            SourceType::Rest(r) => {
                for p in [&mut r.token_file, &mut r.ca_cert].into_iter().flatten() {
                    resolve(base, p);
                }
            }
            SourceType::Pkcs11(p) => resolve(base, &mut p.pin_file),
            SourceType::Spore(s) => {
                resolve(base, &mut s.cert_chain);
                if let Some(p) = &mut s.ca_cert {
                    resolve(base, p);
                }
            }
            // A device path must be absolute (validate): never relative to the config.
            SourceType::Device(_) => {}
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        use crate::wire::SourceKind;
        let c = &self.common;
        check_id("sources.id", self.id())?;
        match (&self.source, c.kind) {
            (SourceType::Local {}, Some(k)) if k != SourceKind::Local => {
                return Err(invalid("sources.kind", "a local source is always `local`"));
            }
            (SourceType::Local {}, _) => {}
            (_, Some(SourceKind::Local | SourceKind::Decentralized)) => {
                return Err(invalid("sources.kind", "must be `qrng` or `hsm`"));
            }
            _ => {}
        }
        if !(1..=1000).contains(&c.weight) {
            return Err(invalid("sources.weight", "must be 1..=1000"));
        }
        let h = c.min_entropy_per_byte;
        if !(h.is_finite() && h > 0.0 && h <= 8.0) {
            return Err(invalid("sources.min_entropy_per_byte", "must be in (0, 8]"));
        }
        if !(100..=60_000).contains(&c.timeout_ms) {
            return Err(invalid("sources.timeout_ms", "must be 100..=60000"));
        }
        if c.min_interval_ms > 3_600_000 {
            return Err(invalid(
                "sources.min_interval_ms",
                "must be at most 3600000",
            ));
        }
        if !(1..=86_400).contains(&c.backoff_max_secs) {
            return Err(invalid("sources.backoff_max_secs", "must be 1..=86400"));
        }
        if !(1..=86_400).contains(&c.quota_wait_secs) {
            return Err(invalid("sources.quota_wait_secs", "must be 1..=86400"));
        }
        match &self.source {
            SourceType::Local {} => Ok(()),
            SourceType::Rest(r) => r.resolve().map(|_| ()).map_err(|(k, why)| invalid(k, why)),
            SourceType::Pkcs11(p) => {
                if p.token_label.is_empty() || p.token_label.len() > 32 {
                    return Err(invalid("sources.token_label", "must be 1-32 bytes"));
                }
                check_chunk("sources.chunk_bytes", p.chunk_bytes)
            }
            SourceType::Spore(s) => {
                check_https("sources.base_url", &s.base_url)?;
                if !(1..=3600).contains(&s.max_age_secs) {
                    return Err(invalid("sources.max_age_secs", "must be 1..=3600"));
                }
                check_chunk("sources.max_bytes_per_call", s.max_bytes_per_call)
            }
            SourceType::Usb(u) => {
                if u.serial
                    .as_ref()
                    .is_some_and(|s| s.is_empty() || s.len() > 126)
                {
                    return Err(invalid("sources.serial", "must be 1-126 characters"));
                }
                check_chunk("sources.chunk_bytes", u.chunk_bytes)
            }
            SourceType::Device(d) => {
                if !d.path.is_absolute() {
                    return Err(invalid("sources.path", "must be an absolute path"));
                }
                if let Some(b) = d.baud
                    && !STANDARD_BAUD_RATES.contains(&b)
                {
                    return Err(invalid(
                        "sources.baud",
                        format!("{b} is not a standard rate"),
                    ));
                }
                if d.init
                    .as_ref()
                    .is_some_and(|s| s.is_empty() || s.len() > 256)
                {
                    return Err(invalid("sources.init", "must be 1-256 bytes"));
                }
                Ok(())
            }
        }
    }
}

/// A SPIFFE trust domain: 1-255 characters from `[a-z0-9._-]` (the SPIFFE ID standard).
fn check_trust_domain(td: &str) -> Result<(), ConfigError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "tls.spiffe_trust_domain",
            "must be 1-255 characters from [a-z0-9._-], e.g. \"example.org\" (no spiffe:// prefix)",
        ))
    }
}

fn check_chunk(key: &'static str, n: usize) -> Result<(), ConfigError> {
    if (1..=MAX_ENTROPY_BYTES).contains(&n) {
        Ok(())
    } else {
        Err(invalid(key, format!("must be 1..={MAX_ENTROPY_BYTES}")))
    }
}

fn d_weight() -> u32 {
    1
}
fn d_min_entropy() -> f64 {
    8.0
}
fn d_timeout() -> u64 {
    5000
}
fn d_backoff_max() -> u64 {
    300
}
fn d_quota_wait() -> u64 {
    3600
}
fn d_chunk() -> usize {
    4096
}
fn d_max_age() -> u64 {
    30
}
/// The largest `proof.max_output_bytes`: 256 KiB cut to whole blocks, a trace of about 2^16
/// rows (about 1.5 s and 0.5 GB to prove here), well inside the verifier's trace bound.
pub const MAX_PROVEN_OUTPUT_BYTES: usize =
    256 * 1024 - 256 * 1024 % crate::crypto::stark::OUTPUT_BLOCK_BYTES;

fn d_proof_workers() -> usize {
    1
}
/// 500 blocks: with up to five 64-byte node contributions (2 blocks each) the trace is 2^9
/// cycles (4096 rows), filled rather than padded; about 0.23 s to prove on 2 cores.
fn d_proof_bytes() -> usize {
    500 * crate::crypto::stark::OUTPUT_BLOCK_BYTES
}
fn d_min_sources() -> usize {
    1
}
fn d_packet() -> usize {
    4096
}
fn d_push() -> u64 {
    1000
}
fn d_lifetime() -> u64 {
    60_000
}

impl HubConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: Self = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(base, &mut c.signing_key);
        resolve(base, &mut c.tls.cert);
        resolve(base, &mut c.tls.key);
        resolve(base, &mut c.tls.daemon_ca);
        for s in &mut c.sources {
            s.resolve_paths(base);
        }
        if let Some(d) = &mut c.decentralized {
            d.resolve_paths(base);
        }
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_id("id", &self.id)?;
        if !(32..=MAX_ENTROPY_BYTES).contains(&self.packet_bytes) {
            return Err(invalid(
                "packet_bytes",
                format!("must be 32..={MAX_ENTROPY_BYTES}"),
            ));
        }
        if !(1_000..=crate::wire::MAX_LIFETIME_MS).contains(&self.packet_lifetime_ms) {
            return Err(invalid("packet_lifetime_ms", "must be 1000..=60000"));
        }
        if self.limits.daemon_bytes_per_second == 0 {
            return Err(invalid(
                "limits.daemon_bytes_per_second",
                "must be at least 1",
            ));
        }
        if self.limits.daemon_burst_bytes < self.packet_bytes as u64 {
            return Err(invalid(
                "limits.daemon_burst_bytes",
                "must be at least packet_bytes (one packet)",
            ));
        }
        if self.limits.hub_bytes_per_second > 0
            && self.limits.hub_burst_bytes < self.packet_bytes as u64
        {
            return Err(invalid(
                "limits.hub_burst_bytes",
                "must be at least packet_bytes (one packet) when limits.hub_bytes_per_second is set",
            ));
        }
        if !(1..=MAX_CONNECTIONS_PER_PEER).contains(&self.limits.connections_per_peer) {
            return Err(invalid(
                "limits.connections_per_peer",
                format!("must be 1..={MAX_CONNECTIONS_PER_PEER}"),
            ));
        }
        if let Some(td) = &self.tls.spiffe_trust_domain {
            check_trust_domain(td)?;
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.daemons {
            check_id("daemons.id", &d.id)?;
            if !ids.insert(&d.id) {
                return Err(invalid("daemons.id", format!("{:?} is listed twice", d.id)));
            }
            if let Some(u) = &d.url {
                check_https("daemons.url", u)?;
            }
        }
        if self.sources.is_empty() {
            return Err(invalid("sources", "configure at least one source"));
        }
        let mut ids = std::collections::HashSet::new();
        for s in &self.sources {
            s.validate()?;
            if !ids.insert(s.id()) {
                return Err(invalid(
                    "sources.id",
                    format!("{:?} is listed twice", s.id()),
                ));
            }
        }
        let h = &self.hybrid;
        if h.min_sources == 0 || h.min_sources > self.sources.len() {
            return Err(invalid(
                "hybrid.min_sources",
                format!("must be 1..={} (the number of sources)", self.sources.len()),
            ));
        }
        if let Some(d) = &self.decentralized {
            d.validate()?;
        }
        let p = &self.proof;
        if !(1..=16).contains(&p.workers) {
            return Err(invalid("proof.workers", "must be 1..=16"));
        }
        let block = crate::crypto::stark::OUTPUT_BLOCK_BYTES;
        let max = MAX_PROVEN_OUTPUT_BYTES;
        if p.max_output_bytes < block
            || p.max_output_bytes > max
            || !p.max_output_bytes.is_multiple_of(block)
        {
            return Err(invalid(
                "proof.max_output_bytes",
                format!("must be a multiple of {block} in {block}..={max}"),
            ));
        }
        check_health(&self.health)
    }
}
