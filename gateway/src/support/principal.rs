//! The caller, once authenticated.

use std::sync::Arc;

/// Who is calling: what limits, budgets and policies are keyed on. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: Arc<str>,
    pub team: Arc<str>,
    /// May read every key's spend.
    pub admin: bool,
}
