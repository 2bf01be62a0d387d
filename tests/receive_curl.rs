//! The real curl client against kirqd's receive listener: with the hub's client certificate a
//! packet is accepted; without one the TLS handshake is refused.

mod common;

use std::process::Command;

use common::*;

fn curl() -> Command {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is not installed: apt-get install curl (scripts/test.sh installs it)");
    }
    Command::new("curl")
}

#[test]
fn curl_with_and_without_a_client_certificate() {
    let f = Fleet::new();
    let _d = kirqd(
        &f,
        &f.daemon_config(false, "[fallback]\nenabled = false"),
        &[],
    );
    let pkt_path = f.path("packet.bin");
    std::fs::write(&pkt_path, &*f.packet(2048).encode_signed(&f.key)).unwrap();
    let url = f.receive_url();
    let base = |c: &mut Command| {
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(f.path("daemon-ca.pem"))
            .args([
                "-H",
                "X-Quantum-Transport: v1",
                "-H",
                "Content-Type: application/octet-stream",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", pkt_path.display()));
    };
    let mut with = curl();
    base(&mut with);
    with.arg("--cert")
        .arg(f.path(&format!("{HUB_ID}.crt")))
        .arg("--key")
        .arg(f.path(&format!("{HUB_ID}.key")))
        .arg(&url);
    let out = with.output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "accepted", "{body}");
    assert_eq!(
        get_json(&f.http("/api/rng/health"))["pool"]["total_bytes"],
        2048
    );

    let mut without = curl();
    base(&mut without);
    without.arg(&url);
    let out = without.output().unwrap();
    assert!(
        !out.status.success(),
        "curl without a certificate must fail"
    );
    let code = out.status.code().unwrap();
    // 35: TLS handshake failed; 56: receive failure (TLS 1.3 reports the alert after the handshake).
    assert!(
        matches!(code, 35 | 56),
        "curl exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "no HTTP answer without a certificate"
    );
    let stats = get_json(&f.http("/api/rng/stats"));
    assert_eq!(stats["tls_handshake_failures"], 1, "{stats}");
    assert_eq!(stats["packets_accepted"], 1);
}
