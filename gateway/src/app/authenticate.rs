//! Authentication at the edge: the virtual key (`Authorization: Bearer`, or Anthropic's
//! `x-api-key`) becomes the request's principal, or the request ends here with a 401 in the
//! surface's own error shape.

use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, header};

use super::AppState;
use super::gate::{Check, Verdict};
use crate::pipeline::admission::keys::bearer_token;
use crate::surface::anthropic::response::error_response;
use crate::wire::error::ApiError;

/// The key check of a group of routes, answering a refusal in that group's error shape.
#[derive(Clone, Debug)]
pub struct Authenticate {
    state: AppState,
    surface: Surface,
}

#[derive(Clone, Copy, Debug)]
enum Surface {
    DeepSeek,
    Anthropic,
}

impl Authenticate {
    /// For the DeepSeek / OpenAI routes: DeepSeek's error envelope.
    pub fn deepseek(state: AppState) -> Self {
        Self {
            state,
            surface: Surface::DeepSeek,
        }
    }

    /// For the Anthropic routes: Anthropic's error shape.
    pub fn anthropic(state: AppState) -> Self {
        Self {
            state,
            surface: Surface::Anthropic,
        }
    }
}

impl Check for Authenticate {
    type Pass = ();

    fn check(&self, request: &mut Request<Body>) -> Verdict<()> {
        let headers = request.headers();
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        let Some(principal) = self
            .state
            .keys
            .current()
            .authenticate(presented, crate::store::now_ms())
        else {
            let e = ApiError::unauthorized();
            return Verdict::Answer(match self.surface {
                Surface::DeepSeek => e.into_response(),
                Surface::Anthropic => error_response(e),
            });
        };
        request.extensions_mut().insert(principal);
        Verdict::Pass(())
    }
}
