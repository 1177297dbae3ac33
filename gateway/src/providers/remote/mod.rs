//! A provider spoken to over HTTP in one of the OpenAI chat dialects: the request rendered in
//! its dialect ([`dialect`]), sent with deadlines, and its answer normalised (a whole body here,
//! a stream by [`relay`]).

pub mod dialect;
pub mod relay;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::ProviderError;
use super::call::{Call, Endpoint, Residency, Strict, Target};
use super::reply::Started;
use crate::support::config::{ProviderConfig, ProviderKind};
use crate::support::secret::Secret;
use crate::wire::error::ApiError;
use crate::wire::raw_object::{Edit, RawObject};
use transport::{Failure, Transport};

/// An upstream that speaks the OpenAI chat-completions API in one of its dialects.
#[derive(Debug)]
pub struct HttpProvider {
    pub name: String,
    pub kind: ProviderKind,
    /// Parsed once: parsing (and IDNA-normalising) a URL string per request shows in profiles.
    chat_url: Uri,
    /// Chat prefix completion and strict tools: DeepSeek serves them under `/beta`.
    beta_chat_url: Uri,
    /// Fill in the middle: DeepSeek's `/beta/completions`, a vLLM / SGLang `/completions`.
    fim_url: Uri,
    auth: Option<HeaderValue>,
    /// The key itself, to scrub from anything the provider says back.
    key: Option<Secret>,
    /// Calls in flight at once (`max_connections`), and how long a call waits for a slot.
    slots: Arc<Semaphore>,
    pool_wait: Duration,
    transport: Transport,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    request_timeout: Duration,
    /// OpenRouter's `provider` object, pre-rendered as JSON.
    routing: Option<String>,
}

