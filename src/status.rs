//! `kirqd status` and `kirq-hub status`: a health summary for a terminal, or JSON for machines,
//! read from the program's own local HTTP endpoints, with an exit code monitoring can act on.
//!
//! The one design choice a reader must know: the verdict is the worse of what the program says
//! about itself (the daemon's `status` field) and what this command finds in the same answer (an
//! unreachable hub, a failed kernel feeder, a source that is not up, a stopped hybrid policy).
//! Exit codes follow the monitoring-plugin convention: 0 ok, 1 degraded, 2 critical, 3 unknown
//! (not reachable, or not an answer this command understands). Each reason for a verdict is
//! listed, and nothing the endpoints return is secret (they show counts, ids and states only).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// The largest answer read from an endpoint; health and stats answers are a few KiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The arguments of `kirqd status` and `kirq-hub status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 ok, 1 degraded, 2 critical, 3 unknown (not reachable, or an \
                        answer this command does not understand): the monitoring-plugin \
                        convention. A command line that does not parse also exits 2."
)]
pub struct StatusArgs {
    /// The endpoint's base URL, http://HOST:PORT; default: from --config, else kirqd's
    /// http://127.0.0.1:8080 or kirq-hub's http://127.0.0.1:9464.
    #[arg(long, conflicts_with = "config")]
    pub url: Option<String>,
    /// Take the address from this config: kirqd's http.listen, kirq-hub's metrics_listen.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print one JSON object: status, exit_code, reasons, and the answers as read.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for each answer, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    pub timeout_ms: u64,
}

/// Which program's status.
#[derive(Debug, Clone, Copy)]
pub enum Program {
    Daemon,
    Hub,
}

/// Runs `status` for `program`: works out the address, reads, prints, and returns the exit code.
pub async fn run(program: Program, a: StatusArgs) -> std::process::ExitCode {
    let base = match (&a.url, &a.config, program) {
        (Some(u), _, _) => check_base_url(u).map_err(|e| anyhow::anyhow!("--url {u}: {e}")),
        (None, Some(c), Program::Daemon) => crate::config::DaemonConfig::load(c)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                let listen = cfg.http.listen;
                listen
                    .map(base_url)
                    .ok_or_else(|| anyhow::anyhow!("{}: http.listen is not set", c.display()))
            }),
        (None, Some(c), Program::Hub) => crate::config::HubConfig::load(c)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                cfg.metrics_listen.map(base_url).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: metrics_listen is not set, so the hub has no local /health",
                        c.display()
                    )
                })
            }),
        (None, None, Program::Daemon) => Ok("http://127.0.0.1:8080".to_owned()),
        (None, None, Program::Hub) => Ok("http://127.0.0.1:9464".to_owned()),
    };
    let base = match base {
        Ok(b) => b,
        Err(e) => return print_unknown(&e, a.json),
    };
    let timeout = Duration::from_millis(a.timeout_ms);
    let report = match program {
        Program::Daemon => daemon(&base, timeout).await,
        Program::Hub => hub(&base, timeout).await,
    };
    print(&report, a.json)
}

/// The overall verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Degraded,
    Critical,
    /// Not reachable, or an answer this command does not understand.
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Degraded => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }
}

/// What the command prints and how it exits.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    /// The human summary (ends with a newline).
    pub text: String,
    /// The machine form: verdict, exit code, reasons and the endpoints' answers as read.
    pub json: Value,
}

impl Report {
    fn unknown(what: &str, reason: String) -> Self {
        Self {
            verdict: Verdict::Unknown,
            text: format!("{what}: UNKNOWN (exit 3)\n  why: {reason}\n"),
            json: json!({
                "status": Verdict::Unknown.as_str(),
                "exit_code": Verdict::Unknown.exit_code(),
                "reasons": [reason],
            }),
            reasons: vec![reason],
        }
    }
}

