//! Who may send a request, and whether it may go now: virtual keys ([`keys`]), data-residency
//! policies ([`policy`]), spend budgets ([`budgets`]) and rate, token and concurrency limits
//! ([`limits`]). The pipeline's admit phase runs them in that order; each refusal says why in
//! its own [`Rejection`]. The [`directory`] puts the file's and the store's entries in force.

pub mod budgets;
pub mod directory;
pub mod keys;
pub mod limits;
pub mod policy;

/// Why admission refused a request: the `reason` label of `dsgw_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No deployment of the model may receive this request's data.
    Policy,
    /// A budget of the key or team is spent.
    Budget,
    RequestsPerMinute,
    TokensPerMinute,
    Concurrency,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Budget => "budget",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::TokensPerMinute => "tokens_per_minute",
            Self::Concurrency => "concurrent",
        }
    }
}
