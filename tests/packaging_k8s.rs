//! The Kubernetes manifests in `packaging/kubernetes/`: every YAML document parses (PyYAML, from
//! scripts/pip-packages.txt) and names itself, the kustomization lists exactly the files there,
//! every volume mount is a declared volume, the daemon pulls from each hub pod's DNS name, and the
//! configs in the ConfigMaps, rendered by the init containers' own scripts for a node and for each
//! hub pod, pass the manifests' own `kirqd check-config` / `kirq-hub check-config` commands
//! against a PKI and keys made here, and fail once mangled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const NODE: &str = "worker-1";
/// What a cluster's DNS calls a Service's pods (the cluster domain the manifests assume).
const CLUSTER_DOMAIN: &str = "cluster.local";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

/// The test virtualenv's python when scripts/test.sh made it, else `python3`; it must import
/// PyYAML (never skipped).
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    let py = if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    };
    let ok = Command::new(&py)
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import yaml (PyYAML). Run ./scripts/test.sh (it installs \
         scripts/pip-packages.txt into target/test-venv), or: python3 -m venv target/test-venv && \
         target/test-venv/bin/pip install pyyaml",
        py.display()
    );
    py
}

/// Every YAML file in the directory: its name and its documents (PyYAML's `safe_load_all`).
fn documents() -> BTreeMap<String, Vec<Value>> {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir().display());
    let script = "import json, sys, yaml\n\
                  json.dump({f: list(yaml.safe_load_all(open(f))) for f in sys.argv[1:]}, sys.stdout)";
    let out = Command::new(python())
        .current_dir(dir())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyYAML refused a manifest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a BTreeMap<String, Vec<Value>>, kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .values()
        .flatten()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn str_list(v: &Value) -> Vec<String> {
    list(v)
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The init containers and containers of a workload's pod template, by name.
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    list(&pod["initContainers"])
        .iter()
        .chain(list(&pod["containers"]))
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn every_document_names_itself_and_kustomization_lists_every_file() {
    let docs = documents();
    for (file, ds) in &docs {
        assert!(!ds.is_empty(), "{file}: no document");
        for d in ds {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].is_string(), "{file}: a document without {key}");
            }
            assert!(
                d["metadata"]["name"].is_string(),
                "{file}: {} without metadata.name",
                d["kind"]
            );
        }
    }
    let k = &docs["kustomization.yaml"][0];
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = str_list(&k["resources"]).into_iter().collect();
    let present: BTreeSet<String> = docs
        .keys()
        .filter(|f| *f != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");
}

#[test]
fn every_volume_mount_is_a_declared_volume_and_every_volume_is_mounted() {
    let docs = documents();
    for (kind, name) in [("DaemonSet", "kirqd"), ("StatefulSet", "kirq-hub")] {
        let pod = &find(&docs, kind, name)["spec"]["template"]["spec"];
        let declared: BTreeSet<&str> = list(&pod["volumes"])
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let mut used = BTreeSet::new();
        for c in list(&pod["initContainers"])
            .iter()
            .chain(list(&pod["containers"]))
        {
            for m in list(&c["volumeMounts"]) {
                let v = m["name"].as_str().unwrap();
                assert!(
                    declared.contains(v),
                    "{kind} {name}: container {} mounts undeclared volume {v}",
                    c["name"]
                );
                assert!(m["mountPath"].as_str().is_some_and(|p| p.starts_with('/')));
                used.insert(v);
            }
        }
        assert_eq!(declared, used, "{kind} {name}: volumes nothing mounts");
    }
}

/// A pod's volumes on this machine, one directory each under `root`: a ConfigMap from the
/// manifests gets its data, a Secret or a ConfigMap the operator makes gets `provided[name]`,
/// and the rest (emptyDir, hostPath) start empty.
struct Volumes {
    dirs: BTreeMap<String, PathBuf>,
}