/// Prints `r` (text, or one JSON line) and returns its exit code.
pub fn print(r: &Report, json: bool) -> std::process::ExitCode {
    if json {
        println!("{}", r.json);
    } else {
        print!("{}", r.text);
    }
    std::process::ExitCode::from(r.verdict.exit_code())
}

/// For an address that cannot even be worked out (bad --url, unreadable config): unknown, 3.
pub fn print_unknown(e: &anyhow::Error, json: bool) -> std::process::ExitCode {
    let r = Report::unknown("status", format!("{e:#}"));
    if json {
        println!("{}", r.json);
    } else {
        eprintln!("error: {e:#}");
    }
    std::process::ExitCode::from(Verdict::Unknown.exit_code())
}

/// The base URL for a listen address: a wildcard address is asked on loopback.
pub fn base_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// Checks a base URL given on the command line: plain `http://host[:port]`, nothing after it.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if u.scheme() != "http" {
        return Err("the local API is plain http://".into());
    }
    if u.host_str().is_none() || !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err("give only http://HOST[:PORT]".into());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("not reachable ({})", crate::util::error_chain(&e)))?;
    let status = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("answer cut off ({})", crate::util::error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let msg = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("answered HTTP {status} {msg}")
            .trim_end()
            .to_owned());
    }
    serde_json::from_slice(&body).map_err(|_| "answer is not JSON".to_owned())
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain HTTP client builds")
}

/// `kirqd status`: reads `/api/rng/health` and `/api/rng/stats` under `base`.
pub async fn daemon(base: &str, timeout: Duration) -> Report {
    let c = client(timeout);
    let health = match get_json(&c, &format!("{base}/api/rng/health")).await {
        Ok(v) => v,
        Err(e) => return Report::unknown("kirqd", format!("{base}/api/rng/health: {e}")),
    };
    let stats = match get_json(&c, &format!("{base}/api/rng/stats")).await {
        Ok(v) => v,
        Err(e) => return Report::unknown("kirqd", format!("{base}/api/rng/stats: {e}")),
    };
    let (verdict, reasons) = judge_daemon(&health);
    let text = render_daemon(verdict, &reasons, &health, &stats);
    let json = json!({
        "status": verdict.as_str(),
        "exit_code": verdict.exit_code(),
        "reasons": reasons,
        "health": health,
        "stats": stats,
    });
    Report {
        verdict,
        reasons,
        text,
        json,
    }
}

/// `kirq-hub status`: reads the hub's `/health` under `base` (its `metrics_listen`).
pub async fn hub(base: &str, timeout: Duration) -> Report {
    let c = client(timeout);
    let health = match get_json(&c, &format!("{base}/health")).await {
        Ok(v) => v,
        Err(e) => return Report::unknown("kirq-hub", format!("{base}/health: {e}")),
    };
    let (verdict, reasons) = judge_hub(&health);
    let text = render_hub(verdict, &reasons, &health);
    let json = json!({
        "status": verdict.as_str(),
        "exit_code": verdict.exit_code(),
        "reasons": reasons,
        "health": health,
    });
    Report {
        verdict,
        reasons,
        text,
        json,
    }
}