/// Idle keep-alive connections kept per provider. Without a cap, every connection a burst
/// opened (up to `max_connections`) stayed open for the idle timeout: after an overload run,
/// 1024 idle connections held 260 MB for 90 s. Steady load reuses far fewer.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// Selects rustls' ring backend once per process: it builds with a C compiler alone (aws-lc-rs,
/// rustls' default, wants cmake, which a fresh machine may lack).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpProvider {
    pub fn from_config(index: usize, config: &ProviderConfig) -> Result<Self, ProviderError> {
        let kind = config.kind();
        let invalid = |message: String| ProviderError::Invalid {
            index,
            name: config.name().to_owned(),
            message,
        };
        let config = config
            .remote()
            .ok_or_else(|| invalid("not a remote provider".into()))?;
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
            .as_ref()
            .map(|k| {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                        invalid("the API key contains characters not allowed in a header".into())
                    })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        install_tls();
        let base = config.base_url.trim_end_matches('/');
        let url = |path: &str| {
            format!("{base}{path}")
                .parse::<Uri>()
                .ok()
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
                .ok_or_else(|| invalid("`base_url` is not a valid URL".into()))
        };
        let chat_url = url("/chat/completions")?;
        let (beta_chat_url, fim_url) = if kind == ProviderKind::Deepseek {
            (url("/beta/chat/completions")?, url("/beta/completions")?)
        } else {
            (chat_url.clone(), url("/completions")?)
        };
        let transport = Transport::new(
            &chat_url,
            &transport::Options {
                connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                pool_idle: Duration::from_secs(90),
                max_idle: MAX_IDLE_CONNECTIONS,
            },
        )
        .map_err(|e| invalid(e.to_string()))?;
        let routing = config
            .routing
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("a TOML table converts to JSON"));
        Ok(Self {
            name: config.name.clone(),
            kind,
            chat_url,
            beta_chat_url,
            fim_url,
            auth,
            key,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            pool_wait: Duration::from_millis(config.pool_wait_ms),
            transport,
            first_byte_timeout: Duration::from_millis(config.first_byte_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            routing,
        })
    }

    /// Sends `call`; a stream comes back with nothing read, a whole answer read and normalised.
    pub async fn call(&self, call: &Call<'_>, target: &Target<'_>) -> Result<Started, ApiError> {
        let body = self.render(call, target);
        // Strict functions go through DeepSeek's strict path, its beta endpoint.
        let endpoint = match (call.endpoint, call.strict) {
            (Endpoint::Chat, Strict::Enforced) => Endpoint::BetaChat,
            (endpoint, _) => endpoint,
        };
        // A slot for the whole call: held by the stream until it ends, or until the body is read.
        let slot = tokio::time::timeout(self.pool_wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::saturated(&self.name))?
            .expect("the semaphore is never closed");
        if call.stream {
            let response = self.send(body, true, endpoint).await?;
            return Ok(Started::Stream(relay::events(
                response,
                self.name.clone(),
                self.key.clone(),
                self.idle_timeout,
                slot,
            )));
        }
        let exchange = async {
            let response = self.send(body, false, endpoint).await?;
            self.read_body(response).await
        };
        let body = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ApiError::upstream_timeout(&self.name, "request deadline"))??;
        drop(slot);
        self.json_answer(&body)
            .map(|raw| Started::Whole(dialect::normalize(raw, dialect::Inner::Message)))
    }

    /// A whole completion, parsed; a malformed one is a provider fault.
    fn json_answer(&self, body: &[u8]) -> Result<RawObject, ApiError> {
        // DeepSeek sends blank lines while a request is queued; serde_json skips leading whitespace.
        let raw = RawObject::from_slice(body)
            .map_err(|_| ApiError::bad_gateway(&self.name, "response is not a JSON object"))?;
        if raw.get("choices").is_none() {
            return Err(ApiError::bad_gateway(
                &self.name,
                "response has no `choices`",
            ));
        }
        Ok(raw)
    }

    /// What to scrub from the provider's own words before they are relayed or logged.
    fn secrets(&self) -> Vec<&str> {
        self.key.iter().map(Secret::expose).collect()
    }

    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
    }

    /// The body this provider should receive for `call`; the target's overrides (a redacted
    /// prompt, a policy's provider preferences) replace the fields they name.
    pub fn render(&self, call: &Call<'_>, target: &Target<'_>) -> Vec<u8> {
        let mut edits = match call.endpoint {
            // A completions endpoint has no chat mode switches: only the model and stream usage.
            Endpoint::Fim => {
                dialect::request_edits(ProviderKind::Deepseek, call, target.upstream_model, None)
                    .into_iter()
                    .filter(|e| matches!(e.key(), "model" | "stream_options"))
                    .collect()
            }
            Endpoint::Chat | Endpoint::BetaChat => dialect::request_edits(
                self.kind,
                call,
                target.upstream_model,
                self.routing.as_deref(),
            ),
        };
        if call.prefix && self.kind == ProviderKind::Openai {
            // vLLM and SGLang continue the last assistant message this way.
            edits.push(Edit::Set("continue_final_message", "true".into()));
            edits.push(Edit::Set("add_generation_prompt", "false".into()));
        }
        let mut overrides = target.redaction_edits();
        if let Some(provider) = target.residency.and_then(|r| self.provider_object(r)) {
            overrides.push(Edit::Set("provider", provider.into()));
        }
        if overrides.is_empty() {
            return call.body.render(&edits);
        }
        let overridden = |e: &Edit| overrides.iter().any(|o| o.key() == e.key());
        let kept: Vec<Edit> = edits.into_iter().filter(|e| !overridden(e)).collect();
        overrides.extend(kept);
        call.body.render(&overrides)
    }

    /// OpenRouter's `provider` object with a policy's demands merged into the configured one, or
    /// `None` when there is nothing to say (or the provider is not OpenRouter).
    fn provider_object(&self, residency: &Residency) -> Option<String> {
        if self.kind != ProviderKind::Openrouter || residency.is_empty() {
            return None;
        }
        let mut object: serde_json::Map<String, serde_json::Value> = self
            .routing
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        if !residency.only.is_empty() {
            object.insert("only".into(), serde_json::json!(residency.only));
            object.insert("allow_fallbacks".into(), false.into());
        }
        if let Some(d) = &residency.data_collection {
            object.insert("data_collection".into(), d.as_str().into());
        }
        if residency.zdr {
            object.insert("zdr".into(), true.into());
        }
        Some(serde_json::Value::Object(object).to_string())
    }

    /// Sends a request and waits for a success status. Every failure is mapped to the status the
    /// client should see and marked retryable when another deployment may succeed.
    async fn send(
        &self,
        body: Vec<u8>,
        stream: bool,
        endpoint: Endpoint,
    ) -> Result<Response<Incoming>, ApiError> {
        let url = match endpoint {
            Endpoint::Chat => &self.chat_url,
            Endpoint::BetaChat => &self.beta_chat_url,
            Endpoint::Fim => &self.fim_url,
        };
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, JSON.clone());
        headers.insert(
            header::ACCEPT,
            if stream { &EVENT_STREAM } else { &JSON }.clone(),
        );
        headers.insert(header::USER_AGENT, USER_AGENT.clone());
        if let Some(auth) = &self.auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        if let Some(auth) = &self.transport.proxy_authorization {
            headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
        }
        let sent = self.transport.client().request(request);
        let response = match tokio::time::timeout(self.first_byte_timeout, sent).await {
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
        let mut error =
            ApiError::from_upstream(&self.name, status, &body).scrubbed(&self.secrets());
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            error.retry_after = retry_after;
        }
        Err(error)
    }

    /// Reads a whole body, allowing at most the idle timeout between chunks.
    async fn read_body(&self, response: Response<Incoming>) -> Result<Bytes, ApiError> {
        let mut incoming = response.into_body();
        let mut body = BytesMut::new();
        loop {
            match tokio::time::timeout(self.idle_timeout, incoming.frame()).await {
                Err(_) => return Err(ApiError::upstream_timeout(&self.name, "body idle")),
                Ok(Some(Err(e))) => {
                    tracing::warn!(provider = %self.name, error = %e, "upstream body error");
                    return Err(ApiError::bad_gateway(
                        &self.name,
                        "response body interrupted",
                    ));
                }
                Ok(None) => return Ok(body.freeze()),
                Ok(Some(Ok(frame))) => {
                    if let Some(chunk) = frame.data_ref() {
                        body.extend_from_slice(chunk);
                    }
                }
            }
        }
    }

    /// Maps a transport error without its URL or headers (logged here, once, in full).
    fn transport_error(&self, error: &hyper_util::client::legacy::Error) -> ApiError {
        tracing::warn!(provider = %self.name, error = ?error, "upstream transport error");
        match transport::failure(error) {
            // This process cannot open a socket: its saturation, not the provider's fault.
            Failure::OutOfDescriptors => ApiError::saturated(&self.name),
            Failure::ConnectTimeout => ApiError::upstream_timeout(&self.name, "transport"),
            Failure::Connect => ApiError::bad_gateway(&self.name, "connection failed"),
            Failure::Other => ApiError::bad_gateway(&self.name, "request failed"),
        }
    }
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("dsgw/", env!("CARGO_PKG_VERSION")));
