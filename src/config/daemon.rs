use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{ConfigError, check_https, check_id, invalid, read_toml, resolve};
use crate::wire::MAX_PACKET_BYTES;

/// kirqd's configuration file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// This daemon's recipient id: hubs address packets to it.
    pub id: String,
    pub trust: TrustConfig,
    pub receive: ReceiveConfig,
    /// Hubs to pull refills from, in order of preference.
    #[serde(default)]
    pub hubs: Vec<HubEndpoint>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub fallback: FallbackConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// The `/quantum/*` endpoints' keys and limits; without it those endpoints answer 503.
    #[serde(default)]
    pub quantum: Option<super::QuantumConfig>,
    #[serde(default)]
    pub persist: PersistConfig,
    #[serde(default)]
    pub device: DeviceConfig,
    #[serde(default)]
    pub kernel: KernelFeedConfig,
}

/// Keeping unserved bytes across a clean restart (AES-256-GCM at rest).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistConfig {
    /// Sealed pool file, e.g. `/var/lib/kirq/pool.sealed`; unset = unserved bytes are discarded.
    pub state_file: Option<PathBuf>,
    /// 32-byte key (raw or 64 hex characters, mode 0600). Unset: the systemd credential
    /// `$CREDENTIALS_DIRECTORY/pool-key`.
    pub key_file: Option<PathBuf>,
}

impl PersistConfig {
    /// The key file to use, if persistence is on.
    pub fn key_path(&self) -> Option<PathBuf> {
        self.state_file.as_ref()?;
        self.key_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| PathBuf::from(d).join("pool-key"))
        })
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Falcon-512 public key files of trusted hubs (list old and new to rotate).
    pub hub_keys: Vec<PathBuf>,
    /// Refuse packets without a mixing proof (`bad_proof` when one fails, `proof_required` when
    /// none is attached).
    #[serde(default)]
    pub require_proof: bool,
    /// Decentralized QRNG nodes whose signed commitments this daemon accepts in packets.
    #[serde(default)]
    pub nodes: Vec<TrustedNode>,
    /// Each packet must carry valid commitments from at least this many distinct trusted nodes
    /// (0: packets need no nodes; any node entry a packet has must still verify).
    #[serde(default)]
    pub min_node_quorum: usize,
    #[serde(default = "d_skew")]
    pub max_clock_skew_ms: u64,
    #[serde(default = "d_replay")]
    pub replay_cache_entries: usize,
    /// The replay journal, e.g. `/var/lib/kirq/replay.state`: every admitted packet's nonce is
    /// synced here before its bytes are served, so a packet admitted before a crash is refused
    /// after the restart. Unset: packets issued before the daemon started (plus
    /// `max_clock_skew_ms`) are refused instead, which costs the first seconds of hub packets
    /// after each start.
    #[serde(default)]
    pub replay_state_file: Option<PathBuf>,
}

