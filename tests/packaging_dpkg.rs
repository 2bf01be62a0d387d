//! The operating-system face of Kirq, checked with the tools an operator's system runs:
//! `systemd-analyze verify` and `security --offline` on every unit (exposure at most 2.0 for
//! kirqd, 1.5 for the hub and the node), the SELinux module built with selinux-policy-dev's
//! Makefile, the example configs accepted by `check-config`, and the .deb built with cargo-deb,
//! listed with `dpkg-deb -c`, installed, upgraded, removed and purged with `dpkg --root` in a
//! temporary root. A missing tool fails the test with the command that installs it.
//!
//! The .deb here packs the test build's binaries (stripped): it checks the packaging, not the
//! optimiser, and saves a second full build (`common::deb`, shared with tests/systemd_nspawn.rs,
//! which installs it under a booted systemd). Release packages come from `scripts/build-deb.sh`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::deb::{HUB, KIRQD, write_man_pages};

/// Each unit and the highest exposure score it may have.
const UNITS: [(&str, f64); 3] = [
    ("kirqd.service", 2.0),
    ("kirq-hub.service", 1.5),
    ("kirq-node.service", 1.5),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool, or fails saying how to install it.
fn run(cmd: &mut Command, install_hint: &str) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}; install it with: {install_hint}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check(cmd: &mut Command, install_hint: &str) -> String {
    let shown = format!("{cmd:?}");
    let o = run(cmd, install_hint);
    let t = text(&o);
    assert!(o.status.success(), "{shown} failed ({}):\n{t}", o.status);
    t
}

const SYSTEMD_HINT: &str = "apt-get install systemd";

#[test]
fn units_pass_systemd_analyze_verify() {
    // verify checks that ExecStart exists and that `man:` pages resolve: point it at the test
    // build's binaries and at man pages generated from them, nothing else changed.
    let tmp = tempfile::tempdir().unwrap();
    write_man_pages(&tmp.path().join("man/man1"));
    for (unit, _) in UNITS {
        let src = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        let unit_text = src
            .replace("/usr/bin/kirqd ", &format!("{KIRQD} "))
            .replace("/usr/bin/kirq-hub ", &format!("{HUB} "));
        assert_ne!(src, unit_text, "{unit}: no ExecStart on /usr/bin");
        let path = tmp.path().join(unit);
        std::fs::write(&path, unit_text).unwrap();
        let out = check(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(&path)
                .env("MANPATH", tmp.path().join("man")),
            SYSTEMD_HINT,
        );
        println!("systemd-analyze verify {unit}: ok {out}");
    }
}

/// `systemd-analyze security --offline=true` on the unit as shipped; returns the overall score.
fn exposure(unit: &str) -> f64 {
    let path = root().join("systemd").join(unit);
    let out = check(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path),
        SYSTEMD_HINT,
    );
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{out}"));
    let score = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    let open: Vec<&str> = out.lines().filter(|l| l.starts_with('✗')).collect();
    println!(
        "{unit}: exposure {score} (systemd-analyze security --offline=true systemd/{unit}); \
         not covered:\n  {}",
        open.join("\n  ")
    );
    score
}

#[test]
fn unit_exposure_scores_are_within_bounds() {
    let mut failed = Vec::new();
    for (unit, max) in UNITS {
        let score = exposure(unit);
        // Straight to stderr, past libtest's capture: the scores show in every test run.
        let _ = writeln!(
            std::io::stderr(),
            "\nsystemd-analyze security --offline=true systemd/{unit}: exposure {score} (max {max})"
        );
        if score > max {
            failed.push(format!("{unit}: {score} > {max}"));
        }
    }
    assert!(failed.is_empty(), "exposure too high: {failed:?}");
}

#[test]
fn hub_and_node_have_no_capability_and_no_device() {
    for unit in ["kirq-hub.service", "kirq-node.service"] {
        let s = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines.contains(&"CapabilityBoundingSet="), "{unit}");
        assert!(lines.contains(&"PrivateDevices=yes"), "{unit}");
        assert!(!s.contains("DeviceAllow="), "{unit}");
        assert!(!s.contains("CAP_SYS_ADMIN"), "{unit}");
        assert!(lines.contains(&"User=kirq"), "{unit}");
    }
    let s = std::fs::read_to_string(root().join("systemd/kirqd.service")).unwrap();
    assert!(s.contains("\nCapabilityBoundingSet=CAP_SYS_ADMIN CAP_IPC_LOCK\n"));
    assert!(s.contains("\nType=notify\n") && s.contains("\nWatchdogSec="));
    assert!(s.contains("\nLoadCredential=pool-key:"));
}