/// The daemon's verdict from its `/api/rng/health` answer.
pub fn judge_daemon(h: &Value) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    let own = match h["status"].as_str() {
        Some("ok") => Verdict::Ok,
        Some("degraded") => Verdict::Degraded,
        Some("critical") => Verdict::Critical,
        _ => {
            return (
                Verdict::Unknown,
                vec!["the health answer has no status ok/degraded/critical".into()],
            );
        }
    };
    let pool = &h["pool"];
    let total = pool["total_bytes"].as_u64().unwrap_or(0);
    if h["fallback_active"] == true {
        reasons.push("fallback active: no hub answer, serving local entropy".into());
    }
    if total == 0 {
        reasons.push("pool empty".into());
    } else if h["low_watermark_bytes"]
        .as_u64()
        .is_some_and(|low| total < low)
    {
        reasons.push(format!("pool below its low watermark ({total} bytes)"));
    }
    for hub in h["hubs"].as_array().into_iter().flatten() {
        if hub["reachable"] != true {
            let err = hub["last_error"].as_str().unwrap_or("no answer yet");
            reasons.push(format!(
                "hub {} unreachable: {err}",
                hub["url"].as_str().unwrap_or("?")
            ));
        }
    }
    for (name, s) in h["sources"].as_object().into_iter().flatten() {
        let q = s["quality"].as_f64().unwrap_or(0.0);
        if q < 0.9 || s["status"] != "up" {
            reasons.push(format!(
                "source {name}: quality {q:.2}, {}",
                s["status"].as_str().unwrap_or("?")
            ));
        }
    }
    if h["kernel_feeder"]["state"] == "failed" {
        reasons.push(format!(
            "kernel feeder failed: {}",
            h["kernel_feeder"]["last_error"].as_str().unwrap_or("?")
        ));
    }
    // Anything found here is at least degraded, whatever the daemon says of itself.
    let found = if reasons.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Degraded
    };
    let verdict = own.max(found);
    if verdict != Verdict::Ok && reasons.is_empty() {
        reasons.push(format!("kirqd reports {}", verdict.as_str()));
    }
    (verdict, reasons)
}

