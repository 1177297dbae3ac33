//! `dsgw keys new`: a fresh virtual key, shown once, with the config lines that admit it.

use anyhow::Context;
use dsgw::pipeline::admission::keys::generate_key;
use dsgw::support::hashing::{hex, sha256};

pub fn new_key(id: &str, team: &str) -> anyhow::Result<()> {
    let key = generate_key().context("reading the operating system's random generator")?;
    println!("key: {key}");
    println!("(shown once; only its hash goes in the config)\n");
    println!(
        "[[keys]]\nid = {id:?}\nteam = {team:?}\nkey_sha256 = \"{}\"",
        hex(&sha256(key.as_bytes()))
    );
    Ok(())
}
