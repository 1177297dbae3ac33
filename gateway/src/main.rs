//! The `dsgw` command line: run the gateway, mint virtual keys, check a config file.

mod engine_cmd;
mod policy_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dsgw::auth::{generate_key, hex, sha256};
use dsgw::config::Config;
use dsgw::server;
use dsgw::state::AppState;

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
    /// The in-process DeepSeek-V3.2 engine: create, inspect, run and measure models.
    Engine {
        #[command(subcommand)]
        command: engine_cmd::EngineCommand,
    },
    /// Data-residency policies: check them, explain a decision, time their evaluation.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Validate a configuration file and exit.
    Check {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Keys {
            command: KeysCommand::New { id, team },
        } => new_key(&id, &team),
        Command::Engine { command } => engine_cmd::run(command),
        Command::Policy { command } => policy_cmd::run(command),
        Command::Check { config } => Config::load(&config)
            .map(|_| println!("{}: ok", config.display()))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_key(id: &str, team: &str) -> anyhow::Result<()> {
    let key = generate_key().context("reading the operating system's random generator")?;
    println!("key: {key}");
    println!("(shown once; only its hash goes in the config)\n");
    println!(
        "[[keys]]\nid = {id:?}\nteam = {team:?}\nkey_sha256 = \"{}\"",
        hex(&sha256(key.as_bytes()))
    );
    Ok(())
}

fn serve(path: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    init_tracing();
    dsgw::upstream::install_tls();
    // Each open stream holds two sockets; a default soft limit of 1024 would cap a replica at
    // ~500 streams.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }

    let mut config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(std::env::var_os("DEEPSEEK_API_KEY").is_some()),
    };
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    let state = AppState::build(&config)?;
    let drain = Duration::from_secs(config.server.drain_timeout_secs);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        announce(&config, path.is_none(), &state, addr);
        server::serve(listener, state.clone(), drain).await?;
        // Commit what the last requests queued before the process goes.
        state.ledger.close();
        state.audit.close();
        tracing::info!("stopped");
        Ok(())
    })
}

fn announce(config: &Config, embedded: bool, state: &AppState, addr: std::net::SocketAddr) {
    // Tests and scripts read this line to learn the port.
    eprintln!("dsgw: listening on http://{addr}");
    let models: Vec<&str> = state.catalog.names().collect();
    tracing::info!(%addr, models = %models.join(","), "dsgw listening");
    if embedded && config.providers.is_empty() {
        tracing::warn!(
            "no config file and DEEPSEEK_API_KEY is not set: models are listed but requests answer 503 until a provider is configured"
        );
    }
    if state.keys.is_open() {
        eprintln!(
            "dsgw: no [[keys]] configured; accepting any API key on loopback {addr} only.\n      \
             try: curl http://{addr}/v1/models -H 'Authorization: Bearer any'\n      \
             add keys with `dsgw keys new --id ID --team TEAM`"
        );
    } else {
        eprintln!("dsgw: send `Authorization: Bearer <virtual key>`");
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DSGW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