/// A decentralized node the daemon trusts: its id (as packets name it) and Falcon-512 key file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedNode {
    pub id: String,
    pub public_key: PathBuf,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveConfig {
    /// Mutual-TLS listener for `POST /api/rng/receive`.
    pub listen: SocketAddr,
    /// This daemon's certificate chain (PEM); also its client certificate when pulling.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that issues hub certificates (checks hub clients and hub servers).
    pub hub_ca: PathBuf,
    #[serde(default)]
    pub pq_only: bool,
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEndpoint {
    /// Base URL of the hub's pull listener, e.g. `https://hub.example:8444`.
    pub url: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub capacity_bytes: usize,
    /// Below this many hub-delivered bytes a refill is urgent (and `/api/rng/health` says
    /// degraded).
    pub low_watermark_bytes: usize,
    /// The fill level the daemon keeps the pool at: whenever at least `refill_bytes` are missing
    /// from it (or a request went unserved), the daemon pulls what tops it up, plus the unserved
    /// requests. Unset: 1 MiB, or half the capacity if that is smaller.
    pub high_watermark_bytes: Option<usize>,
    /// Most bytes one pull asks for (a refill pulls repeatedly until the pool is topped up).
    pub refill_bytes: usize,
}

impl PoolConfig {
    /// The target fill level, `high_watermark_bytes` or its default.
    pub fn high_watermark(&self) -> usize {
        self.high_watermark_bytes.unwrap_or_else(|| {
            crate::pool::DEFAULT_HIGH_WATERMARK
                .min(self.capacity_bytes / 2)
                .max(self.low_watermark_bytes)
        })
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            capacity_bytes: crate::pool::DEFAULT_CAPACITY,
            low_watermark_bytes: crate::pool::DEFAULT_LOW_WATERMARK,
            high_watermark_bytes: None,
            refill_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    pub enabled: bool,
    /// Seconds without a hub answer or delivery before falling back to local entropy.
    pub after_secs: u64,
    /// Local bytes kept in the pool while the fallback is active.
    pub fill_bytes: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            after_secs: 30,
            fill_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the local HTTP shim (consumers of entropy).
    pub listen: Option<SocketAddr>,
    /// Client networks allowed to call the shim.
    pub allow: Vec<ipnet::IpNet>,
    /// Requests per second per client address (token bucket).
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long `POST /api/rng/random` waits for a refill when the pool cannot serve a request
    /// whole, before answering 503 (0: answer at once). At most 1,024 requests wait at a time.
    pub max_wait_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            allow: vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            rate_limit_per_second: 100_000,
            rate_limit_burst: 200_000,
            max_request_bytes: 4096,
            max_wait_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// False-positive rate of the health tests is 2^-alpha_exponent.
    pub alpha_exponent: u32,
    /// Seconds a source stays quarantined after a health-test failure.
    pub quarantine_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            alpha_exponent: crate::health::DEFAULT_ALPHA_EXP,
            quarantine_secs: 30,
        }
    }
}

/// How the pool is exposed as a character device (`/dev/<name>`) or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceMode {
    /// CUSE when /dev/cuse opens, else FUSE when `mountpoint` is set, else HTTP only.
    Auto,
    Cuse,
    Fuse,
    Off,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    pub mode: DeviceMode,
    /// CUSE node name (`/dev/<name>`) and the FUSE file's name.
    pub name: String,
    /// Directory where the FUSE fallback mounts (the file is `<mountpoint>/<name>`).
    pub mountpoint: Option<PathBuf>,
    /// Bytes per second one open file may read (0 = no limit); bursts up to one second's worth.
    pub rate_limit_bytes_per_second: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            mode: DeviceMode::Auto,
            name: "kirq-rng".into(),
            mountpoint: None,
            rate_limit_bytes_per_second: 0,
        }
    }
}

/// Feeding the kernel's random pool from verified entropy.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelFeedConfig {
    pub enabled: bool,
    /// Seconds between mix + reseed rounds once the kernel's CRNG is ready.
    pub interval_secs: u64,
    /// Bytes handed to the kernel per round.
    pub feed_bytes: usize,
    /// At most this many bytes per minute go to the kernel, so it never starves other consumers.
    pub budget_bytes_per_minute: usize,
    /// Entropy bits credited per byte from hub-verified sources (0..=8).
    pub credit_bits_per_byte: u32,
    /// Credit bytes whose provenance is `local` too. Only honest when the hub runs on another
    /// machine (its OS RNG is independent of this kernel); never credited while this daemon's own
    /// fallback is active.
    pub credit_local: bool,
}

impl Default for KernelFeedConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: 60,
            feed_bytes: 64,
            budget_bytes_per_minute: 4096,
            credit_bits_per_byte: 4,
            credit_local: false,
        }
    }
}

fn d_skew() -> u64 {
    crate::verify::DEFAULT_MAX_SKEW_MS
}
fn d_replay() -> usize {
    crate::verify::DEFAULT_REPLAY_CAPACITY
}
fn d_body() -> usize {
    MAX_PACKET_BYTES
}

