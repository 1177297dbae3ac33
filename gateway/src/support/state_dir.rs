//! Where dsgw keeps what outlives a process when the configuration names no path.

use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/dsgw`, else `~/.local/state/dsgw`.
pub fn state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .map(|base| base.join("dsgw"))
}
