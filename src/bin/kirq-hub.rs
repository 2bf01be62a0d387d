//! kirq-hub: the Kirq hub. Parses arguments and hands over to the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Gathers entropy from its sources, health-tests and mixes it, signs each packet with its key
/// (Falcon-512 by default, or ML-DSA-65) and delivers it to kirqd daemons over mutual TLS.
#[derive(Parser, Debug)]
#[command(name = "kirq-hub", version, propagate_version = true)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the hub from a config file.
    Run {
        /// Path to the hub's TOML config.
        #[arg(long, short, default_value = "/etc/kirq/kirq-hub.toml")]
        config: PathBuf,
    },
    /// Run a decentralized QRNG node: signed commitments and reveals of its own source's bytes,
    /// served to hubs over mutual TLS.
    Node {
        /// Path to the node's TOML config.
        #[arg(long, short, default_value = "/etc/kirq/kirq-node.toml")]
        config: PathBuf,
        /// TEST ONLY: misbehave on purpose (withhold-reveal, wrong-reveal), so tests can run a
        /// real faulty node. Never use it in production.
        #[arg(long, hide = true, value_enum)]
        fault: Option<kirq::node::Fault>,
        /// Check the config and the files it names (keys, certificates), then exit.
        #[arg(long)]
        check: bool,
    },
    /// Write a new signing key pair: DIR/NAME.key (mode 0600) and DIR/NAME.pub.
    ///
    /// Give NAME.pub to every daemon (trust.hub_keys); keep NAME.key on the hub. For a node, give
    /// NAME.pub to the hubs (decentralized.nodes.public_key) and the other nodes (peers); node keys
    /// are Falcon-512. Existing files are never overwritten.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "hub")]
        name: String,
        /// Signature algorithm of the key (a hub's packets are signed with it).
        #[arg(long, value_enum, default_value_t = kirq::crypto::sig::SigAlg::Falcon512)]
        alg: kirq::crypto::sig::SigAlg,
    },
    /// Write a development PKI: hub-ca.pem, daemon-ca.pem and a certificate and key per name.
    ///
    /// For tests and trials. In production, issue certificates from your own CA.
    Pki {
        #[arg(long)]
        out: PathBuf,
        /// Hub names (certificate DNS names); repeat for several.
        #[arg(long = "hub", required = true)]
        hubs: Vec<String>,
        /// Daemon ids (certificate DNS names); repeat for several.
        #[arg(long = "daemon", required = true)]
        daemons: Vec<String>,
        /// Decentralized node ids (certificate DNS names, from a third CA, node-ca.pem).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Write man pages (roff) for this program and its subcommands into --out.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a config file and the files it names, then exit.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/kirq/kirq-hub.toml")]
        config: PathBuf,
    },
    /// Summarise a running hub's health, read from its local /health endpoint (metrics_listen).
    ///
    /// Signing key and algorithm, hybrid mode, each source's state and quality, proof mode and
    /// decentralized nodes; each reason for a verdict other than ok is listed.
    Status(kirq::status::StatusArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kirq::util::init_logging(&cli.log);
    if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Node { check: false, .. }) {
        kirq::util::raise_open_file_limit();
    }
    let result = match cli.cmd {
        Cmd::Status(args) => return kirq::status::run(kirq::status::Program::Hub, args).await,
        Cmd::Man { out } => {
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &out)
                .map_err(Into::into)
        }
        Cmd::Run { config } => kirq::hub::run(&config).await,
        Cmd::Keygen { out, name, alg } => keygen(&out, &name, alg),
        Cmd::Node {
            config,
            check: true,
            ..
        } => kirq::node::check(&config).map(|summary| println!("{summary}")),
        Cmd::Node { config, fault, .. } => kirq::node::run(&config, fault).await,
        Cmd::Pki {
            out,
            hubs,
            daemons,
            nodes,
        } => {
            let hubs: Vec<&str> = hubs.iter().map(String::as_str).collect();
            let daemons: Vec<&str> = daemons.iter().map(String::as_str).collect();
            let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            kirq::pki::write_dev_pki(&out, &hubs, &daemons)
                .and_then(|()| {
                    if nodes.is_empty() {
                        Ok(())
                    } else {
                        kirq::pki::write_dev_node_pki(&out, &nodes)
                    }
                })
                .map(|()| println!("wrote development PKI to {}", out.display()))
                .map_err(Into::into)
        }
        Cmd::CheckConfig { config } => kirq::config::HubConfig::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| {
                kirq::crypto::sig::HubSigningKey::load(&c.signing_key)?;
                // The node CA and every node's public key, when nodes are configured.
                kirq::sources::decentralized::Decentralized::from_hub_config(&c)?;
                println!(
                    "{}: ok (hub {}, {} sources)",
                    config.display(),
                    c.id,
                    c.sources.len()
                );
                Ok(())
            }),
    };
    kirq::util::exit_with(result)
}

fn keygen(out: &std::path::Path, name: &str, alg: kirq::crypto::sig::SigAlg) -> anyhow::Result<()> {
    use kirq::crypto::sig::PacketSigner;
    if !kirq::wire::is_valid_id(name) {
        anyhow::bail!("--name must be 1-64 characters from [A-Za-z0-9._-]");
    }
    let key = kirq::crypto::sig::HubSigningKey::generate(alg);
    let (k, p) = key.write_pair(out, name)?;
    println!(
        "secret key: {} (mode 0600; keep it on the hub)",
        k.display()
    );
    println!(
        "public key: {} ({alg}, key id {}; list it in each daemon's trust.hub_keys)",
        p.display(),
        key.key_id()
    );
    Ok(())
}
