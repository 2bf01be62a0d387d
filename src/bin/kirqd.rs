//! kirqd: the Kirq daemon. Parses arguments and hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Verifies entropy packets from Kirq hubs and serves them from a single-use pool.
///
/// kirqd accepts packets only over mutual TLS, verifies each one completely (Falcon-512 signature,
/// recipient, expiry, replay, health tests) before a byte is admitted, and hands every byte to
/// exactly one consumer through its HTTP API.
#[derive(Parser, Debug)]
#[command(
    name = "kirqd",
    version,
    propagate_version = true,
    after_help = "Start here: `kirqd demo` runs a hub and a daemon on loopback and prints curl \
                  commands to try. Config reference: README.md."
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon from a config file.
    Run {
        /// Path to the daemon's TOML config.
        #[arg(long, short, default_value = "/etc/kirq/kirqd.toml")]
        config: PathBuf,
        /// A spool of length-prefixed packets (as in a refill answer) to verify and admit at
        /// start, e.g. a seed handed over by a VM host. The file is deleted before any of it is
        /// admitted, so a restart cannot admit it twice; a missing spool is only a warning.
        #[arg(long)]
        admit_packets: Option<PathBuf>,
    },
    /// Run a hub and a daemon in this process with throwaway keys and certificates.
    ///
    /// Both talk over real mutual TLS on loopback; the HTTP API is served on --listen. Nothing is
    /// written outside a private temporary directory that is removed on exit.
    Demo {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Keep the quantum service keys here (sealed) instead of in the temporary directory,
        /// so they survive a restart of the demo.
        #[arg(long, requires = "at_rest_key_file")]
        state_dir: Option<PathBuf>,
        /// The at-rest key (32 raw bytes or 64 hex digits, mode 0600) sealing --state-dir.
        #[arg(long, requires = "state_dir")]
        at_rest_key_file: Option<PathBuf>,
        /// Also serve the pool as DIR/kirq-rng (a FUSE mount; needs /dev/fuse).
        #[arg(long)]
        device_dir: Option<PathBuf>,
        /// With --device-dir: create /dev/kirq-rng through CUSE and link DIR/kirq-rng to it.
        #[arg(long, requires = "device_dir")]
        cuse: bool,
    },
    /// Check a device node or file as programs use it (consumes entropy), or benchmark it.
    ///
    /// Prints one `KIRQ-PROBE` line per check; exits non-zero when a check fails.
    ProbeDevice {
        /// The device node or FUSE file, e.g. /dev/kirq-rng.
        path: PathBuf,
        /// Files other readers wrote from the device at the same time (no 16-byte window may
        /// repeat across them).
        #[arg(long)]
        compare: Vec<PathBuf>,
        /// Measure read throughput (4, 64 and 128 KiB reads) against /dev/urandom instead.
        #[arg(long)]
        bench: bool,
        /// Bytes read per block size when benchmarking.
        #[arg(long, default_value_t = 8 << 20)]
        bench_bytes: usize,
    },
    /// Rotate the quantum service keys; a running kirqd uses the new keys after a restart.
    ///
    /// The Falcon-512 and ML-DSA-65 keys are replaced by new ones (the old files are kept as
    /// `.prev`). With --vrf
    /// the VRF key is retired (moved to `.prev`) and the next start makes a new one from pool
    /// entropy. Nothing changes unless the current files decrypt under the at-rest key.
    RotateKeys {
        #[arg(long, short, default_value = "/etc/kirq/kirqd.toml")]
        config: PathBuf,
        /// Also retire the VRF key.
        #[arg(long)]
        vrf: bool,
        /// Leave the signature keys (Falcon-512, ML-DSA-65) as they are (with --vrf: retire only
        /// the VRF key).
        #[arg(long, requires = "vrf")]
        keep_falcon: bool,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (the committed openapi.json).
    Openapi,
    /// Write man pages (roff) for this program and its subcommands into --out.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a config file and the files it names, then exit.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/kirq/kirqd.toml")]
        config: PathBuf,
    },
    /// Summarise a running kirqd's health, read from its local HTTP API.
    ///
    /// Pool level by provenance, hubs, last packet age, fallback, device, kernel feeder and
    /// sources, from GET /api/rng/health and /api/rng/stats; each reason for a verdict other than
    /// ok is listed.
    Status(kirq::status::StatusArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kirq::util::init_logging(&cli.log);
    if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Demo { .. }) {
        kirq::util::raise_open_file_limit();
    }
    let result = match cli.cmd {
        Cmd::Status(args) => return kirq::status::run(kirq::status::Program::Daemon, args).await,
        Cmd::Run {
            config,
            admit_packets,
        } => kirq::daemon::run(&config, admit_packets.as_deref()).await,
        Cmd::Demo {
            listen,
            state_dir,
            at_rest_key_file,
            device_dir,
            cuse,
        } => kirq::demo::run(listen, state_dir.zip(at_rest_key_file), device_dir, cuse).await,
        Cmd::RotateKeys {
            config,
            vrf,
            keep_falcon,
        } => rotate_keys(&config, !keep_falcon, vrf),
        Cmd::Openapi => {
            print!("{}", kirq::http::openapi::json());
            Ok(())
        }
        Cmd::ProbeDevice {
            path,
            compare,
            bench,
            bench_bytes,
        } => probe(&path, &compare, bench, bench_bytes),
        Cmd::Man { out } => {
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &out)
                .map_err(Into::into)
        }
        Cmd::CheckConfig { config } => kirq::config::DaemonConfig::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| kirq::daemon::load_trusted_keys(&c).map(|k| (c, k)))
            .map(|(c, k)| {
                println!(
                    "{}: ok (daemon {}, {} trusted hub keys)",
                    config.display(),
                    c.id,
                    k.len()
                )
            }),
    };
    kirq::util::exit_with(result)
}

fn rotate_keys(config: &std::path::Path, falcon: bool, vrf: bool) -> anyhow::Result<()> {
    let cfg = kirq::config::DaemonConfig::load(config)?;
    let q = cfg
        .quantum
        .ok_or_else(|| anyhow::anyhow!("{} has no [quantum] section", config.display()))?;
    let r = kirq::quantum::rotate(&q, falcon, vrf)?;
    for (name, rotated) in [("Falcon-512", r.falcon), ("ML-DSA-65", r.ml_dsa)] {
        if let Some((id, prev)) = rotated {
            println!("{name} service key rotated: new key id {id}");
            if let Some(p) = prev {
                println!("  previous key kept in {}", p.display());
            }
        }
    }
    if let Some(p) = r.vrf_retired {
        println!(
            "VRF key retired to {}; the next start makes a new one from pool entropy",
            p.display()
        );
    } else if vrf {
        println!("no VRF key to retire");
    }
    println!("restart kirqd to serve the new keys");
    Ok(())
}

fn probe(
    path: &std::path::Path,
    compare: &[PathBuf],
    bench: bool,
    bytes: usize,
) -> anyhow::Result<()> {
    use kirq::device::probe;
    if bench {
        let rows = probe::bench(
            path,
            &[4096, 65536, 131072],
            bytes,
            std::time::Duration::from_secs(60),
        )
        .map_err(anyhow::Error::msg)?;
        for r in rows {
            println!("{r}");
        }
        return Ok(());
    }
    let checks = probe::run_checks(path, compare);
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    anyhow::ensure!(failed == 0, "{failed} device checks failed");
    Ok(())
}
