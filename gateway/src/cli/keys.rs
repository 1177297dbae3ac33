//! `dsgw keys new`: a fresh virtual key, shown once, with the config lines that admit it; or,
//! with `--store`, written straight into the store (the first admin key of a new store).

use anyhow::Context;
use dsgw::pipeline::admission::keys::generate_key;
use dsgw::support::hashing::{hex, sha256};

pub fn new_key(id: &str, team: &str, admin: bool) -> anyhow::Result<()> {
    let key = generate_key().context("reading the operating system's random generator")?;
    println!("key: {key}");
    println!("(shown once; only its hash goes in the config)\n");
    println!(
        "[[keys]]\nid = {id:?}\nteam = {team:?}\nkey_sha256 = \"{}\"{}",
        hex(&sha256(key.as_bytes())),
        if admin { "\nadmin = true" } else { "" }
    );
    Ok(())
}

/// Writes a fresh key into the store at `url` (no gateway needed: the bootstrap of a store's
/// first admin key), printing its secret once.
pub fn new_stored_key(id: &str, team: &str, admin: bool, url: &str) -> anyhow::Result<()> {
    use dsgw::store::directory::{Actor, KeyRow};
    use dsgw::support::config::{Classification, StoreConfig};
    let key = generate_key().context("reading the operating system's random generator")?;
    let now = dsgw::store::now_ms();
    let row = KeyRow {
        id: id.to_owned(),
        digest: hex(&sha256(key.as_bytes())),
        team: team.to_owned(),
        owner: None,
        labels: Default::default(),
        admin,
        clearance: Classification::Restricted,
        default_classification: Classification::Internal,
        opt_ins: Vec::new(),
        created_ms: now,
        updated_ms: now,
        expires_ms: None,
        revoked_ms: None,
        previous_digest: None,
        previous_until_ms: None,
    };
    let config = StoreConfig {
        url: url.to_owned(),
        ..StoreConfig::sqlite_in(std::path::Path::new("."))
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let store = dsgw::store::Store::open(&config).await?;
            store
                .create_key(&row, &Actor("cli".to_owned()))
                .await
                .map_err(anyhow::Error::from)?;
            store.close().await;
            anyhow::Ok(())
        })?;
    println!("key: {key}");
    println!(
        "(shown once; stored as {id:?} in team {team:?}{})",
        if admin { ", admin" } else { "" }
    );
    Ok(())
}