#[test]
fn selinux_module_compiles() {
    let makefile = Path::new("/usr/share/selinux/devel/Makefile");
    assert!(
        makefile.exists(),
        "{} missing; install it with: apt-get install selinux-policy-dev",
        makefile.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    for f in ["kirq.te", "kirq.if", "kirq.fc"] {
        std::fs::copy(root().join("selinux").join(f), tmp.path().join(f)).unwrap();
    }
    let out = check(
        Command::new("make")
            .arg("-f")
            .arg(makefile)
            .arg("kirq.pp")
            .current_dir(tmp.path()),
        "apt-get install make selinux-policy-dev",
    );
    let pp = std::fs::metadata(tmp.path().join("kirq.pp")).unwrap();
    assert!(pp.len() > 1000, "kirq.pp is {} bytes", pp.len());
    assert!(!out.contains("rror"), "{out}");
    println!("selinux: kirq.pp {} bytes\n{out}", pp.len());
}

#[test]
fn example_configs_pass_check_config() {
    // The examples name credentials under /run/credentials/UNIT/; point those at a temporary
    // directory holding the same files, and check with the real binaries.
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let creds = tmp.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    check(
        Command::new(HUB)
            .args(["keygen", "--name", "hub", "--out"])
            .arg(&etc),
        "cargo build",
    );
    std::fs::copy(etc.join("hub.key"), creds.join("signing-key")).unwrap();
    std::fs::write(creds.join("pool-key"), "00".repeat(32)).unwrap();
    std::fs::set_permissions(creds.join("pool-key"), PermissionsExt::from_mode(0o400)).unwrap();
    for (bin, file, unit) in [
        (KIRQD, "kirqd.toml", "kirqd.service"),
        (HUB, "kirq-hub.toml", "kirq-hub.service"),
    ] {
        let src = std::fs::read_to_string(root().join("packaging/etc/kirq").join(file)).unwrap();
        let cfg = etc.join(file);
        let cred_dir = format!("/run/credentials/{unit}");
        assert!(
            src.contains(&cred_dir),
            "{file} takes its keys from credentials"
        );
        std::fs::write(&cfg, src.replace(&cred_dir, creds.to_str().unwrap())).unwrap();
        let out = check(
            Command::new(bin)
                .arg("check-config")
                .arg("-c")
                .arg(&cfg)
                .env("CREDENTIALS_DIRECTORY", &creds),
            "cargo build",
        );
        println!("{file}: {out}");
    }
    // The node's example: its peers' keys exist only on a real fleet, so parse and validate.
    let node = std::fs::read_to_string(root().join("packaging/etc/kirq/kirq-node.toml")).unwrap();
    assert!(node.contains("/run/credentials/kirq-node.service"));
    let cfg: kirq::config::NodeConfig = toml::from_str(&node).unwrap();
    cfg.validate().unwrap();
}

/// `dpkg-deb -c`: path (without the leading `.`) → (mode string, owner/group).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    let out = check(
        Command::new("dpkg-deb").arg("-c").arg(deb),
        "apt-get install dpkg",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5]
                .trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned();
            (path, (f[0].to_owned(), f[1].to_owned()))
        })
        .collect()
}

fn dpkg(root_dir: &Path, args: &[&str]) -> String {
    check(
        Command::new("dpkg")
            .arg(format!("--root={}", root_dir.display()))
            .arg("--force-script-chrootless")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install dpkg",
    )
}

