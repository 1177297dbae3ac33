//! `dsgw check`: refuses exactly what `dsgw serve` would refuse of a configuration, without
//! starting anything; with `--connect`, also connects to Redis (TLS and all) and the store, and
//! asks each to answer.

use std::path::Path;

use anyhow::Context;
use dsgw::app::AppState;
use dsgw::support::config::Config;
use dsgw::support::redis_link::RedisLink;

pub fn check(path: &Path, connect: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    AppState::check(&config)?;
    if connect && let Some(redis) = &config.redis {
        dsgw::providers::install_tls();
        let link = RedisLink::new(redis)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(link.ping())
            .context("[redis]: the connection test failed")?;
        println!("{}: redis answered", path.display());
    }
    if connect && let Some(store) = &config.store {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(dsgw::store::ping(store))
            .context("[store]: the connection test failed")?;
        println!("{}: the store answered", path.display());
    }
    println!("{}: ok", path.display());
    Ok(())
}