impl Volumes {
    fn new(
        root: &Path,
        pod: &Value,
        docs: &BTreeMap<String, Vec<Value>>,
        provided: &BTreeMap<&str, PathBuf>,
    ) -> Self {
        let mut dirs = BTreeMap::new();
        for v in list(&pod["volumes"]) {
            let name = v["name"].as_str().unwrap();
            let source = v["configMap"]["name"]
                .as_str()
                .or_else(|| v["secret"]["secretName"].as_str());
            let d = match source {
                Some(obj) if provided.contains_key(obj) => provided[obj].clone(),
                Some(obj) => {
                    let d = root.join("objects").join(obj);
                    std::fs::create_dir_all(&d).unwrap();
                    let cm = find(docs, "ConfigMap", obj);
                    for (file, text) in cm["data"].as_object().unwrap() {
                        std::fs::write(d.join(file), text.as_str().unwrap()).unwrap();
                    }
                    d
                }
                None => {
                    let d = root.join("volumes").join(name);
                    std::fs::create_dir_all(&d).unwrap();
                    d
                }
            };
            dirs.insert(name.to_owned(), d);
        }
        Self { dirs }
    }

    /// `path` as `c` sees it, here: under the volume of its deepest mount. A mount nested in
    /// another (e.g. /etc/kirq/hub-keys in /etc/kirq) becomes a symlink in the outer volume.
    fn map(&self, c: &Value, path: &str) -> PathBuf {
        let mut mounts: Vec<(&str, &PathBuf)> = list(&c["volumeMounts"])
            .iter()
            .map(|m| {
                let p = m["mountPath"].as_str().unwrap();
                (p, &self.dirs[m["name"].as_str().unwrap()])
            })
            .collect();
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (i, (p, d)) in mounts.iter().enumerate() {
            if let Some((outer, od)) = mounts[i + 1..]
                .iter()
                .find(|(o, _)| p.starts_with(&format!("{o}/")))
            {
                let link = od.join(&p[outer.len() + 1..]);
                if !link.exists() {
                    std::os::unix::fs::symlink(d, link).unwrap();
                }
            }
        }
        let (p, d) = mounts
            .iter()
            .find(|(p, _)| path == *p || path.starts_with(&format!("{p}/")))
            .unwrap_or_else(|| panic!("{path} is on no volume of container {}", c["name"]));
        d.join(path[p.len()..].trim_start_matches('/'))
    }