/// The hub's verdict from its `/health` answer.
pub fn judge_hub(h: &Value) -> (Verdict, Vec<String>) {
    let mut reasons = Vec::new();
    let Some(sources) = h["sources"].as_array() else {
        return (
            Verdict::Unknown,
            vec!["the health answer has no sources list".into()],
        );
    };
    let mut verdict = Verdict::Ok;
    match h["hybrid"]["mode"].as_str() {
        Some("stopped") => {
            verdict = Verdict::Critical;
            reasons.push(format!(
                "hybrid policy stopped: fewer than {} healthy sources, no packets",
                h["hybrid"]["min_sources"]
            ));
        }
        Some("single") => {
            verdict = Verdict::Degraded;
            reasons.push(format!(
                "hybrid policy below min_sources ({}): packets from one source",
                h["hybrid"]["min_sources"]
            ));
        }
        Some(_) => {}
        None => {
            return (
                Verdict::Unknown,
                vec!["the health answer has no hybrid mode".into()],
            );
        }
    }
    let up = sources.iter().filter(|s| s["status"] == "up").count();
    if up == 0 {
        verdict = Verdict::Critical;
        reasons.push("no source is up".into());
    }
    for s in sources.iter().filter(|s| s["status"] != "up") {
        verdict = verdict.max(Verdict::Degraded);
        reasons.push(format!(
            "source {}: {}{}",
            s["id"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    let nodes = h["decentralized"]["nodes"].as_array();
    for n in nodes.into_iter().flatten().filter(|n| n["benched"] == true) {
        verdict = verdict.max(Verdict::Degraded);
        reasons.push(format!(
            "node {} benched ({} strikes)",
            n["id"].as_str().unwrap_or("?"),
            n["strikes"]
        ));
    }
    (verdict, reasons)
}

fn age(v: &Value) -> String {
    match v.as_f64() {
        Some(s) if s < 120.0 => format!("{s:.1} s ago"),
        Some(s) if s < 7200.0 => format!("{:.1} min ago", s / 60.0),
        Some(s) => format!("{:.1} h ago", s / 3600.0),
        None => "never".into(),
    }
}

fn head(out: &mut String, what: &str, verdict: Verdict, reasons: &[String]) {
    let _ = writeln!(
        out,
        "{what}: {} (exit {})",
        verdict.as_str().to_uppercase(),
        verdict.exit_code()
    );
    for r in reasons {
        let _ = writeln!(out, "  ! {r}");
    }
}

/// The daemon's human summary.
pub fn render_daemon(verdict: Verdict, reasons: &[String], h: &Value, stats: &Value) -> String {
    let mut o = String::new();
    let what = format!("kirqd {}", h["daemon_id"].as_str().unwrap_or("?"));
    head(&mut o, &what, verdict, reasons);
    daemon_pool(&mut o, h);
    daemon_supply(&mut o, h);
    daemon_faces(&mut o, h);
    daemon_sources(&mut o, h);
    daemon_served(&mut o, stats);
    let m = &h["memory"];
    let _ = writeln!(
        o,
        "  memory        locked {}, core dumps off {}, pool in secret memory {}; up {} s",
        m["memory_locked"], m["no_core_dumps"], m["pool_secret_memory"], h["uptime_seconds"]
    );
    o
}

/// The pool's fill and what its bytes came from.
fn daemon_pool(o: &mut String, h: &Value) {
    let pool = &h["pool"];
    let total = pool["total_bytes"].as_u64().unwrap_or(0);
    let cap = pool["capacity_bytes"].as_u64().unwrap_or(0);
    let pct = if cap > 0 {
        total as f64 * 100.0 / cap as f64
    } else {
        0.0
    };
    let _ = writeln!(
        o,
        "  pool          {total} of {cap} bytes ({pct:.1}%), low watermark {}",
        h["low_watermark_bytes"]
    );
    let by: Vec<String> = pool["by_provenance"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(o, "  by provenance {}", by.join(", "));
}

/// Where the bytes come from: each hub's state, the last packet, the fallback.
fn daemon_supply(o: &mut String, h: &Value) {
    let hubs = h["hubs"].as_array().cloned().unwrap_or_default();
    if hubs.is_empty() {
        let _ = writeln!(o, "  hubs          none configured (push only)");
    }
    for (i, hub) in hubs.iter().enumerate() {
        let state = if hub["reachable"] == true {
            "reachable".to_owned()
        } else {
            format!(
                "UNREACHABLE ({})",
                hub["last_error"].as_str().unwrap_or("no answer yet")
            )
        };
        let _ = writeln!(
            o,
            "  {:<13} {} {state}, last answer {}",
            if i == 0 { "hubs" } else { "" },
            hub["url"].as_str().unwrap_or("?"),
            age(&hub["last_answer_age_seconds"])
        );
    }
    let _ = writeln!(o, "  last packet   {}", age(&h["last_packet_age_seconds"]));
    let _ = writeln!(
        o,
        "  fallback      {} ({} bytes of the daemon's own fallback in the pool)",
        if h["fallback_active"] == true {
            "ACTIVE"
        } else {
            "inactive"
        },
        h["pool"]["fallback_bytes"]
    );
}

/// What consumers read: the device and the kernel feeder.
fn daemon_faces(o: &mut String, h: &Value) {
    let dev = &h["device"];
    let _ = writeln!(
        o,
        "  device        {}{}{}",
        dev["mode"].as_str().unwrap_or("?"),
        dev["path"]
            .as_str()
            .map(|p| format!(" {p}"))
            .unwrap_or_default(),
        dev["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let k = &h["kernel_feeder"];
    let _ = writeln!(
        o,
        "  kernel feeder {}: {} bytes fed, {} bits credited, {} reseeds{}",
        k["state"].as_str().unwrap_or("?"),
        k["bytes_fed_total"],
        k["bits_credited_total"],
        k["reseeds_total"],
        k["last_error"]
            .as_str()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
}

/// The local sources' health.
fn daemon_sources(o: &mut String, h: &Value) {
    let sources: Vec<String> = h["sources"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            format!(
                "{name} {} (quality {:.2})",
                s["status"].as_str().unwrap_or("?"),
                s["quality"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "  sources       {}",
        if sources.is_empty() {
            "none yet".to_owned()
        } else {
            sources.join(", ")
        }
    );
}

/// Bytes served by provenance, packets accepted and rejected.
fn daemon_served(o: &mut String, stats: &Value) {
    let served: Vec<String> = stats["bytes_served"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let rejected: u64 = stats["packets_rejected"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    let _ = writeln!(
        o,
        "  served        {} bytes ({}); packets accepted {}, rejected {rejected}",
        stats["bytes_served_total"],
        served.join(", "),
        stats["packets_accepted"]
    );
}

/// The hub's human summary.
pub fn render_hub(verdict: Verdict, reasons: &[String], h: &Value) -> String {
    let mut o = String::new();
    let what = format!("kirq-hub {}", h["hub"].as_str().unwrap_or("?"));
    head(&mut o, &what, verdict, reasons);
    let _ = writeln!(
        o,
        "  signing key   {} ({})",
        h["key_id"].as_str().unwrap_or("?"),
        h["sig_alg"].as_str().unwrap_or("falcon512")
    );
    let hy = &h["hybrid"];
    let _ = writeln!(
        o,
        "  hybrid        mode {}, {} healthy sources, min_sources {} (below: {})",
        hy["mode"].as_str().unwrap_or("?"),
        hy["healthy_sources"],
        hy["min_sources"],
        hy["below_min"].as_str().unwrap_or("?")
    );
    for (i, s) in h["sources"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(
            o,
            "  {:<13} {} ({}) {}, quality {:.2}, last success {}{}",
            if i == 0 { "sources" } else { "" },
            s["id"].as_str().unwrap_or("?"),
            s["kind"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["quality"].as_f64().unwrap_or(0.0),
            s["last_success"].as_str().unwrap_or("never"),
            s["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(o, "  proof         {}", h["proof"]);
    if let Some(d) = h["decentralized"].as_object() {
        let nodes = d
            .get("nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let benched = nodes.iter().filter(|n| n["benched"] == true).count();
        let _ = writeln!(
            o,
            "  nodes         {} configured, quorum {}, {benched} benched",
            nodes.len(),
            d.get("quorum").unwrap_or(&Value::Null)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_daemon() -> Value {
        json!({
            "status": "ok", "daemon_id": "d1",
            "pool": {"total_bytes": 8192, "capacity_bytes": 65536, "fallback_bytes": 0,
                     "by_provenance": {"qrng": 8192}, "admitted_bytes_total": 9000,
                     "served_bytes_total": 808},
            "low_watermark_bytes": 1024,
            "hubs": [{"url": "https://h:1", "reachable": true, "last_answer_age_seconds": 0.5,
                      "last_error": null}],
            "last_packet_age_seconds": 0.5, "fallback_active": false,
            "sources": {"hub-key-ab": {"quality": 1.0, "status": "up"}},
            "memory": {"no_core_dumps": true, "memory_locked": true, "pool_secret_memory": true},
            "uptime_seconds": 12,
            "device": {"mode": "off", "path": null, "reason": "device.mode = off"},
            "kernel_feeder": {"state": "off", "bytes_fed_total": 0, "bits_credited_total": 0,
                              "reseeds_total": 0, "last_error": null}
        })
    }

    #[test]
    fn daemon_verdicts() {
        let h = healthy_daemon();
        assert_eq!(judge_daemon(&h), (Verdict::Ok, vec![]));
        let text = render_daemon(Verdict::Ok, &[], &h, &json!({}));
        assert!(text.starts_with("kirqd d1: OK (exit 0)\n"), "{text}");
        for part in [
            "pool ",
            "qrng 8192",
            "hubs ",
            "last packet",
            "fallback",
            "device",
            "kernel feeder",
            "sources",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }

        let mut h = healthy_daemon();
        h["hubs"][0]["reachable"] = json!(false);
        h["hubs"][0]["last_error"] = json!("connection refused");
        let (v, r) = judge_daemon(&h);
        assert_eq!(v, Verdict::Degraded);
        assert_eq!(r, ["hub https://h:1 unreachable: connection refused"]);

        let mut h = healthy_daemon();
        h["status"] = json!("degraded");
        h["fallback_active"] = json!(true);
        let (v, r) = judge_daemon(&h);
        assert_eq!(v, Verdict::Degraded);
        assert!(r[0].starts_with("fallback active"), "{r:?}");

        let mut h = healthy_daemon();
        h["kernel_feeder"]["state"] = json!("failed");
        h["kernel_feeder"]["last_error"] = json!("needs CAP_SYS_ADMIN");
        assert_eq!(judge_daemon(&h).0, Verdict::Degraded);

        let mut h = healthy_daemon();
        h["status"] = json!("critical");
        h["pool"]["total_bytes"] = json!(0);
        assert_eq!(
            judge_daemon(&h),
            (Verdict::Critical, vec!["pool empty".into()])
        );

        // Not an answer this command understands.
        assert_eq!(judge_daemon(&json!({"status": "fine"})).0, Verdict::Unknown);
        assert_eq!(judge_daemon(&json!([])).0, Verdict::Unknown);
    }

    fn healthy_hub() -> Value {
        json!({
            "hub": "hub-1", "key_id": "0011223344556677", "sig_alg": "ml-dsa-65",
            "hybrid": {"min_sources": 1, "below_min": "stop", "mode": "hybrid",
                       "healthy_sources": 1},
            "sources": [{"id": "os", "kind": "local", "status": "up", "reason": null,
                         "quality": 1.0, "weight": 1, "min_entropy_per_byte": 8.0,
                         "last_success": "2026-12-04T01:00:00Z", "retry_in_ms": null}],
            "proof": "off", "decentralized": null
        })
    }

    #[test]
    fn hub_verdicts() {
        let h = healthy_hub();
        assert_eq!(judge_hub(&h), (Verdict::Ok, vec![]));
        let text = render_hub(Verdict::Ok, &[], &h);
        assert!(text.contains("kirq-hub hub-1: OK (exit 0)"), "{text}");
        assert!(text.contains("0011223344556677 (ml-dsa-65)"), "{text}");

        let mut h = healthy_hub();
        h["sources"][0]["status"] = json!("degraded");
        h["sources"][0]["reason"] = json!("backing off: HTTP 503");
        h["sources"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "qrng", "status": "up"}));
        let (v, r) = judge_hub(&h);
        assert_eq!(v, Verdict::Degraded);
        assert_eq!(r, ["source os: degraded (backing off: HTTP 503)"]);

        let mut h = healthy_hub();
        h["hybrid"]["mode"] = json!("stopped");
        h["sources"][0]["status"] = json!("quarantined");
        let (v, r) = judge_hub(&h);
        assert_eq!(v, Verdict::Critical);
        assert_eq!(r.len(), 3, "{r:?}");

        let mut h = healthy_hub();
        h["decentralized"] = json!({"quorum": 2, "nodes": [{"id": "n1", "benched": true,
                                                           "strikes": 3}]});
        assert_eq!(judge_hub(&h).0, Verdict::Degraded);
        assert_eq!(judge_hub(&json!({"hub": "x"})).0, Verdict::Unknown);
    }

    #[test]
    fn urls() {
        assert_eq!(
            base_url("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464"
        );
        assert_eq!(base_url("[::]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            base_url("10.1.2.3:8080".parse().unwrap()),
            "http://10.1.2.3:8080"
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(check_base_url("https://127.0.0.1:8080").is_err());
        assert!(check_base_url("http://127.0.0.1:8080/api").is_err());
        assert!(check_base_url("127.0.0.1:8080").is_err());
    }

    #[tokio::test]
    async fn unreachable_is_unknown_with_the_reason() {
        let port = crate::demo::free_port().unwrap();
        let r = daemon(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).await;
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.verdict.exit_code(), 3);
        assert!(r.reasons[0].contains("not reachable"), "{:?}", r.reasons);
        assert_eq!(r.json["exit_code"], 3);
    }
}
