//! The hub, daemon and node configs the README shows parse and validate as written.

fn block_after(readme: &str, heading: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("end of the toml block");
    rest[start..start + end].to_owned()
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn readme_hub_config_is_valid() {
    let text = block_after(&readme(), "### 2. Hub config");
    let cfg: kirq::config::HubConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.id, "hub-1");
}

#[test]
fn readme_daemon_config_is_valid() {
    let text = block_after(&readme(), "### 3. Daemon config");
    let cfg: kirq::config::DaemonConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.id, "kirqd-1");
    assert_eq!(cfg.pool.capacity_bytes, 16 << 20);
}

#[test]
fn readme_node_config_is_valid() {
    let text = block_after(&readme(), "### Decentralized QRNG nodes");
    let cfg: kirq::config::NodeConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.id, "node-1");
    assert_eq!(cfg.quorum, 3);
    assert_eq!(cfg.node_count(), 5);
}

#[test]
fn readme_hub_decentralized_section_is_valid() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        decentralized: kirq::config::DecentralizedConfig,
    }
    let text = block_after(&readme(), "#### The hub's side");
    let s: Section = toml::from_str(&text).unwrap();
    s.decentralized.validate().unwrap();
    assert_eq!(s.decentralized.nodes.len(), 3);
    assert_eq!(s.decentralized.offenders.bench_after, 3);
}
