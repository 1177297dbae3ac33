//! Who is asking, as the pipeline carries it through every phase of one request.

use std::sync::Arc;

use http::HeaderValue;

use crate::support::principal::Principal;

/// The caller of one request: set by the edge (authentication, request id) before any phase.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The request's id: the client's `x-request-id` when it sent a usable one, else fresh.
    pub request_id: Arc<str>,
    /// The client's `x-data-classification` header, for the policies.
    pub classification: Option<HeaderValue>,
}
