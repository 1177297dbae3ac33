//! A provider spoken to over HTTP in one of the OpenAI chat dialects.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, header};

use super::dialect;
use super::{ProviderError, Secret};
use crate::config::{ProviderConfig, ProviderKind};
use crate::error::ApiError;
use crate::policy::Obligations;
use crate::raw_object::Edit;
use crate::request::{ChatRequest, Surface};

/// An upstream that speaks the OpenAI chat-completions API in one of its dialects.
#[derive(Debug)]
pub struct HttpProvider {
    pub name: String,
    pub kind: ProviderKind,
    /// Parsed once: parsing (and IDNA-normalising) a URL string per request shows in profiles.
    chat_url: reqwest::Url,
    /// Chat prefix completion and strict tools: DeepSeek serves them under `/beta`.
    beta_chat_url: reqwest::Url,
    /// Fill in the middle: DeepSeek's `/beta/completions`, a vLLM / SGLang `/completions`.
    fim_url: reqwest::Url,
    auth: Option<HeaderValue>,
    client: reqwest::Client,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    request_timeout: Duration,
    /// OpenRouter's `provider` object, pre-rendered as JSON.
    routing: Option<String>,
}

/// Selects rustls' ring backend once per process: it builds with a C compiler alone (aws-lc-rs,
/// reqwest's default, wants cmake, which a fresh machine may lack).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpProvider {
    pub fn from_config(index: usize, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let invalid = |message: String| ProviderError::Invalid {
            index,
            name: config.name.clone(),
            message,
        };
        let key = match &config.api_key_env {
            Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
                ProviderError::MissingKey {
                    index,
                    name: config.name.clone(),
                    var: var.clone(),
                }
            })?)),
            None => None,
        };
        let auth = key
            .map(|k| {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                        invalid("the API key contains characters not allowed in a header".into())
                    })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let base = config
            .base_url
            .as_deref()
            .ok_or_else(|| invalid("`base_url` is required".into()))?;
        install_tls();
        let base = base.trim_end_matches('/');
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| invalid(format!("`base_url` is not a valid URL: {e}")))
        };
        let chat_url = url("/chat/completions")?;
        let (beta_chat_url, fim_url) = if config.kind == ProviderKind::Deepseek {
            (url("/beta/chat/completions")?, url("/beta/completions")?)
        } else {
            (chat_url.clone(), url("/completions")?)
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("dsgw/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("cannot build HTTP client: {e}")))?;
        let routing = config
            .routing
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("a TOML table converts to JSON"));
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            chat_url,
            beta_chat_url,
            fim_url,
            auth,
            client,
            first_byte_timeout: Duration::from_millis(config.first_byte_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            routing,
        })
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
    }

    /// Deadline of a whole non-streaming call.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The body this provider should receive for `request`; `overrides` (a redacted prompt, a
    /// policy's provider preferences) replace the fields they name.
    pub fn render(
        &self,
        request: &ChatRequest,
        upstream_model: &str,
        thinking: bool,
        mut overrides: Vec<Edit>,
    ) -> Vec<u8> {
        let mut edits = match request.surface {
            // A completions endpoint has no chat mode switches: only the model and stream usage.
            Surface::Fim => dialect::request_edits(
                ProviderKind::Deepseek,
                &request.raw,
                upstream_model,
                false,
                request.stream,
                None,
            )
            .into_iter()
            .filter(|e| matches!(e.key(), "model" | "stream_options"))
            .collect(),
            Surface::Chat | Surface::BetaChat => dialect::request_edits(
                self.kind,
                &request.raw,
                upstream_model,
                thinking,
                request.stream,
                self.routing.as_deref(),
            ),
        };
        if request.prefix && self.kind == ProviderKind::Openai {
            // vLLM and SGLang continue the last assistant message this way.
            edits.push(Edit::Set("continue_final_message", "true".into()));
            edits.push(Edit::Set("add_generation_prompt", "false".into()));
        }
        let overridden = |e: &Edit| overrides.iter().any(|o| o.key() == e.key());
        let kept: Vec<Edit> = edits.into_iter().filter(|e| !overridden(e)).collect();
        overrides.extend(kept);
        request.raw.render(&overrides)
    }

    /// OpenRouter's `provider` object with a policy's obligations merged into the configured
    /// one, or `None` when there is nothing to say (or the provider is not OpenRouter).
    pub fn provider_object(&self, obligations: &Obligations) -> Option<String> {
        let asks = obligations.provider_zdr
            || obligations.provider_data_collection.is_some()
            || !obligations.provider_only.is_empty();
        if self.kind != ProviderKind::Openrouter || !asks {
            return None;
        }
        let mut object: serde_json::Map<String, serde_json::Value> = self
            .routing
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        if !obligations.provider_only.is_empty() {
            object.insert("only".into(), serde_json::json!(obligations.provider_only));
            object.insert("allow_fallbacks".into(), false.into());
        }
        if let Some(d) = &obligations.provider_data_collection {
            object.insert("data_collection".into(), d.as_str().into());
        }
        if obligations.provider_zdr {
            object.insert("zdr".into(), true.into());
        }
        Some(serde_json::Value::Object(object).to_string())
    }

    /// Sends a request and waits for a success status. Every failure is mapped to the status the
    /// client should see and marked retryable when another deployment may succeed.
    pub async fn send(
        &self,
        body: Vec<u8>,
        stream: bool,
        surface: Surface,
    ) -> Result<reqwest::Response, ApiError> {
        let url = match surface {
            Surface::Chat => &self.chat_url,
            Surface::BetaChat => &self.beta_chat_url,
            Surface::Fim => &self.fim_url,
        };
        let mut request = self
            .client
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let response = match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Err(_) => {
                return Err(ApiError::upstream_timeout(
                    &self.name,
                    "no response headers",
                ));
            }
            Ok(Err(e)) => return Err(self.transport_error(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // A provider's Retry-After (seconds) reaches the client with its 429.
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = self.read_body(response).await.unwrap_or_default();
        let mut error = ApiError::from_upstream(&self.name, status, &body);
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            error.retry_after = retry_after;
        }
        Err(error)
    }

    /// Reads a whole body, allowing at most the idle timeout between chunks.
    pub async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, ApiError> {
        let mut body = BytesMut::new();
        loop {
            match tokio::time::timeout(self.idle_timeout, response.chunk()).await {
                Err(_) => return Err(ApiError::upstream_timeout(&self.name, "body idle")),
                Ok(Err(e)) => return Err(self.transport_error(&e)),
                Ok(Ok(None)) => return Ok(body.freeze()),
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            }
        }
    }

    /// Maps a transport error without its URL or headers (logged here, once, in full).
    pub fn transport_error(&self, error: &reqwest::Error) -> ApiError {
        tracing::warn!(provider = %self.name, error = %error, "upstream transport error");
        let what = if error.is_connect() {
            "connection failed"
        } else if error.is_timeout() {
            return ApiError::upstream_timeout(&self.name, "transport");
        } else if error.is_body() || error.is_decode() {
            "response body interrupted"
        } else {
            "request failed"
        };
        ApiError::bad_gateway(&self.name, what)
    }
}
