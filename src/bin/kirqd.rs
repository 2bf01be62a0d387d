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
#[command(name = "kirqd", version, propagate_version = true)]
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
    },
    /// Run a hub and a daemon in this process with throwaway keys and certificates.
    ///
    /// Both talk over real mutual TLS on loopback; the HTTP API is served on --listen. Nothing is
    /// written outside a private temporary directory that is removed on exit.
    Demo {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kirq::util::init_logging(&cli.log);
    let result = match cli.cmd {
        Cmd::Man { out } => {
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &out)
                .map_err(Into::into)
        }
        Cmd::Run { config } => kirq::daemon::run(&config).await,
        Cmd::Demo { listen } => kirq::demo::run(listen).await,
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
