//! `dsgw check`: refuses exactly what `dsgw serve` would refuse of a configuration, without
//! starting anything.

use std::path::Path;

use dsgw::app::AppState;
use dsgw::support::config::Config;

pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    AppState::check(&config)?;
    println!("{}: ok", path.display());
    Ok(())
}
