//! Every config example in the README's sources section loads and validates, and mistakes in a source's config
//! are refused with an error that names the key.
// Helpers outside #[test] fns unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::sources::check_sources;
use kirq::config::{BelowMin, SourceType};
use kirq::wire::SourceKind;

fn toml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```toml") => cur = Some(String::new()),
            (Some(_), "```") => out.push(cur.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_example_in_the_docs_loads() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- sources:begin")
        .expect("sources section in README.md");
    let end = readme
        .find("<!-- sources:end -->")
        .expect("end of the sources section");
    let md = &readme[start..end];
    let blocks = toml_blocks(md);
    assert!(blocks.len() >= 11, "found {} examples", blocks.len());
    let mut types = std::collections::BTreeSet::new();
    for b in &blocks {
        let text = if b.contains("[[sources]]") {
            b.clone()
        } else {
            format!("[[sources]]\ntype = \"local\"\n[[sources]]\ntype = \"local\"\nid = \"b\"\n{b}")
        };
        let cfg = check_sources(&text).unwrap_or_else(|e| panic!("{e}\n--- example:\n{b}"));
        for s in &cfg.sources {
            types.insert(s.source.name());
        }
        if b.contains("[hybrid]") {
            assert_eq!(cfg.hybrid.min_sources, 2);
            assert_eq!(cfg.hybrid.below_min, BelowMin::Single);
        }
    }
    let all = ["device", "local", "pkcs11", "rest", "spore", "usb"];
    assert_eq!(types.into_iter().collect::<Vec<_>>(), all);
}

#[test]
fn defaults_and_kinds() {
    let c = check_sources(
        "[[sources]]\ntype = \"rest\"\npreset = \"anu-legacy\"\n\
         [[sources]]\ntype = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"pin\"\n\
         kind = \"qrng\"\n",
    )
    .unwrap();
    assert_eq!(c.sources[0].id(), "rest");
    assert_eq!(c.sources[0].kind(), SourceKind::Qrng);
    assert_eq!(c.sources[0].common.weight, 1);
    assert_eq!(c.sources[0].common.min_entropy_per_byte, 8.0);
    assert_eq!(
        c.sources[1].kind(),
        SourceKind::Qrng,
        "kind can be declared"
    );
    let SourceType::Pkcs11(p) = &c.sources[1].source else {
        panic!()
    };
    assert_eq!(p.chunk_bytes, 4096);
    assert!(p.pin_file.is_absolute(), "relative to the config file");
    assert_eq!(c.hybrid.min_sources, 1);
    assert_eq!(c.hybrid.below_min, BelowMin::Stop);
}

#[test]
fn mistakes_name_the_key() {
    let local = "[[sources]]\ntype = \"local\"\n";
    for (text, says) in [
        (
            "type = \"rest\"\npreset = \"qrypt\"",
            "`sources.token_file`",
        ),
        (
            "type = \"rest\"\npreset = \"quantis\"",
            "`sources.base_url`",
        ),
        (
            "type = \"rest\"\nurl = \"http://x/{n}\"\nformat = \"octets\"",
            "`sources.url`",
        ),
        (
            "type = \"rest\"\npreset = \"anu-legacy\"\nmax_bytes_per_call = 0",
            "max_bytes_per_call",
        ),
        (
            "type = \"local\"\nmin_entropy_per_byte = 9",
            "`sources.min_entropy_per_byte`",
        ),
        ("type = \"local\"\nweight = 0", "`sources.weight`"),
        ("type = \"local\"\nkind = \"qrng\"", "`sources.kind`"),
        ("type = \"local\"\ntimeout_ms = 10", "`sources.timeout_ms`"),
        ("type = \"device\"\npath = \"dev/tty\"", "`sources.path`"),
        (
            "type = \"device\"\npath = \"/dev/ttyACM0\"\nbaud = 1234",
            "`sources.baud`",
        ),
        (
            "type = \"spore\"\nbase_url = \"http://x\"\ncert_chain = \"c\"",
            "`sources.base_url`",
        ),
        (
            "type = \"usb\"\nvendor_id = 1\nproduct_id = 2\nserial = \"\"",
            "`sources.serial`",
        ),
        (
            "type = \"pkcs11\"\nmodule = \"m\"\ntoken_label = \"\"\npin_file = \"p\"",
            "token_label",
        ),
    ] {
        let e = check_sources(&format!("[[sources]]\n{text}\n")).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
    // Keys of another type, misspelt keys and unknown types are parse errors.
    for (text, says) in [
        (
            "type = \"local\"\npreset = \"anu\"",
            "unknown field `preset`",
        ),
        (
            "type = \"rest\"\npreset = \"anu-legacy\"\ntoken_fille = \"x\"",
            "token_fille",
        ),
        ("type = \"qrng\"", "unknown variant `qrng`"),
        ("type = \"rest\"\npreset = \"anu-new\"", "anu-new"),
    ] {
        let e = check_sources(&format!("[[sources]]\n{text}\n")).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
    let e = check_sources(&format!("{local}[hybrid]\nmin_sources = 2\n")).unwrap_err();
    assert!(e.contains("`hybrid.min_sources`"), "{e}");
    let e = check_sources(&format!("{local}{local}")).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
}