fn status(root_dir: &Path) -> String {
    let o = run(
        Command::new("dpkg-query")
            .arg(format!("--root={}", root_dir.display()))
            .args(["-W", "-f=${Status}", "kirq"]),
        "apt-get install dpkg",
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn id_of(file: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .and_then(|f| f[2].parse().ok())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn deb_builds_lists_installs_upgrades_and_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = common::deb::build(tmp.path());

    let files = contents(&deb);
    let expect = [
        ("/usr/bin/kirqd", "-rwxr-xr-x"),
        ("/usr/bin/kirq-hub", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/kirqd.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/kirq-hub.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/kirq-node.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/kirq.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/kirq.conf", "-rw-r--r--"),
        ("/usr/lib/udev/rules.d/60-kirq-rng.rules", "-rw-r--r--"),
        ("/etc/kirq/kirqd.toml", "-rw-r--r--"),
        ("/etc/kirq/kirq-hub.toml", "-rw-r--r--"),
        ("/etc/kirq/kirq-node.toml", "-rw-r--r--"),
        ("/usr/share/selinux/kirq/kirq.te", "-rw-r--r--"),
        ("/usr/share/selinux/kirq/kirq.if", "-rw-r--r--"),
        ("/usr/share/selinux/kirq/kirq.fc", "-rw-r--r--"),
        ("/usr/share/kirq/monitoring/kirq-alerts.yml", "-rw-r--r--"),
        (
            "/usr/share/kirq/monitoring/grafana-kirqd.json",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/kirqd.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/kirqd-run.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/kirq-hub.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/kirq-hub-run.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/kirq/README.md", "-rw-r--r--"),
    ];
    for (path, want) in expect {
        let got = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in the .deb"));
        assert_eq!(got.0, want, "{path}: mode");
    }
    for (path, (m, owner)) in &files {
        assert_eq!(owner, "0/0", "{path} not owned by root");
        assert!(!m.contains('s') && !m.ends_with('w'), "{path}: {m}");
        assert!(
            !path.ends_with(".key"),
            "{path}: no key ships in the package"
        );
    }
    let conffiles = check(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
        "apt-get install dpkg",
    );
    for c in [
        "/etc/kirq/kirqd.toml",
        "/etc/kirq/kirq-hub.toml",
        "/etc/kirq/kirq-node.toml",
    ] {
        assert!(conffiles.lines().any(|l| l == c), "{c} not a conffile");
    }
    println!("dpkg-deb -c: {} entries, modes as expected", files.len());

    // Install into an empty root. Only libc6 and systemd are missing there (--force-depends);
    // the maintainer scripts run with DPKG_ROOT set and touch nothing outside it.
    let r = tmp.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
    let deb_s = deb.to_str().unwrap();
    println!("{}", dpkg(&r, &["--force-depends", "-i", deb_s]));
    assert_eq!(status(&r), "install ok installed");
    let uid = id_of(&r.join("etc/passwd"), "kirq").expect("user kirq created");
    assert!(
        id_of(&r.join("etc/group"), "kirq-rng").is_some(),
        "group kirq-rng"
    );
    let key_path = r.join("etc/kirq/pool.key");
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(mode(&key_path), 0o600);
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&r.join("var/lib/kirq")), 0o700);
    // Group kirq: the hub and the node read their certificates there (keys stay 0600 root).
    assert_eq!(mode(&r.join("etc/kirq/pki")), 0o750);
    let kirq_gid = id_of(&r.join("etc/group"), "kirq").expect("group kirq created");
    assert_eq!(
        std::fs::metadata(r.join("etc/kirq/pki")).unwrap().gid(),
        kirq_gid
    );
    assert_eq!(
        std::fs::metadata(r.join("var/lib/kirq-hub")).unwrap().uid(),
        uid
    );
    assert!(r.join("usr/bin/kirqd").exists());

    // Reinstalling (the upgrade path) keeps the pool key.
    dpkg(&r, &["--force-depends", "-i", deb_s]);
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key);

    // Remove: program files go, configs stay; purge: configs, key and state go.
    println!("{}", dpkg(&r, &["-r", "kirq"]));
    assert_eq!(status(&r), "deinstall ok config-files");
    assert!(!r.join("usr/bin/kirqd").exists());
    assert!(!r.join("usr/lib/systemd/system/kirqd.service").exists());
    assert!(r.join("etc/kirq/kirqd.toml").exists());
    println!("{}", dpkg(&r, &["-P", "kirq"]));
    assert!(!status(&r).contains("installed"), "{}", status(&r));
    let left: Vec<PathBuf> = [
        "etc/kirq",
        "var/lib/kirq",
        "var/lib/kirq-hub",
        "usr/bin/kirq-hub",
    ]
    .iter()
    .map(|p| r.join(p))
    .filter(|p| p.exists())
    .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
}

#[test]
fn device_group_and_labels_agree() {
    // The udev rule's group is the one sysusers creates, and SELinux labels the same node.
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    let rule = read("udev/60-kirq-rng.rules");
    assert!(rule.contains(r#"KERNEL=="kirq-rng""#) && rule.contains(r#"GROUP="kirq-rng""#));
    assert!(rule.contains(r#"MODE="0440""#));
    assert!(
        read("systemd/kirq.sysusers")
            .lines()
            .any(|l| l.starts_with("g kirq-rng "))
    );
    assert!(read("selinux/kirq.fc").contains("/dev/kirq-rng"));
}