    /// Runs the init container `c`'s `sh -ec SCRIPT` here, its mount paths replaced by their
    /// directories, with `env`.
    fn run_script(&self, c: &Value, env: &[(&str, &str)]) {
        let cmd = str_list(&c["command"]);
        assert_eq!(&cmd[..2], ["sh", "-ec"], "{}: a shell script", c["name"]);
        let mut mounts: Vec<(String, String)> = list(&c["volumeMounts"])
            .iter()
            .map(|m| {
                let p = m["mountPath"].as_str().unwrap();
                (p.to_owned(), self.map(c, p).to_str().unwrap().to_owned())
            })
            .collect();
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let script = replace_paths(&cmd[2], &mounts);
        let out = Command::new("sh")
            .args(["-ec", &script])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {script}\n{}",
            c["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `c`'s command with the built binary, its `-c` path mapped; (success, stderr).
    fn run(&self, c: &Value, config: Option<&Path>) -> (bool, String) {
        let cmd = str_list(&c["command"]);
        let bin = match cmd[0].as_str() {
            "kirqd" => env!("CARGO_BIN_EXE_kirqd"),
            "kirq-hub" => env!("CARGO_BIN_EXE_kirq-hub"),
            other => panic!("{}: unknown program {other}", c["name"]),
        };
        assert_eq!(cmd[2], "-c", "{}: {cmd:?}", c["name"]);
        let path = config.map_or_else(|| self.map(c, &cmd[3]), Path::to_owned);
        let out = Command::new(bin)
            .arg(&cmd[1])
            .arg("-c")
            .arg(path)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `script` with each path in `mounts` (longest first) replaced where it stands as a whole path
/// or a path's start: after a space, quote, `=` or redirection, and before `/` or the path's end.
fn replace_paths(script: &str, mounts: &[(String, String)]) -> String {
    let path_char = |c: char| c.is_alphanumeric() || "._-/$".contains(c);
    let mut out = String::new();
    let mut rest = script;
    let mut prev = ' ';
    while let Some(c) = rest.chars().next() {
        let hit = (!path_char(prev)).then(|| {
            mounts.iter().find(|(p, _)| {
                rest.starts_with(p.as_str())
                    && rest[p.len()..]
                        .chars()
                        .next()
                        .is_none_or(|n| n == '/' || !path_char(n))
            })
        });
        if let Some(Some((p, d))) = hit {
            out.push_str(d);
            rest = &rest[p.len()..];
            prev = 'x';
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            prev = c;
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) {
    std::fs::create_dir_all(dir).unwrap();
    kirq::pki::write_new(&dir.join(name), text, mode).unwrap();
}

/// The config a container's `run -c PATH` (and its check-config init container) reads.
fn config_path(c: &Value, program: &str) -> String {
    let cmd = str_list(&c["command"]);
    assert_eq!(&cmd[..3], [program, "run", "-c"], "{}", c["name"]);
    cmd[3].clone()
}

#[test]
fn rendered_configs_pass_check_config_with_real_files_and_fail_mangled() {
    let docs = documents();
    let ns = docs["kustomization.yaml"][0]["namespace"]
        .as_str()
        .expect("kustomization namespace");
    let sts = find(&docs, "StatefulSet", "kirq-hub");
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    let svc = find(&docs, "Service", service);
    assert_eq!(svc["spec"]["clusterIP"], "None", "a headless Service");
    let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 2);
    let pods: Vec<String> = (0..replicas).map(|i| format!("kirq-hub-{i}")).collect();
    let hosts: Vec<String> = pods
        .iter()
        .map(|p| format!("{p}.{service}.{ns}.svc.{CLUSTER_DOMAIN}"))
        .collect();

    // What the operator puts in the Secrets and the kirq-hub-pub ConfigMap (README, Kubernetes).
    let root = tempfile::tempdir().unwrap();
    let secrets = root.path().join("secrets");
    let provided: BTreeMap<&str, PathBuf> = [
        "kirqd-tls",
        "kirq-hub-pub",
        "kirq-hub-signing",
        "kirq-hub-tls",
    ]
    .into_iter()
    .map(|s| (s, secrets.join(s)))
    .collect();
    let hub_ca = kirq::pki::Ca::new("hub CA").unwrap();
    let daemon_ca = kirq::pki::Ca::new("daemon CA").unwrap();
    let trust_domain = "kirq.example.org";
    for (pod, host) in pods.iter().zip(&hosts) {
        let key = kirq::crypto::sig::HubSigningKey::generate(kirq::crypto::sig::SigAlg::Falcon512);
        std::fs::create_dir_all(&provided["kirq-hub-signing"]).unwrap();
        let (_, public) = key.write_pair(&provided["kirq-hub-signing"], pod).unwrap();
        let public_text = std::fs::read_to_string(public).unwrap();
        write(
            &provided["kirq-hub-pub"],
            &format!("{pod}.pub"),
            &public_text,
            0o644,
        );
        let leaf = hub_ca.issue(host, &[]).unwrap();
        let tls = &provided["kirq-hub-tls"];
        write(tls, &format!("{pod}.crt"), &leaf.cert_pem, 0o644);
        write(tls, &format!("{pod}.key"), &leaf.key_pem, 0o600);
    }
    write(
        &provided["kirq-hub-tls"],
        "daemon-ca.pem",
        daemon_ca.cert_pem(),
        0o644,
    );
    let uri = kirq::tls::spiffe_daemon_id(trust_domain, NODE);
    let leaf = daemon_ca.issue_uri(&uri, &[]).unwrap();
    let tls = &provided["kirqd-tls"];
    write(tls, &format!("{NODE}.crt"), &leaf.cert_pem, 0o644);
    write(tls, &format!("{NODE}.key"), &leaf.key_pem, 0o600);
    write(tls, "hub-ca.pem", hub_ca.cert_pem(), 0o644);

    // Each hub pod: rendered, checked, with no daemon list and the trust domain set.
    let pod = &sts["spec"]["template"]["spec"];
    for name in &pods {
        let vols = Volumes::new(&root.path().join(name), pod, &docs, &provided);
        let render = container(pod, "render-config");
        assert_eq!(
            list(&render["env"])[0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        vols.run_script(render, &[("POD_NAME", name)]);
        let check = container(pod, "check-config");
        let hub = container(pod, "kirq-hub");
        let path = config_path(hub, "kirq-hub");
        assert_eq!(
            str_list(&check["command"]),
            ["kirq-hub", "check-config", "-c", &path]
        );
        let (ok, err) = vols.run(check, None);
        assert!(ok, "kirq-hub check-config for {name}: {err}");
        let cfg = kirq::config::HubConfig::load(&vols.map(hub, &path)).unwrap();
        assert_eq!(&cfg.id, name);
        assert!(cfg.daemons.is_empty(), "a pull-only hub lists no daemons");
        assert_eq!(cfg.push_interval_ms, 0);
        assert_eq!(
            cfg.tls.spiffe_trust_domain.as_deref(),
            Some(trust_domain),
            "the trust domain the daemons' certificates name"
        );
        assert_eq!(u64::from(cfg.listen.port()), port, "Service port");
        kirq::tls::Identity::load(&cfg.tls.cert, &cfg.tls.key).unwrap();

        // Mangled: a trust domain written as a SPIFFE ID is refused, naming the key.
        let text = std::fs::read_to_string(vols.map(hub, &path)).unwrap();
        let bad = text.replace(
            &format!("\"{trust_domain}\""),
            &format!("\"spiffe://{trust_domain}\""),
        );
        assert_ne!(bad, text);
        let bad_path = vols.map(hub, &path).with_file_name("mangled.toml");
        std::fs::write(&bad_path, bad).unwrap();
        let (ok, err) = vols.run(check, Some(&bad_path));
        assert!(!ok, "a mangled hub config passed check-config");
        assert!(err.contains("tls.spiffe_trust_domain"), "{err}");
    }

    // The daemon on node NODE: its id is the node's name, its hubs each hub pod in order.
    let ds = &find(&docs, "DaemonSet", "kirqd")["spec"]["template"]["spec"];
    let vols = Volumes::new(&root.path().join("kirqd"), ds, &docs, &provided);
    let render = container(ds, "render-config");
    assert_eq!(
        list(&render["env"])[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    vols.run_script(render, &[("NODE_NAME", NODE)]);
    let check = container(ds, "check-config");
    let kirqd = container(ds, "kirqd");
    let path = config_path(kirqd, "kirqd");
    assert_eq!(
        str_list(&check["command"]),
        ["kirqd", "check-config", "-c", &path]
    );
    assert_eq!(kirqd["securityContext"]["privileged"], true);
    let (ok, err) = vols.run(check, None);
    assert!(ok, "kirqd check-config: {err}");
    let cfg = kirq::config::DaemonConfig::load(&vols.map(kirqd, &path)).unwrap();
    assert_eq!(cfg.id, NODE);
    let urls: Vec<&str> = cfg.hubs.iter().map(|h| h.url.as_str()).collect();
    let want: Vec<String> = hosts
        .iter()
        .map(|h| format!("https://{h}:{port}"))
        .collect();
    assert_eq!(urls, want, "one [[hubs]] per hub pod, in order");
    assert_eq!(cfg.trust.hub_keys.len(), pods.len(), "every hub's key");
    kirq::tls::Identity::load(&cfg.receive.cert, &cfg.receive.key).unwrap();
    let cert = &kirq::tls::load_certs(&cfg.receive.cert).unwrap()[0];
    assert!(
        kirq::tls::cert_names_daemon(cert, &cfg.id, Some(trust_domain)),
        "the hubs take the certificate for the rendered id"
    );
    kirq::tls::load_certs(&cfg.receive.hub_ca).unwrap();

    // Mangled: a node name kirqd cannot take as its id (over 64 characters) is refused at Init.
    let text = std::fs::read_to_string(vols.map(kirqd, &path)).unwrap();
    let long = "n".repeat(65);
    let bad = text.replace(&format!("id = \"{NODE}\""), &format!("id = \"{long}\""));
    assert_ne!(bad, text);
    let bad_path = vols.map(kirqd, &path).with_file_name("mangled.toml");
    std::fs::write(&bad_path, bad).unwrap();
    let (ok, err) = vols.run(check, Some(&bad_path));
    assert!(!ok, "a mangled daemon config passed check-config");
    assert!(err.contains("`id`"), "{err}");
    // And a trusted hub key missing from kirq-hub-pub fails it too.
    std::fs::remove_file(provided["kirq-hub-pub"].join("kirq-hub-1.pub")).unwrap();
    let (ok, err) = vols.run(check, None);
    assert!(!ok, "check-config passed without kirq-hub-1.pub");
    assert!(err.contains("kirq-hub-1.pub"), "{err}");
}
