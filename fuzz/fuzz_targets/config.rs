//! Config parsing and validation: byte 0 picks kirqd (0), kirq-hub (1) or node (2), the rest is
//! the TOML file. Never panics; an error names what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let path = kirq_fuzz::scratch().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let err = match sel % 3 {
        0 => kirq::config::DaemonConfig::load(&path)
            .err()
            .map(|e| e.to_string()),
        1 => kirq::config::HubConfig::load(&path)
            .err()
            .map(|e| e.to_string()),
        _ => kirq::config::NodeConfig::load(&path)
            .err()
            .map(|e| e.to_string()),
    };
    if let Some(e) = err {
        assert!(!e.is_empty());
    }
});
