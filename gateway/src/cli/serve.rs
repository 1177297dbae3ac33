//! `dsgw serve`: the gateway, on the configured (or embedded default) configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use dsgw::app::AppState;
use dsgw::support::config::Config;

pub fn serve(path: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    // Before any other thread allocates.
    dsgw::support::heap::hand_back_large_buffers();
    init_tracing();
    dsgw::providers::install_tls();
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
    let drain = Duration::from_secs(config.server.drain_timeout_secs);
    // Before the providers' pools are built: one per lane.
    dsgw::support::lane::set_count(config.server.workers());
    // This runtime accepts connections and runs the background work (the store, signals, the
    // Redis links); the lanes serve the connections, each on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let lanes = runtime.block_on(async move {
        let (state, store_tasks) = AppState::open(&config).await?;
        let listener = dsgw::app::serve::listen(config.server.listen)
            .with_context(|| format!("binding {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        announce(&config, path.is_none(), &state, addr);
        let lanes = dsgw::app::serve::serve(
            listener,
            state.clone(),
            drain,
            dsgw::app::edge::EdgeLimits::from_config(&config.server),
        )
        .await?;
        // Commit what the last requests queued before the process goes.
        state.pipeline.close();
        if let Some(tasks) = store_tasks {
            tasks.finish().await;
        }
        anyhow::Ok(lanes)
    })?;
    lanes.stop();
    tracing::info!("stopped");
    Ok(())
}

fn announce(config: &Config, embedded: bool, state: &AppState, addr: SocketAddr) {
    // Tests and scripts read this line to learn the port.
    eprintln!("dsgw: listening on http://{addr}");
    let models: Vec<&str> = state.pipeline.catalog.names().collect();
    tracing::info!(%addr, models = %models.join(","), "dsgw listening");
    if embedded && config.providers.is_empty() {
        tracing::warn!(
            "no config file and DEEPSEEK_API_KEY is not set: models are listed but requests answer 503 until a provider is configured"
        );
    }
    if let Some(store) = &state.store {
        tracing::info!(store = %store.shown(), revision = state.directory.revision(), "store open");
    }
    if state.keys.current().is_open() {
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
    // Colours only for a person at a terminal: a file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if ansi {
        builder.init();
    } else {
        // The default field formatter styles every field's name and `=` even with styling
        // off; the completion line has two dozen fields (callgrind: ~12 K of a request's
        // ~296 K instructions). The same text, written plainly.
        use tracing_subscriber::field::MakeExt;
        builder
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                    match field.name() {
                        "message" => write!(writer, "{value:?}"),
                        name => write!(writer, "{name}={value:?}"),
                    }
                })
                .delimited(" "),
            )
            .init();
    }
}
