//! kirqd running under a real systemd as PID 1, confined by the shipped unit, set up the way
//! README.md (Operating Kirq on Debian and Ubuntu) tells an operator: the .deb installed with
//! `dpkg -i` in a booted Debian system, hub keys and a PKI made with `kirq-hub keygen`/`pki`, the
//! example configs edited (hub and daemon URLs, the kernel feeder on), `kirqd check-config`, then
//! `systemctl enable --now kirq-hub kirqd`. The hub runs too (its own shipped unit) on the guest's
//! loopback, so kirqd's READY=1 follows a kernel reseed from hub-verified bytes.
//!
//! Checked from outside, with systemd's and the kernel's own views:
//! - `Type=notify`: `systemctl start` returns with the unit `active (running)`, so READY=1 came;
//!   `StatusText` is the daemon's STATUS= line; `WatchdogUSec` is the unit's 30 s;
//! - the process: root, CapEff = CapPrm = CapBnd = CAP_SYS_ADMIN + CAP_IPC_LOCK, no ambient or
//!   inheritable capability, NoNewPrivs 1, a seccomp filter; `/` and `/usr` read-only and the
//!   state directory writable in its mount namespace; the device ACL enforced on its cgroup
//!   (/dev/zero refused, /dev/urandom allowed); mlockall held (CAP_IPC_LOCK), the kernel feeder
//!   reseeded (CAP_SYS_ADMIN through the device ACL), the pool in memfd_secret memory wherever
//!   this kernel offers it (the syscall filter lets it through);
//! - the HTTP shim on the guest's loopback: `/api/rng/health`, `/metrics` (every metric the
//!   alert rules query is exported, and no alert condition holds), `POST /api/rng/random`;
//! - `systemctl reload` (SIGHUP) keeps the process; a restart seals and restores the pool;
//! - the watchdog: with `WatchdogSec=2s` (a test drop-in) the daemon stays up over 2.5 periods
//!   while systemd records its pings; stopped with SIGSTOP, systemd kills it for the watchdog and
//!   restarts it;
//! - `systemctl stop` ends with exit status 0 and leaves the sealed pool in /var/lib/kirq;
//! - the hub: active, never restarted, user kirq with no capability.
//!
//! The system: `systemd-nspawn -b` (package systemd-container) boots the host's own systemd from
//! a throwaway root directory: /usr and /var/lib/dpkg are overlays over the host's (the package
//! and dpkg's records of it land in the test's upper layers; the host is never written, and dpkg
//! checks the package's dependencies against what the host has), /etc is made here. Three
//! settings make the container hold kirqd as a Debian 12 host would:
//! - `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`: cgroup v2 inside (Debian 12's default), where systemd
//!   enforces `DeviceAllow=` with a BPF program. On a cgroup v1 host (the build hosts mount v1 +
//!   v2 "hybrid") nspawn does not delegate the v1 device controller and the ACL would not apply;
//! - `--system-call-filter="bpf memfd_secret"`: nspawn's own seccomp allow list refuses both; a
//!   host has no such filter above PID 1 (without bpf, systemd cannot load the device ACL);
//! - `--capability=CAP_IPC_LOCK`: not in nspawn's default bounding set; a host's PID 1 has it.
//!
//! `--private-network` gives the guest its own loopback, so the configs' fixed ports (8080,
//! 8443, 8444) collide with nothing on the host. The guest shares the host's kernel: the kernel
//! feeder mixes 64 bytes into the host's pool and reseeds it (as tests/kernel_feeder_root.rs does).
//! Not covered here: the Debian 6.1 kernel (the guest runs on the host's), CUSE (the guest's /dev
//! has no /dev/cuse, so kirqd serves HTTP only and says so; tests/cuse_vm.rs covers the device),
//! SELinux. Why not a VM: KVM does not work on the build hosts, and under qemu's TCG the same
//! systemd (root over 9p) reached multi-user.target 24 s after power-on (41 s wall to power-off),
//! against under a second here.
//!
//! Needs root, systemd-container, util-linux (nsenter), curl, dpkg, binutils and cargo-deb; a
//! missing one fails the test with its install command. About 30 s.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CAP_SYS_ADMIN (21) and CAP_IPC_LOCK (14): what kirqd.service keeps.
const KIRQD_CAPS: u64 = (1 << 21) | (1 << 14);
/// The guest's PATH and nothing else from the test's environment.
const GUEST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Files copied from the host's /etc into the guest's: users and groups (so the host's packages'
/// services find theirs), name lookup, the loader cache, dpkg's settings and alternatives.
const HOST_ETC: [&str; 8] = [
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "dpkg",
];

/// A booted container: systemd as PID 1 of its own PID namespace.
struct Machine {
    root: PathBuf,
    console: PathBuf,
    /// `timeout … systemd-nspawn`, started inside `cgroups`.
    nspawn: Child,
    /// The guest's PID 1, as the host numbers it.
    leader: i32,
    /// The cgroups made for the container (one per hierarchy), removed on drop.
    cgroups: Vec<PathBuf>,
}

/// A command's exit code and output.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

impl Machine {
    /// Assembles the root directory under `dir` and boots it; returns once systemd reports the
    /// system up.
    fn boot(dir: &Path, deb: &Path) -> (Self, Duration) {
        let root = dir.join("root");
        // Writable upper layers over the host's /usr and dpkg database (--overlay= below).
        let (usr_upper, dpkg_upper) = (dir.join("usr-upper"), dir.join("dpkg-upper"));
        for d in [
            "usr",
            "etc",
            "var/lib/dpkg",
            "var/tmp",
            "tmp",
            "root",
            "home",
            "run",
            "proc",
            "sys",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::create_dir_all(&usr_upper).unwrap();
        std::fs::create_dir_all(&dpkg_upper).unwrap();
        for l in ["bin", "sbin", "lib", "lib64"] {
            let host = std::fs::read_link(Path::new("/").join(l)).unwrap_or_else(|_| {
                panic!(
                    "/{l} is not a symlink: this test boots the host's /usr and needs a \
                     merged-/usr host (Debian 12)"
                )
            });
            std::os::unix::fs::symlink(host, root.join(l)).unwrap();
        }
        let mut cp = Command::new("cp");
        cp.arg("-a");
        for f in HOST_ETC {
            cp.arg(Path::new("/etc").join(f));
        }
        common::deb::check(cp.arg(root.join("etc")), "apt-get install coreutils");
        // nspawn looks for os-release before it mounts the /usr overlay: a copy in /etc.
        std::fs::copy("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
        std::fs::write(root.join("etc/hostname"), "kirq-live\n").unwrap();
        std::fs::write(
            root.join("etc/hosts"),
            "127.0.0.1 localhost\n::1 localhost\n",
        )
        .unwrap();
        // Empty: systemd sets a machine id from the container's UUID at boot.
        std::fs::write(root.join("etc/machine-id"), "").unwrap();
        std::fs::copy(deb, root.join("root/kirq.deb")).unwrap();

        let name = format!("kirq-live-{}", std::process::id());
        let cgroups = make_cgroups(&name);
        let console = dir.join("console.log");
        let log = std::fs::File::create(&console).unwrap();
        let t = Instant::now();
        // The shell joins the container's cgroups, then becomes `timeout`, which bounds the
        // container's life even if this test process dies; nspawn uses that cgroup
        // (--keep-unit: PID 1 here is not systemd, so there is no manager to ask for a scope).
        let mut script = String::new();
        for c in &cgroups {
            script.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", c.display()));
        }
        script.push_str("exec timeout -k 10 900 systemd-nspawn \"$@\"");
        let nspawn = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args([
                "--quiet",
                "--keep-unit",
                "--register=no",
                "--link-journal=no",
                &format!("--machine={name}"),
                "--private-network",
                "--capability=CAP_IPC_LOCK",
                "--system-call-filter=bpf memfd_secret",
                "--console=read-only",
                "-D",
            ])
            .arg(&root)
            // The host's /usr and /var/lib/dpkg as read-only lower layers: dpkg in the guest
            // writes to the test's upper layers only, and nothing is copied (or deleted after:
            // the dpkg database alone is 3,000 files).
            .arg(format!("--overlay=/usr:{}:/usr", usr_upper.display()))
            .arg(format!(
                "--overlay=/var/lib/dpkg:{}:/var/lib/dpkg",
                dpkg_upper.display()
            ))
            .args(["-b", "systemd.unit=multi-user.target"])
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let mut m = Machine {
            root,
            console,
            nspawn,
            leader: 0,
            cgroups,
        };
        m.leader = m.find_leader(Duration::from_secs(30));
        // `--wait` needs PID 1's private socket, which appears a moment after PID 1 does
        // ("offline" until then).
        let deadline = Instant::now() + Duration::from_secs(120);
        let state = loop {
            let state = m.run("systemctl is-system-running --wait", 120);
            let state = state.out.trim().to_owned();
            if !matches!(state.as_str(), "offline" | "") || Instant::now() > deadline {
                break state;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let booted = t.elapsed();
        if state != "running" {
            let failed = m.run("systemctl --failed --no-legend --plain", 20).out;
            assert_eq!(
                state,
                "degraded",
                "the guest did not boot:\n{}",
                m.console_text()
            );
            assert!(
                !failed.contains("kirq"),
                "a kirq unit failed at boot: {failed}"
            );
            println!("guest booted degraded (units not Kirq's): {failed}");
        }
        (m, booted)
    }

    /// The guest's PID 1: a descendant of nspawn that is PID 1 in its own PID namespace.
    fn find_leader(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                panic!(
                    "systemd-nspawn exited ({status}) before the guest booted (install it with \
                     `apt-get install systemd-container`):\n{}",
                    self.console_text()
                );
            }
            let mut frontier = vec![self.nspawn.id() as i32];
            while let Some(pid) = frontier.pop() {
                for child in children(pid) {
                    let status = std::fs::read_to_string(format!("/proc/{child}/status"))
                        .unwrap_or_default();
                    let nspid: Vec<&str> = status
                        .lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .map(|v| v.split_whitespace().collect())
                        .unwrap_or_default();
                    if nspid.len() >= 2 && nspid.last() == Some(&"1") {
                        return child;
                    }
                    frontier.push(child);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no guest PID 1 after {limit:?}:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sh -c script` in the guest (all its namespaces, its root), bounded by `secs`.
    fn run(&self, script: &str, secs: u64) -> Ran {
        self.run_in(&["-a"], script, secs)
    }

    /// [`Machine::run`] in the guest namespaces `nsenter` selects with `ns`.
    fn run_in(&self, ns: &[&str], script: &str, secs: u64) -> Ran {
        let o = Command::new("timeout")
            .args(["-k", "5", &secs.to_string(), "nsenter", "-t"])
            .arg(self.leader.to_string())
            .args(ns)
            .args(["sh", "-c", script])
            .env_clear()
            .env("PATH", GUEST_PATH)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter (util-linux)");
        let code = o.status.code().unwrap_or(-1);
        assert!(
            code != 124 && code != 137,
            "guest command timed out after {secs} s: {script}"
        );
        Ran {
            code,
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// [`Machine::run`], which must succeed; returns stdout.
    fn ok(&self, script: &str) -> String {
        let r = self.run(script, 120);
        assert_eq!(
            r.code, 0,
            "guest command failed: {script}\nstdout:\n{}\nstderr:\n{}",
            r.out, r.err
        );
        r.out
    }

    /// `systemctl show UNIT`: property → value.
    fn show(&self, unit: &str) -> BTreeMap<String, String> {
        self.ok(&format!("systemctl show {unit}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn journal(&self, unit: &str) -> String {
        self.ok(&format!("journalctl -u {unit} -o cat --no-pager"))
    }

    /// GET (or POST JSON when `body` is given) on the guest's loopback with curl.
    fn http(&self, path: &str, body: Option<&str>) -> String {
        let post = body
            .map(|b| format!("-H 'content-type: application/json' -d '{b}' "))
            .unwrap_or_default();
        self.ok(&format!(
            "curl -sS --fail-with-body --max-time 10 {post}http://127.0.0.1:8080{path}"
        ))
    }

    /// Polls `systemctl show` until `done` holds.
    fn wait_show(
        &self,
        unit: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.show(unit);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{unit}: timed out after {limit:?} waiting for {what}; now {:?}\n{}",
                pick(
                    &s,
                    &["ActiveState", "SubState", "Result", "MainPID", "NRestarts"]
                ),
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Powers the guest off and waits for nspawn (the exit status is not the test's concern: a
    /// guest that hangs on the way down is killed); removes the container's cgroups.
    fn shutdown(&mut self) -> Duration {
        let t = Instant::now();
        let leader = std::mem::take(&mut self.leader);
        if leader > 0 {
            let _ = Command::new("timeout")
                .args(["10", "nsenter", "-t", &leader.to_string(), "-a"])
                .args(["systemctl", "poweroff", "--no-block"])
                .env_clear()
                .env("PATH", GUEST_PATH)
                .output();
        }
        let mut deadline = Instant::now() + Duration::from_secs(30);
        let mut killed = false;
        while self.nspawn.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                // SIGKILL to the guest's PID 1 ends its whole PID namespace; nspawn then exits.
                // Last, `timeout` (the child) is killed whatever happened.
                let victim = if killed || leader <= 0 {
                    self.nspawn.id() as i32
                } else {
                    leader
                };
                eprintln!("guest did not power off: SIGKILL to {victim}");
                let _ = Command::new("kill")
                    .args(["-KILL", &victim.to_string()])
                    .status();
                if killed {
                    let _ = self.nspawn.wait();
                    break;
                }
                killed = true;
                deadline = Instant::now() + Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for c in std::mem::take(&mut self.cgroups) {
            remove_cgroup_tree(&c);
        }
        t.elapsed()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// PIDs whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A new cgroup `name` below this process's own, in the cgroup v2 hierarchy and, on hybrid
/// hosts, in systemd's named v1 hierarchy (nspawn wants its cgroup in both).
fn make_cgroups(name: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut made = Vec::new();
    for line in mountinfo.lines() {
        let (pre, post) = line.split_once(" - ").unwrap();
        let mount = pre.split_whitespace().nth(4).unwrap();
        let mut post = post.split_whitespace();
        let fstype = post.next().unwrap();
        let opts = post.nth(1).unwrap_or("");
        let key = match fstype {
            "cgroup2" => "0::",
            "cgroup" if opts.split(',').any(|o| o == "name=systemd") => "name=systemd:",
            _ => continue,
        };
        let rel = own
            .lines()
            .find_map(|l| {
                if key == "0::" {
                    l.strip_prefix("0::")
                } else {
                    l.split_once(key).map(|(_, p)| p)
                }
            })
            .unwrap_or_else(|| panic!("no {key} line in /proc/self/cgroup:\n{own}"));
        let dir = Path::new(mount)
            .join(rel.trim_start_matches('/'))
            .join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make cgroup {}: {e}", dir.display()));
        made.push(dir);
    }
    assert!(
        !made.is_empty(),
        "no cgroup hierarchy mounted (/sys/fs/cgroup)"
    );
    made
}

/// Removes a cgroup and the ones the container left below it (deepest first), retrying while
/// its last processes exit.
fn remove_cgroup_tree(top: &Path) {
    fn dirs(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs(&e.path(), out);
                }
            }
        }
        out.push(p.to_owned());
    }
    for _ in 0..50 {
        let mut all = Vec::new();
        dirs(top, &mut all);
        let left = all
            .iter()
            .filter(|d| std::fs::remove_dir(d).is_err())
            .count();
        if left == 0 || !top.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("cgroup {} could not be removed", top.display());
}

fn pick(m: &BTreeMap<String, String>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("{k}={}", m.get(*k).map_or("?", String::as_str)))
        .collect()
}

/// A `/proc/PID/status` field, e.g. `CapEff` → "0000000000204000".
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status:\n{status}"))
        .trim()
}

fn caps(status: &str, key: &str) -> u64 {
    u64::from_str_radix(status_field(status, key), 16).unwrap()
}

/// The mount options of the mount at exactly `target` in a mountinfo (the last one wins, as the
/// kernel stacks them).
fn mount_opts<'a>(mountinfo: &'a str, target: &str) -> &'a str {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&target)).then(|| f[5])
        })
        .next_back()
        .unwrap_or_else(|| panic!("no mount at {target}:\n{mountinfo}"))
}

/// Sample value of an unlabelled metric in a Prometheus text scrape.
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{scrape}"))
}

/// Metric names (`entropy_*`, `kirq_*`) in the alert rules' expressions.
fn alert_metrics() -> Vec<String> {
    let rules = std::fs::read_to_string(repo().join("monitoring/kirq-alerts.yml")).unwrap();
    let mut names = Vec::new();
    for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        for w in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if (w.starts_with("entropy_") || w.starts_with("kirq_"))
                && !names.iter().any(|n| n == w)
            {
                names.push(w.to_owned());
            }
        }
    }
    assert!(names.len() >= 3, "alert rules name {names:?}");
    names
}

/// Replaces `from` by `to` in a config file of the guest, which must contain it.
fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(
        s.contains(from),
        "{} no longer contains {from:?}: update this test",
        path.display()
    );
    std::fs::write(path, s.replace(from, to)).unwrap();
}

#[test]
fn kirqd_runs_confined_under_systemd_as_pid_1() {
    let t_all = Instant::now();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test boots a container: run it as root"
    );
    for (p, pkg) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("curl", "curl"),
        ("dpkg", "dpkg"),
        ("strip", "binutils"),
        ("timeout", "coreutils"),
    ] {
        common::need_program(p, pkg);
    }
    common::need_path("/lib/systemd/systemd", "apt-get install systemd");

    // Scratch space under target/tmp: the guest's root directory and the overlays' upper layers
    // (about 100 MB), all removed at the end.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let t_deb = Instant::now();
    let deb = common::deb::build(tmp.path());
    let deb_time = t_deb.elapsed();
    let (m, booted) = Machine::boot(tmp.path(), &deb);
    println!("guest up: systemd as PID 1 after {booted:.1?}");

    // 1. Install, as an operator does.
    let t_install = Instant::now();
    m.ok("dpkg -i /root/kirq.deb");
    assert_eq!(
        m.ok("dpkg-query -W -f='${Status}' kirq"),
        "install ok installed"
    );
    let install = t_install.elapsed();
    // The unit systemd loaded is the shipped file, byte for byte.
    let fragment = m.show("kirqd.service")["FragmentPath"].clone();
    assert_eq!(
        m.ok(&format!("cat {fragment}")),
        std::fs::read_to_string(repo().join("systemd/kirqd.service")).unwrap(),
        "{fragment} is not systemd/kirqd.service"
    );
    assert_eq!(
        std::fs::metadata(m.path("/etc/kirq/pool.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // 2. Keys, certificates and configs (README: Running it for real; Keys and certificates).
    m.ok("kirq-hub keygen --out /etc/kirq --name hub");
    m.ok("kirq-hub pki --out /etc/kirq/pki --hub hub-1 --daemon kirqd-1");
    // The units hand these names over as credentials (LoadCredential=tls-key:/etc/kirq/pki/...).
    m.ok(
        "cd /etc/kirq/pki && mv hub-1.crt hub.crt && mv hub-1.key hub.key \
          && mv kirqd-1.crt kirqd.crt && mv kirqd-1.key kirqd.key",
    );
    edit(
        &m.path("/etc/kirq/kirq-hub.toml"),
        "https://kirqd-1.example:8443",
        "https://localhost:8443",
    );
    edit(
        &m.path("/etc/kirq/kirqd.toml"),
        "https://hub-1.example:8444",
        "https://localhost:8444",
    );
    // The kernel feeder uses CAP_SYS_ADMIN and /dev/random through the device ACL, and READY=1
    // then follows the first reseed from the pool's (hub-verified) bytes.
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("/etc/kirq/kirqd.toml"))
        .unwrap();
    writeln!(cfg, "\n[kernel]\nenabled = true").unwrap();
    drop(cfg);
    let checked =
        m.ok("CREDENTIALS_DIRECTORY=/etc/kirq kirqd check-config -c /etc/kirq/kirqd.toml");
    println!("check-config: {checked}");

    // 3. Start the hub, then kirqd.
    m.ok("systemctl enable --now kirq-hub.service");
    m.wait_show(
        "kirq-hub.service",
        Duration::from_secs(20),
        "the hub listening",
        |_| {
            m.run(
                "curl -s -o /dev/null --max-time 2 -k https://127.0.0.1:8444/",
                10,
            )
            .code
                != 7
        },
    );
    let t_start = Instant::now();
    let started = m.run("systemctl enable --now kirqd.service", 120);
    let start_time = t_start.elapsed();
    assert_eq!(
        started.code,
        0,
        "systemctl enable --now kirqd failed: {}\n{}",
        started.err,
        m.journal("kirqd.service")
    );

    // 4. systemd's view: notify, READY=1, STATUS=, the watchdog.
    let s = m.show("kirqd.service");
    println!(
        "kirqd.service: {:?}",
        pick(
            &s,
            &[
                "Type",
                "NotifyAccess",
                "ActiveState",
                "SubState",
                "StatusText",
                "WatchdogUSec",
                "NRestarts",
                "MainPID",
            ]
        )
    );
    assert_eq!(s["Type"], "notify");
    assert_eq!(s["NotifyAccess"], "main");
    assert_eq!((&*s["ActiveState"], &*s["SubState"]), ("active", "running"));
    assert_eq!(s["WatchdogUSec"], "30s");
    assert_eq!(s["NRestarts"], "0");
    assert!(
        s["StatusText"].starts_with("kernel CRNG reseeded from ")
            && s["StatusText"].ends_with(" verified bytes"),
        "StatusText={:?}",
        s["StatusText"]
    );
    let pid: u32 = s["MainPID"].parse().unwrap();
    assert!(pid > 1);
    let j = m.journal("kirqd.service");
    for want in [
        "memory locked (mlockall)",
        "core dumps disabled",
        "kernel CRNG reseeded (RNDRESEEDCRNG)",
        "hub reachable",
        "Started kirqd.service",
    ] {
        assert!(j.contains(want), "no {want:?} in the journal:\n{j}");
    }
    for bad in ["could not lock memory", "kernel feeder disabled", "ERROR"] {
        assert!(!j.contains(bad), "{bad:?} in the journal:\n{j}");
    }

    // 5. The process as the sandbox intends.
    let st = m.ok(&format!("cat /proc/{pid}/status"));
    println!(
        "kirqd /proc/{pid}/status: Uid {} CapEff {} CapPrm {} CapBnd {} CapAmb {} CapInh {} \
         NoNewPrivs {} Seccomp {}",
        status_field(&st, "Uid"),
        status_field(&st, "CapEff"),
        status_field(&st, "CapPrm"),
        status_field(&st, "CapBnd"),
        status_field(&st, "CapAmb"),
        status_field(&st, "CapInh"),
        status_field(&st, "NoNewPrivs"),
        status_field(&st, "Seccomp"),
    );
    assert_eq!(status_field(&st, "Uid"), "0\t0\t0\t0");
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(caps(&st, k), KIRQD_CAPS, "{k}");
    }
    assert_eq!(caps(&st, "CapAmb"), 0);
    assert_eq!(caps(&st, "CapInh"), 0);
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");
    assert_eq!(status_field(&st, "Seccomp"), "2");
    let mounts = m.ok(&format!("cat /proc/{pid}/mountinfo"));
    for (target, want) in [("/", "ro"), ("/usr", "ro"), ("/var/lib/kirq", "rw")] {
        let opts = mount_opts(&mounts, target);
        assert!(
            opts.split(',').any(|o| o == want),
            "{target} is {opts} for kirqd, want {want}"
        );
    }
    // The device ACL (DevicePolicy=strict) holds for every process in the unit's cgroup: a shell
    // moved there (from the host's cgroup namespace, which may move it; the guest's /dev and
    // /sys) can read /dev/urandom but not open /dev/zero, which kirqd's private /dev has too.
    let cg = format!("/sys/fs/cgroup{}/cgroup.procs", s["ControlGroup"]);
    let in_cgroup = |dev: &str| {
        m.run_in(
            &["-m"],
            &format!("echo $$ > {cg} && exec head -c 16 {dev} > /dev/null"),
            10,
        )
    };
    let zero = in_cgroup("/dev/zero");
    assert!(
        zero.code != 0 && zero.err.contains("Operation not permitted"),
        "/dev/zero opened in kirqd's cgroup ({}): {}",
        zero.code,
        zero.err
    );
    let urandom = in_cgroup("/dev/urandom");
    assert_eq!(
        urandom.code, 0,
        "/dev/urandom in kirqd's cgroup: {}",
        urandom.err
    );

    // 6. The HTTP shim on the guest's loopback, and what the alerts see.
    let health: serde_json::Value = serde_json::from_str(&m.http("/api/rng/health", None)).unwrap();
    println!("GET /api/rng/health: {health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["fallback_active"], false);
    assert_eq!(health["hubs"][0]["reachable"], true);
    assert!(health["pool"]["admitted_bytes_total"].as_u64().unwrap() > 0);
    assert_eq!(health["pool"]["fallback_bytes"], 0);
    assert_eq!(health["kernel_feeder"]["state"], "running");
    assert!(health["kernel_feeder"]["reseeds_total"].as_u64().unwrap() >= 1);
    assert_eq!(
        health["kernel_feeder"]["last_error"],
        serde_json::Value::Null
    );
    assert_eq!(health["memory"]["memory_locked"], true);
    assert_eq!(health["memory"]["no_core_dumps"], true);
    // The guest shares this kernel: where it hands out secret memory, the unit must let kirqd
    // have it.
    let secretmem = kirq::pool::secretmem::SecretRegion::available();
    assert_eq!(
        health["memory"]["pool_secret_memory"], secretmem,
        "memfd_secret available to an unconfined process: {secretmem}"
    );
    // No CUSE in the guest's /dev: HTTP only, said so (README: auto mode).
    assert_eq!(health["device"]["mode"], "off");
    let scrape = m.http("/metrics", None);
    for name in alert_metrics() {
        if name.starts_with("kirq_node_round") {
            // One series per trusted decentralized node, from the start; this daemon trusts none
            // (tests/monitoring_promtool.rs checks that kirqd exports them).
            continue;
        }
        assert!(
            scrape.lines().any(|l| l.starts_with(&name)),
            "{name} (used by monitoring/kirq-alerts.yml) not in /metrics"
        );
    }
    // None of the three alert conditions holds on a healthy daemon.
    assert!(metric(&scrape, "entropy_pool_bytes") >= 1024.0);
    assert_eq!(metric(&scrape, "kirq_fallback_active"), 0.0);
    assert!(metric(&scrape, "kirq_packets_accepted_total") > 0.0);
    for l in scrape
        .lines()
        .filter(|l| l.starts_with("kirq_source_quality{"))
    {
        let q: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(q >= 0.9, "{l}");
    }
    let r: serde_json::Value =
        serde_json::from_str(&m.http("/api/rng/random", Some(r#"{"num_bytes":32}"#))).unwrap();
    assert_eq!(r["num_bytes"], 32, "{r}");

    // 7. Reload (SIGHUP) keeps the process; a restart seals the pool and the new start restores
    // and destroys the file. The restart also applies the test's short watchdog.
    m.ok("systemctl reload kirqd.service");
    m.wait_show(
        "kirqd.service",
        Duration::from_secs(10),
        "the reload",
        |_| {
            // systemd's line once ExecReload= ran, and the daemon's (its wording of what was
            // reloaded varies; "pool kept" is the promise).
            let j = m.journal("kirqd.service");
            j.contains("Reloaded kirqd.service")
                && j.lines()
                    .any(|l| l.contains("SIGHUP: ") && l.contains("reloaded; pool kept"))
        },
    );
    assert_eq!(m.show("kirqd.service")["MainPID"], pid.to_string());
    let dropin = m.path("/etc/systemd/system/kirqd.service.d/50-test-watchdog.conf");
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "[Service]\nWatchdogSec=2s\n").unwrap();
    m.ok("systemctl daemon-reload && systemctl restart kirqd.service");
    let j = m.journal("kirqd.service");
    assert!(j.contains("unserved entropy sealed"), "{j}");
    assert!(j.contains("restored sealed entropy; file destroyed"), "{j}");
    assert!(!m.path("/var/lib/kirq/pool.sealed").exists());

    // 8. The watchdog: pings keep it up over 2.5 periods; a stopped loop gets it restarted.
    let s = m.show("kirqd.service");
    assert_eq!(s["WatchdogUSec"], "2s");
    let (pid, restarts) = (s["MainPID"].clone(), s["NRestarts"].clone());
    let ping0: u64 = s["WatchdogTimestampMonotonic"].parse().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let s = m.show("kirqd.service");
    assert_eq!((&*s["ActiveState"], &*s["SubState"]), ("active", "running"));
    assert_eq!((&s["MainPID"], &s["NRestarts"]), (&pid, &restarts));
    let ping1: u64 = s["WatchdogTimestampMonotonic"].parse().unwrap();
    assert!(
        ping1 > ping0 + 4_000_000,
        "no watchdog ping recorded over 5 s ({ping0} -> {ping1})"
    );
    let t_wedge = Instant::now();
    m.ok(&format!("kill -STOP {pid}"));
    let s = m.wait_show(
        "kirqd.service",
        Duration::from_secs(30),
        "a watchdog restart",
        |s| {
            s["MainPID"] != pid
                && s["MainPID"] != "0"
                && s["ActiveState"] == "active"
                && s["SubState"] == "running"
        },
    );
    let wedge = t_wedge.elapsed();
    assert_eq!(
        s["NRestarts"].parse::<u32>().unwrap(),
        restarts.parse::<u32>().unwrap() + 1
    );
    let j = m.journal("kirqd.service");
    assert!(j.contains("Watchdog timeout (limit 2s)!"), "{j}");
    println!("SIGSTOPped kirqd restarted by the watchdog after {wedge:.1?}");

    // 9. A clean stop: exit 0, the pool sealed at rest.
    m.ok("systemctl stop kirqd.service");
    let s = m.show("kirqd.service");
    assert_eq!(
        (
            &*s["ActiveState"],
            &*s["Result"],
            &*s["ExecMainCode"],
            &*s["ExecMainStatus"]
        ),
        ("inactive", "success", "1", "0"),
        "{:?}",
        pick(
            &s,
            &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]
        )
    );
    let sealed = m.path("/var/lib/kirq/pool.sealed");
    let meta = std::fs::metadata(&sealed).expect("the sealed pool after systemctl stop");
    assert!(meta.len() > 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    assert!(
        m.journal("kirqd.service")
            .contains("unserved entropy sealed")
    );

    // 10. The hub: up the whole time, as user kirq, with no capability.
    let h = m.show("kirq-hub.service");
    assert_eq!((&*h["ActiveState"], &*h["NRestarts"]), ("active", "0"));
    let hst = m.ok(&format!("cat /proc/{}/status", h["MainPID"]));
    let kirq_uid = m.ok("id -u kirq");
    assert_eq!(
        status_field(&hst, "Uid").split('\t').next(),
        Some(kirq_uid.trim())
    );
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(caps(&hst, k), 0, "kirq-hub {k}");
    }

    let mut m = m;
    let down = m.shutdown();
    let total = t_all.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "\nsystemd_live: .deb built {deb_time:.1?}, boot {booted:.1?}, dpkg -i {install:.1?}, \
         kirqd start to READY=1 {start_time:.1?}, watchdog restart {wedge:.1?}, poweroff \
         {down:.1?}; kirqd CapEff {KIRQD_CAPS:#018x}; test wall {total:.1?}"
    );
}