impl DaemonConfig {
    /// Reads, resolves relative paths and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: Self = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for k in &mut c.trust.hub_keys {
            resolve(base, k);
        }
        for n in &mut c.trust.nodes {
            resolve(base, &mut n.public_key);
        }
        if let Some(p) = &mut c.trust.replay_state_file {
            resolve(base, p);
        }
        resolve(base, &mut c.receive.cert);
        resolve(base, &mut c.receive.key);
        resolve(base, &mut c.receive.hub_ca);
        if let Some(p) = &mut c.persist.state_file {
            resolve(base, p);
        }
        if let Some(p) = &mut c.persist.key_file {
            resolve(base, p);
        }
        if let Some(q) = &mut c.quantum {
            resolve(base, &mut q.state_dir);
            if let Some(k) = &mut q.at_rest_key_file {
                resolve(base, k);
            }
        }
        if let Some(m) = &mut c.device.mountpoint {
            resolve(base, m);
        }
        c.validate()?;
        Ok(c)
    }

    /// This config with the trusted key list cleared (to compare what a reload cannot apply).
    pub fn without_keys(&self) -> Self {
        let mut c = self.clone();
        c.trust.hub_keys.clear();
        c.trust.nodes.clear();
        c.trust.min_node_quorum = 0;
        c
    }

    /// Every rule, section by section; the first one broken names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_id("id", &self.id)?;
        check_trust(&self.trust)?;
        if !(1024..=MAX_PACKET_BYTES).contains(&self.receive.max_body_bytes) {
            return Err(invalid(
                "receive.max_body_bytes",
                format!("must be 1024..={MAX_PACKET_BYTES}"),
            ));
        }
        for h in &self.hubs {
            check_https("hubs.url", &h.url)?;
        }
        check_pool(&self.pool, &self.fallback)?;
        check_http(&self.http)?;
        if self.persist.state_file.is_some() && self.persist.key_path().is_none() {
            return Err(invalid(
                "persist.key_file",
                "required with persist.state_file (or run under systemd with LoadCredential=pool-key)",
            ));
        }
        if let Some(q) = &self.quantum {
            q.validate()?;
        }
        check_device(&self.device)?;
        check_kernel(&self.kernel)?;
        check_health(&self.health)
    }
}

/// `[trust]`: at least one hub key, a sane clock skew, distinct nodes, and a node quorum that
/// the trusted nodes can meet and a proof backs.
fn check_trust(t: &TrustConfig) -> Result<(), ConfigError> {
    if t.hub_keys.is_empty() {
        return Err(invalid(
            "trust.hub_keys",
            "list at least one hub public key file",
        ));
    }
    if !(1_000..=60_000).contains(&t.max_clock_skew_ms) {
        return Err(invalid("trust.max_clock_skew_ms", "must be 1000..=60000"));
    }
    let mut ids = std::collections::HashSet::new();
    for n in &t.nodes {
        check_id("trust.nodes.id", &n.id)?;
        if !ids.insert(n.id.as_str()) {
            return Err(invalid(
                "trust.nodes.id",
                format!("node {:?} is listed twice", n.id),
            ));
        }
    }
    if t.min_node_quorum > t.nodes.len() {
        return Err(invalid(
            "trust.min_node_quorum",
            format!(
                "is {} but only {} nodes are trusted",
                t.min_node_quorum,
                t.nodes.len()
            ),
        ));
    }
    if t.min_node_quorum > 0 && !t.require_proof {
        // Without a proof nothing shows the nodes' bytes were mixed in at all.
        return Err(invalid(
            "trust.min_node_quorum",
            "a node quorum needs trust.require_proof = true: without a proof nothing shows \
             the nodes' bytes were mixed in",
        ));
    }
    if t.replay_cache_entries < 1024 {
        return Err(invalid(
            "trust.replay_cache_entries",
            "must be at least 1024",
        ));
    }
    Ok(())
}

