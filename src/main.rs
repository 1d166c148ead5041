//! `quiver`: the one binary. `standalone` runs every role in one process (with its own
//! nats-server); `run` runs chosen roles as one node of a multi-process cluster; `ctl`,
//! `load` and `search` are the command-line client; `cluster` runs a local multi-process
//! cluster under a supervisor; `host` is the host agent that starts and stops nodes for the
//! coordinator's scaler; `plugin` tries policy plugins locally. The benchmarks are a
//! tool of their own, `quiver-bench` (tools/bench).

mod cluster;
mod compact_cli;
mod ctl;
mod host;
mod plugin_cli;
mod process;
mod scale_cli;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "quiver", version, about = "Quiver: a distributed vector database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process, with an embedded nats-server unless nats.url is set.
    Standalone {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run one or more roles as a node of a multi-process cluster (needs nats.url).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// coordinator, proxy, datanode, indexnode or querynode (repeatable).
        #[arg(long = "role", short, required = true)]
        roles: Vec<String>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect and administer a running cluster.
    Ctl(ctl::CtlArgs),
    /// A local multi-process cluster from a cluster file: up, status, down.
    Cluster(cluster::ClusterArgs),
    /// The host agent: starts and stops node processes on this machine for the coordinator's
    /// scaler (docs/hosts.md).
    Host(host::HostArgs),
    /// Load vectors from an .fvecs file into a collection (created if missing).
    Load(ctl::LoadArgs),
    /// Search a collection with query vectors from an .fvecs file.
    Search(ctl::SearchArgs),
    /// Work on policy plugins locally: run one against recorded inputs, print sample inputs.
    Plugin(plugin_cli::PluginArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration.
    Default,
    /// Validate a configuration file (with environment overrides applied).
    Check { file: PathBuf },
    /// For a NATS server you run yourself: generate the cluster's credentials (node.nk,
    /// admin.credentials, app.credentials; once, under security.credentials_dir) and print the
    /// nats-server configuration that enforces the principals' permissions (plus its tls block
    /// from tls.nats_server_*). Save it and start `nats-server -c FILE -js ...`.
    NatsAuth {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    // Nodes log what they do; client commands only what goes wrong (RUST_LOG overrides both).
    let default_filter = match &cli.command {
        Command::Standalone { .. } | Command::Run { .. } | Command::Host(_) => "info",
        Command::Cluster(args) if args.is_supervisor() => "info",
        _ => "warn",
    };
    // Nodes install their subscriber once their configuration is read (it may export spans).
    if !matches!(cli.command, Command::Standalone { .. } | Command::Run { .. }) {
        quiver_runtime::trace::init(default_filter, None);
    }
    let result = match cli.command {
        Command::Standalone { config } => server::standalone(config.as_deref(), default_filter),
        Command::Run { config, roles } => server::run(config.as_deref(), &roles, default_filter),
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", quiver_runtime::Config::default_toml());
            Ok(0)
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            quiver_runtime::Config::load(Some(&file), std::env::vars())
                .map(|_| {
                    println!("{}: ok", file.display());
                    0
                })
                .map_err(Into::into)
        }
        Command::Config { command: ConfigCommand::NatsAuth { config } } => server::nats_auth(config.as_deref()),
        Command::Ctl(args) => ctl::ctl(args),
        Command::Cluster(args) => cluster::cluster(args),
        Command::Host(args) => host::host(args),
        Command::Load(args) => ctl::load(args),
        Command::Search(args) => ctl::search(args),
        Command::Plugin(args) => plugin_cli::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
