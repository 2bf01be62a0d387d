//! The hub and daemon configs the README shows parse and validate as written.

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
