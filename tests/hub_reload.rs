//! SIGHUP makes a running kirq-hub re-read its config: keys, certificates, limits and the rest,
//! without dropping a connection; a config it cannot use is refused whole and counted.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use kirq::crypto::falcon::SigningKey;
use kirq::crypto::sig::PacketSigner;
use kirq::wire::refill::{self, Frames, RefillRequest};

type Conn = SendRequest<Full<Bytes>>;

/// One kept-alive HTTP/1.1 connection to the hub's pull listener, as the holder of `cert` (its
/// files in `dir`), trusting the hub CA in `hub_ca`.
async fn connect(port: u16, dir: &Path, cert: &str, hub_ca: &Path) -> Result<Conn, String> {
    let id = kirq::tls::Identity::load(
        &dir.join(format!("{cert}.crt")),
        &dir.join(format!("{cert}.key")),
    )
    .unwrap();
    let ca = kirq::tls::load_certs(hub_ca).unwrap();
    let cfg = kirq::tls::client_config(&id, &ca, false).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// Pulls one packet for `recipient` on `conn`: the status and the key ids of the packets.
async fn pull(conn: &mut Conn, recipient: &str) -> Result<(u16, Vec<String>), String> {
    let body = serde_json::to_vec(&RefillRequest::new(recipient, 4096, None)).unwrap();
    let req = hyper::Request::post(refill::REFILL_PATH)
        .header("host", "localhost")
        .header(refill::TRANSPORT_HEADER, refill::TRANSPORT_VERSION)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    conn.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = conn
        .send_request(req)
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut keys = Vec::new();
    if status == 200 {
        for frame in Frames::new(&bytes) {
            let p = kirq::wire::Packet::decode(frame.unwrap()).unwrap().packet;
            keys.push(p.key_id.to_string());
        }
    }
    Ok((status, keys))
}

fn reloads(metrics: &str, outcome: &str) -> u64 {
    metric(
        &scrape(metrics),
        &format!("kirq_hub_config_reloads_total{{outcome=\"{outcome}\"}} "),
    )
    .unwrap_or(0)
}

fn sighup(p: &Proc) {
    let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[test]
fn sighup_applies_a_new_config_without_dropping_connections_and_refuses_a_bad_one() {
    let f = Fleet::new();
    let dir = f.path("");
    // A second signing key, and a second daemon CA that names daemons by SPIFFE ID only.
    let key2 = SigningKey::generate();
    key2.write_pair(&dir, "hub-signing-2").unwrap();
    kirq::pki::write_dev_pki_spiffe(&f.path("spiffe"), &[], &["kirqd-9"], "fleet.test").unwrap();
    let metrics_port = free_port();
    let top = format!("metrics_listen = \"127.0.0.1:{metrics_port}\"");
    let cfg = f.hub_config_with(false, &top, "");
    let first = std::fs::read_to_string(&cfg).unwrap();
    let hub = hub(&f, &cfg, &[]);
    let health = format!("http://127.0.0.1:{metrics_port}/health");
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for_port(
        metrics_port,
        Duration::from_secs(10),
        "hub metrics listener",
    );
    let k1 = f.key.key_id().to_string();
    let k2 = key2.key_id().to_string();
    assert_eq!(get_json(&health)["key_id"], k1.as_str());

    let hub_ca = f.path("hub-ca.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut kept = rt
        .block_on(connect(f.hub_port, &dir, DAEMON_ID, &hub_ca))
        .unwrap();
    let (status, keys) = rt.block_on(pull(&mut kept, DAEMON_ID)).unwrap();
    assert_eq!((status, keys), (200, vec![k1.clone()]));
    // Before the reload a SPIFFE certificate from the other CA is refused in the handshake.
    let refused = rt.block_on(async {
        let mut c = connect(f.hub_port, &dir.join("spiffe"), "kirqd-9", &hub_ca).await?;
        pull(&mut c, "kirqd-9").await
    });
    assert!(refused.is_err(), "{refused:?}");

    // New key, new daemon CA with a trust domain, a tighter share.
    let second = first
        .replace("hub-signing.key", "hub-signing-2.key")
        .replace(
            "daemon_ca = \"daemon-ca.pem\"",
            "daemon_ca = \"spiffe/daemon-ca.pem\"\nspiffe_trust_domain = \"fleet.test\"",
        )
        + "\n[limits]\ndaemon_bytes_per_second = 4096\ndaemon_burst_bytes = 8192\n";
    std::fs::write(&cfg, &second).unwrap();
    sighup(&hub);
    wait_for(
        Duration::from_secs(10),
        "the reloaded key in /health",
        || get_json(&health)["key_id"] == k2.as_str(),
    );
    assert_eq!(reloads(&metrics, "applied"), 1);

    // The connection opened before the reload is still open and now gets k2's packets.
    let (status, keys) = rt
        .block_on(pull(&mut kept, DAEMON_ID))
        .expect("the kept-alive connection survives the reload");
    assert_eq!((status, keys), (200, vec![k2.clone()]));
    // The new CA and trust domain are in force for new handshakes; the old CA is not.
    let spiffe = rt.block_on(async {
        let mut c = connect(f.hub_port, &dir.join("spiffe"), "kirqd-9", &hub_ca).await?;
        pull(&mut c, "kirqd-9").await
    });
    assert_eq!(spiffe, Ok((200, vec![k2.clone()])));
    let old_ca = rt.block_on(async {
        let mut c = connect(f.hub_port, &dir, DAEMON_ID, &hub_ca).await?;
        pull(&mut c, DAEMON_ID).await
    });
    assert!(old_ca.is_err(), "old CA still accepted: {old_ca:?}");
    // The new share: kept's bucket was capped at the new 8 KiB burst, and the first pull after
    // the reload took 4 KiB of it.
    let (status, _) = rt.block_on(pull(&mut kept, DAEMON_ID)).unwrap();
    assert_eq!(status, 200);
    let (status, _) = rt.block_on(pull(&mut kept, DAEMON_ID)).unwrap();
    assert_eq!(status, 429, "the reloaded limits apply");

    // Configs the hub cannot use are refused whole: a parse error, a missing key, a new listen
    // address. The running config stays.
    let missing_key = second.replace("hub-signing-2.key", "no-such.key");
    let moved = second.replace(
        &format!("listen = \"127.0.0.1:{}\"", f.hub_port),
        &format!("listen = \"127.0.0.1:{}\"", free_port()),
    );
    assert_ne!(moved, second);
    for (n, bad) in ["id = [", missing_key.as_str(), moved.as_str()]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&cfg, bad).unwrap();
        sighup(&hub);
        wait_for(Duration::from_secs(10), "the refusal to be counted", || {
            reloads(&metrics, "refused") == n as u64 + 1
        });
        assert_eq!(get_json(&health)["key_id"], k2.as_str());
    }
    assert_eq!(reloads(&metrics, "applied"), 1);
    let log = hub.log_text();
    assert_eq!(
        log.matches("SIGHUP: reload refused; the running config stays")
            .count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("no-such.key"),
        "the refusal names the file: {log}"
    );
    assert!(log.contains("cannot change at a reload"), "{log}");
    // Still serving, on the same connection, under the last good config.
    let spiffe = rt.block_on(async {
        let mut c = connect(f.hub_port, &dir.join("spiffe"), "kirqd-9", &hub_ca).await?;
        pull(&mut c, "kirqd-9").await
    });
    assert_eq!(spiffe, Ok((200, vec![k2])));
}