/// `[pool]` and `[fallback]`: the watermarks, the refill and the fallback's fill all fit in the
/// pool's capacity.
fn check_pool(p: &PoolConfig, f: &FallbackConfig) -> Result<(), ConfigError> {
    if !(64 * 1024..=1 << 30).contains(&p.capacity_bytes) {
        return Err(invalid("pool.capacity_bytes", "must be 64 KiB..=1 GiB"));
    }
    if p.low_watermark_bytes >= p.capacity_bytes {
        return Err(invalid(
            "pool.low_watermark_bytes",
            "must be below pool.capacity_bytes",
        ));
    }
    if let Some(high) = p.high_watermark_bytes
        && (high <= p.low_watermark_bytes || high > p.capacity_bytes)
    {
        return Err(invalid(
            "pool.high_watermark_bytes",
            "must be above pool.low_watermark_bytes and at most pool.capacity_bytes",
        ));
    }
    if p.refill_bytes == 0 || p.refill_bytes > p.capacity_bytes {
        return Err(invalid(
            "pool.refill_bytes",
            "must be 1..=pool.capacity_bytes",
        ));
    }
    if f.after_secs == 0 || f.after_secs > 3600 {
        return Err(invalid("fallback.after_secs", "must be 1..=3600"));
    }
    if f.fill_bytes == 0 || f.fill_bytes > p.capacity_bytes {
        return Err(invalid(
            "fallback.fill_bytes",
            "must be 1..=pool.capacity_bytes",
        ));
    }
    Ok(())
}

/// `[http]`: someone may call it, rate limits are positive, waits and bodies are bounded.
fn check_http(h: &HttpConfig) -> Result<(), ConfigError> {
    if h.allow.is_empty() && h.listen.is_some() {
        return Err(invalid(
            "http.allow",
            "empty: no client could call the HTTP shim",
        ));
    }
    if h.rate_limit_per_second == 0 || h.rate_limit_burst == 0 {
        return Err(invalid(
            "http.rate_limit_per_second",
            "rate and burst must be positive",
        ));
    }
    if h.max_wait_ms > 30_000 {
        return Err(invalid("http.max_wait_ms", "must be 0..=30000"));
    }
    if !(256..=1 << 20).contains(&h.max_request_bytes) {
        return Err(invalid("http.max_request_bytes", "must be 256..=1048576"));
    }
    Ok(())
}

/// `[device]`: a valid node name, and a mountpoint for the FUSE face.
fn check_device(d: &DeviceConfig) -> Result<(), ConfigError> {
    if !crate::wire::is_valid_id(&d.name) {
        return Err(invalid(
            "device.name",
            "must be 1-64 characters from [A-Za-z0-9._-]",
        ));
    }
    if d.mode == DeviceMode::Fuse && d.mountpoint.is_none() {
        return Err(invalid(
            "device.mountpoint",
            "required when device.mode = \"fuse\"",
        ));
    }
    Ok(())
}

/// `[kernel]`: interval, feed size, budget and credit in their ranges.
fn check_kernel(k: &KernelFeedConfig) -> Result<(), ConfigError> {
    if !(1..=86_400).contains(&k.interval_secs) {
        return Err(invalid("kernel.interval_secs", "must be 1..=86400"));
    }
    if !(1..=4096).contains(&k.feed_bytes) {
        return Err(invalid("kernel.feed_bytes", "must be 1..=4096"));
    }
    if k.budget_bytes_per_minute < k.feed_bytes {
        return Err(invalid(
            "kernel.budget_bytes_per_minute",
            "must be at least kernel.feed_bytes",
        ));
    }
    if k.credit_bits_per_byte > 8 {
        return Err(invalid("kernel.credit_bits_per_byte", "must be 0..=8"));
    }
    Ok(())
}

pub(crate) fn check_health(h: &HealthConfig) -> Result<(), ConfigError> {
    if !(10..=60).contains(&h.alpha_exponent) {
        return Err(invalid("health.alpha_exponent", "must be 10..=60"));
    }
    if h.quarantine_secs > 86_400 {
        return Err(invalid("health.quarantine_secs", "must be at most 86400"));
    }
    Ok(())
}
