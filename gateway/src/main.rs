//! The `dsgw` command line: run the gateway, mint virtual keys, check a config file, show prices, and the
//! engine's and the policies' tools ([`cli`]).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A DeepSeek- and OpenAI-compatible API gateway: one endpoint for a team, with virtual keys,
/// exact token accounting and routing to DeepSeek, OpenRouter, vLLM / SGLang servers.
#[derive(Parser)]
#[command(name = "dsgw", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Without --config it listens on 127.0.0.1:8080 and serves deepseek-chat, deepseek-reasoner
    /// and deepseek-v3.2-speciale, routed to DeepSeek's API when DEEPSEEK_API_KEY is set.
    Serve {
        /// TOML configuration file (see README.md for every option).
        #[arg(long, short, env = "DSGW_CONFIG")]
        config: Option<PathBuf>,
        /// Override `server.listen`, for example 127.0.0.1:9000.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage virtual keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage keys, teams, budgets and limits through a gateway's admin API; read spend.
    Admin(cli::admin::AdminArgs),
    /// The in-process DeepSeek-V3.2 engine: create, inspect, run and measure models.
    Engine {
        #[command(subcommand)]
        command: cli::engine::EngineCommand,
    },
    /// Data-residency policies: check them, explain a decision, time their evaluation.
    Policy {
        #[command(subcommand)]
        command: cli::policy::PolicyCommand,
    },
    /// Print each deployment's price: the era and tier in force, the rates, the next change.
    Prices {
        /// TOML configuration file; without it, the embedded default.
        #[arg(long, short, env = "DSGW_CONFIG")]
        config: Option<PathBuf>,
        /// The instant to price at (RFC 3339, or a date for its UTC midnight); default now.
        #[arg(long)]
        at: Option<String>,
        /// Instead, time pricing: this many charges per deployment's price, spread over a week.
        #[arg(long, value_name = "CHARGES")]
        bench: Option<u32>,
    },
    /// Validate a configuration file and exit.
    Check {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also connect to what the configuration names that can be reached now (Redis, with
        /// its TLS settings; the store) and fail if it does not answer.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh 256-bit key once, with the config lines that admit it (only its SHA-256 is stored).
    New {
        /// Identifier used in logs and metrics, for example "alice".
        #[arg(long)]
        id: String,
        /// Team the key belongs to, for example "research".
        #[arg(long)]
        team: String,
        /// May use the admin API.
        #[arg(long)]
        admin: bool,
        /// Write it into this store (`sqlite:///...` or `postgres://...`) instead of printing
        /// config lines: how a new store gets its first admin key.
        #[arg(long, env = "DSGW_STORE_URL")]
        store: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => cli::serve::serve(config, listen),
        Command::Keys {
            command:
                KeysCommand::New {
                    id,
                    team,
                    admin,
                    store,
                },
        } => match store {
            Some(url) => cli::keys::new_stored_key(&id, &team, admin, &url),
            None => cli::keys::new_key(&id, &team, admin),
        },
        Command::Admin(args) => cli::admin::run(args),
        Command::Engine { command } => cli::engine::run(command),
        Command::Policy { command } => cli::policy::run(command),
        Command::Prices { config, at, bench } => match bench {
            Some(n) => cli::prices::bench(config.as_deref(), n),
            None => cli::prices::prices(config.as_deref(), at.as_deref()),
        },
        Command::Check { config, connect } => cli::check::check(&config, connect),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}
