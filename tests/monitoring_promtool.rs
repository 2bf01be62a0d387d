//! The monitoring files in `monitoring/` against the real thing: every metric an alert rule or
//! the Grafana dashboard queries is one kirqd exports, and Prometheus's own checker accepts the
//! rules and their unit tests (`promtool`, Debian package `prometheus`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const RULES: &str = "monitoring/kirq-alerts.yml";
const RULE_TESTS: &str = "monitoring/kirq-alerts.test.yml";
const DASHBOARD: &str = "monitoring/grafana-kirqd.json";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Sample names kirqd's /metrics can carry, from the `# TYPE` lines of its registry: counters gain
/// `_total` (prometheus-client, OpenMetrics), histograms `_bucket`, `_sum` and `_count`. A labelled
/// family shows up only once it has a child, so one of each is made first, as a running daemon
/// makes them.
fn exported() -> BTreeSet<String> {
    let m = kirq::metrics::DaemonMetrics::new();
    m.observe_quality("hub:0011223344556677", 1.0);
    m.request("http", "ok");
    m.served("http", 32);
    m.http_reject("rate_limited");
    let node = [("node", "node-1".to_owned())];
    m.node_rounds.get_or_create(&node).inc();
    m.node_round_gaps.get_or_create(&node).inc();
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (name, kind) = (it.next().unwrap(), it.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Metric names in a PromQL expression: identifiers starting `entropy_` or `kirq_` (every Kirq
/// metric does, and no PromQL function, keyword or label used here does).
fn metrics_in(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let word = &expr[start..i];
        if word.starts_with("entropy_") || word.starts_with("kirq_") {
            out.insert(word.to_owned());
        }
    }
}

fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(RULES)).unwrap();
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect();
    assert!(
        exprs
            .iter()
            .all(|e| !e.is_empty() && !e.starts_with(['|', '>'])),
        "keep each expr on one line so this test reads it"
    );
    exprs
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    exprs
}

#[test]
fn every_metric_in_alerts_and_dashboard_is_exported_by_kirqd() {
    let exported = exported();
    for must in [
        "entropy_pool_bytes",
        "kirq_fallback_active",
        "kirq_hub_last_packet_age_seconds",
        "kirq_source_quality",
        "kirq_packets_rejected_total",
    ] {
        assert!(exported.contains(must), "{must} not in {exported:?}");
    }
    for (file, exprs) in [(RULES, rule_exprs()), (DASHBOARD, dashboard_exprs())] {
        assert!(!exprs.is_empty(), "{file}: no expressions found");
        let mut used = BTreeSet::new();
        for e in &exprs {
            metrics_in(e, &mut used);
        }
        // The annotation template of the fallback alert queries the hub packet age too.
        if file == RULES {
            metrics_in(
                &std::fs::read_to_string(root().join(RULES)).unwrap(),
                &mut used,
            );
        }
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics kirqd does not export: {missing:?}"
        );
        println!("{file}: {} metrics, all exported: {used:?}", used.len());
    }
}

#[test]
fn the_three_seed_alerts_are_there() {
    let exprs = rule_exprs();
    for want in [
        "entropy_pool_bytes < 1024",
        "kirq_fallback_active == 1",
        "kirq_source_quality < 0.9",
    ] {
        assert!(exprs.iter().any(|e| e == want), "no alert with expr {want}");
    }
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): apt-get install prometheus (scripts/test.sh does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool {}:\n{text}", args.join(" "));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
}

#[test]
fn promtool_accepts_the_rules() {
    promtool(&["check", "rules", RULES]);
}

#[test]
fn promtool_rule_tests_fire_each_alert() {
    promtool(&["test", "rules", RULE_TESTS]);
}
