//! A faithful fake of DeepSeek's chat API (and the OpenAI-compatible and OpenRouter dialects), for
//! tests and benchmarks. It follows `shared/reference/deepseek-api.md`: blank lines before a
//! non-streaming body, `: keep-alive` comments in streams, `reasoning_content`, the V3.2 check that
//! assistant messages in a tool loop carry `reasoning_content`, usage with both cache forms, and a
//! context cache that hits on repeated prefixes in 64-token units.
//!
//! Behaviour switches, put anywhere in the last message's content:
//! `__status_NNN__` answers NNN with an error envelope; `__cut__` breaks the stream (or body) after
//! a few chunks; `__slow__` streams a chunk every 20 ms for 10 s (for disconnect tests);
//! `__drip__` streams a chunk every 20 ms for about 1 s; `__hold__` sends the first chunk, then
//! only a keep-alive comment every second for 20 s (open idle streams, for memory benchmarks);
//! `__hang__` never answers; `__long__` streams 200 content tokens; `__echo__` answers with the
//! words of the last message; `__overbill__` makes OpenRouter report twice its rates' cost; `__leak__` with
//! `__status_NNN__` echoes the request's `Authorization` header and key in the error message.
//!
//! With tools, the fake calls the one the last line of the user's message names (or the first,
//! when `tool_choice` requires one), with arguments made from its schema ([`tools`]); after a tool
//! message it answers with what the tool said. In JSON mode it answers a JSON object.
//!
//! A path of the form `/fault/{kind}/chat/completions` (DeepSeek dialect) fails every request
//! in one way, whatever its content: see [`crate::faults`].
//!
//! Dialect by path: `/chat/completions` and `/v1/chat/completions` are DeepSeek;
//! `/openai/v1/chat/completions` is a vLLM-like server (mode from `chat_template_kwargs.thinking`,
//! only `prompt_tokens_details.cached_tokens`); `/openrouter/api/v1/chat/completions` is OpenRouter
//! (mode from `reasoning.enabled`, reasoning in `reasoning`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::faults::{Fault, broken_response};

mod fim;
mod tools;
use fim::fim;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Deepseek,
    Openai,
    Openrouter,
}

/// What the fake has seen; tests read it through [`FakeUpstream`] or `GET /_fake/state`.
#[derive(Debug, Default)]
pub struct FakeState {
    pub expected_key: Option<String>,
    pub requests: AtomicU64,
    /// Streams whose client went away before the end.
    pub disconnects: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests that came over HTTP/2 (`axum::serve` speaks both; over TLS, by ALPN).
    pub http2_requests: AtomicU64,
    pub last_body: Mutex<Option<Bytes>>,
    /// Every request body, most recent last (bounded), for "this upstream never saw X" checks.
    pub bodies: Mutex<std::collections::VecDeque<Bytes>>,
    pub last_auth: Mutex<Option<String>>,
    /// Whether the last chat request came on DeepSeek's `/beta` path.
    pub last_beta: std::sync::atomic::AtomicBool,
    /// Token sequences of earlier prompts, for the context cache.
    seen_prompts: Mutex<Vec<Vec<String>>>,
}

#[derive(Debug, Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl FakeUpstream {
    /// Starts the fake on a free loopback port in the current runtime.
    pub async fn start(expected_key: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, expected_key)
    }

    pub fn serve(listener: tokio::net::TcpListener, expected_key: Option<&str>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState {
            expected_key: expected_key.map(str::to_owned),
            ..FakeState::default()
        });
        let app = router(state.clone());
        // DeepSeek's servers flush every SSE frame at once; so must the fake, or its own Nagle
        // delays would hide (or add) 40 ms stalls that are not the gateway's.
        let counted = state.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
            let _ = tcp.set_nodelay(true);
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last_body(&self) -> Value {
        let body = self
            .state
            .last_body
            .lock()
            .unwrap()
            .clone()
            .expect("a request was made");
        serde_json::from_slice(&body).unwrap()
    }

    pub fn last_body_bytes(&self) -> Bytes {
        self.state
            .last_body
            .lock()
            .unwrap()
            .clone()
            .expect("a request was made")
    }

    /// Whether any request this fake received contained `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| String::from_utf8_lossy(b).contains(needle))
    }

    /// The request bodies this fake received that contain `needle`.
    pub fn bodies_with(&self, needle: &str) -> Vec<String> {
        self.state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .filter(|b| b.contains(needle))
            .collect()
    }

    pub fn disconnects(&self) -> u64 {
        self.state.disconnects.load(Ordering::SeqCst)
    }

    /// Whether the last chat request came on DeepSeek's `/beta` path.
    pub fn last_beta(&self) -> bool {
        self.state.last_beta.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn http2_requests(&self) -> u64 {
        self.state.http2_requests.load(Ordering::SeqCst)
    }
}

pub fn router(state: Arc<FakeState>) -> Router {
    let versions = state.clone();
    Router::new()
        .route("/chat/completions", post(deepseek))
        .route("/v1/chat/completions", post(deepseek))
        .route("/openai/v1/chat/completions", post(openai))
        .route("/openrouter/api/v1/chat/completions", post(openrouter))
        .route("/fault/{kind}/chat/completions", post(faulty))
        .route("/beta/chat/completions", post(deepseek_beta))
        .route("/beta/completions", post(fim))
        .route("/openai/v1/completions", post(fim))
        .route("/_fake/state", get(inspect))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.version() == http::Version::HTTP_2 {
                    versions.http2_requests.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ))
}

async fn deepseek(s: State<Arc<FakeState>>, h: HeaderMap, b: Bytes) -> Response {
    handle(s.0, Dialect::Deepseek, None, h, b).await
}
async fn deepseek_beta(s: State<Arc<FakeState>>, h: HeaderMap, b: Bytes) -> Response {
    handle_as(s.0, Dialect::Deepseek, None, h, b, true).await
}
async fn openai(s: State<Arc<FakeState>>, h: HeaderMap, b: Bytes) -> Response {
    handle(s.0, Dialect::Openai, None, h, b).await
}
async fn openrouter(s: State<Arc<FakeState>>, h: HeaderMap, b: Bytes) -> Response {
    handle(s.0, Dialect::Openrouter, None, h, b).await
}
async fn faulty(
    s: State<Arc<FakeState>>,
    Path(kind): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> Response {
    let Some(fault) = Fault::parse(&kind) else {
        return error(StatusCode::NOT_FOUND, &format!("no fault named {kind}"));
    };
    handle(s.0, Dialect::Deepseek, Some(fault), h, b).await
}

async fn inspect(State(state): State<Arc<FakeState>>) -> Response {
    let last = state.last_body.lock().unwrap().clone();
    let body = json!({
        "requests": state.requests.load(Ordering::SeqCst),
        "disconnects": state.disconnects.load(Ordering::SeqCst),
        "last_body": last.map(|b| String::from_utf8_lossy(&b).into_owned()),
        "last_auth_matches": state.last_auth.lock().unwrap().as_deref() == state.expected_key.as_deref(),
        "last_beta": state.last_beta.load(Ordering::SeqCst),
    });
    json_response(StatusCode::OK, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn error(status: StatusCode, message: &str) -> Response {
    let kind = if status == StatusCode::UNAUTHORIZED {
        "authentication_error"
    } else {
        "invalid_request_error"
    };
    let mut response = json_response(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": "invalid_request_error"}})
            .to_string(),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        // DeepSeek-like providers say when to come back.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("7"),
        );
    }
    response
}

/// The answer the fake will give, before it is shaped for the wire.
struct Plan {
    id: String,
    model: String,
    reasoning: Vec<String>,
    content: Vec<String>,
    tool_call: Option<(String, String)>,
    prompt_tokens: u64,
    cache_hit: u64,
    chunk_delay: Duration,
    cut: bool,
    /// A finish reason to report instead of the natural one.
    finish: Option<&'static str>,
    /// OpenRouter's `usage.cost`, when the request asked for it (`usage.include`).
    cost: Option<CostReport>,
}

/// The rates the fake OpenRouter bills, per token in picodollars: DeepSeek V3.2's list rates
/// (0.028 / 0.28 / 0.42 USD per 1M tokens), so a gateway priced at `deepseek-v3.2` agrees.
pub const OPENROUTER_RATES: [u64; 3] = [28_000, 280_000, 420_000];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CostReport {
    AtRates,
    /// `__overbill__`: twice the rates, a provider billing otherwise than the gateway's table.
    Double,
}

fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn counter() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn handle(
    state: Arc<FakeState>,
    dialect: Dialect,
    fault: Option<Fault>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle_as(state, dialect, fault, headers, body, false).await
}

/// Records a request and checks its key; `Some` is the refusal to answer instead.
fn receive(state: &FakeState, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_body.lock().unwrap() = Some(body.clone());
    {
        let mut bodies = state.bodies.lock().unwrap();
        if bodies.len() == 1000 {
            bodies.pop_front();
        }
        bodies.push_back(body.clone());
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    *state.last_auth.lock().unwrap() = auth.clone();
    match &state.expected_key {
        Some(expected) if auth.as_deref() != Some(expected.as_str()) => Some(error(
            StatusCode::UNAUTHORIZED,
            "Authentication Fails, Your api key is invalid",
        )),
        _ => None,
    }
}

async fn handle_as(
    state: Arc<FakeState>,
    dialect: Dialect,
    fault: Option<Fault>,
    headers: HeaderMap,
    body: Bytes,
    beta: bool,
) -> Response {
    // A flaky fault that does not strike this time is no fault at all.
    let fault = fault.filter(|f| f.strikes());
    if let Some(r) = receive(&state, &headers, &body) {
        return r;
    }
    match fault {
        Some(Fault::Status(429)) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate Limit Reached");
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            return r;
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(
                status,
                &format!("fake upstream fails with {code} on this path"),
            );
        }
        Some(Fault::Flaky(_)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error (flaky)",
            );
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse the request body as JSON: {e}"),
            );
        }
    };
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "messages: missing field `messages`",
        );
    };
    let model = request["model"]
        .as_str()
        .unwrap_or("deepseek-chat")
        .to_owned();
    let thinking = match dialect {
        Dialect::Deepseek => match request["thinking"]["type"].as_str() {
            Some("enabled") => true,
            Some(_) => false,
            None => model.contains("reasoner"),
        },
        Dialect::Openai => request["chat_template_kwargs"]["thinking"]
            .as_bool()
            .unwrap_or(false),
        Dialect::Openrouter => request["reasoning"]["enabled"].as_bool().unwrap_or(false),
    };
    // The turn being answered: a system message after it (Claude Code sends one after the
    // user's text) instructs, it does not ask.
    let last = messages
        .iter()
        .rfind(|m| m["role"] != "system")
        .unwrap_or_else(|| messages.last().unwrap());
    let last_text = text_of(last);
    // DeepSeek serves chat prefix completion and strict tools only under /beta.
    let prefix = last["prefix"].as_bool() == Some(true);
    state
        .last_beta
        .store(beta, std::sync::atomic::Ordering::SeqCst);
    // The plain endpoint accepts `strict` on functions and ignores it; prefix completion is
    // beta only.
    if prefix && !beta && dialect == Dialect::Deepseek {
        return error(
            StatusCode::BAD_REQUEST,
            "prefix completion needs the beta endpoint (base_url https://api.deepseek.com/beta)",
        );
    }
    if dialect == Dialect::Deepseek
        && let Some(effort) = request.get("reasoning_effort")
    {
        if !thinking {
            // DeepSeek's own bug, reproduced: an effort beside thinking disabled is refused.
            return error(
                StatusCode::BAD_REQUEST,
                "reasoning_effort is not allowed when thinking is disabled",
            );
        }
        if !matches!(effort.as_str(), Some("low" | "high" | "max")) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reasoning_effort must be one of low, high, max",
            );
        }
    }

    if let Some(code) = last_text
        .split("__status_")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if last_text.contains("__leak__") {
            // A careless upstream that echoes the credentials it was sent.
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let key = auth.strip_prefix("Bearer ").unwrap_or("");
            return error(
                status,
                &format!("invalid request: header Authorization: {auth} (key {key}) rejected"),
            );
        }
        return error(status, &format!("fake upstream answered {code} as asked"));
    }
    if last_text.contains("__hang__") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }

    // DeepSeek V3.2: in a tool loop, every assistant message after the last user message must
    // carry `reasoning_content` in thinking mode.
    if dialect == Dialect::Deepseek && thinking {
        let last_user = messages
            .iter()
            .rposition(|m| m["role"] == "user")
            .unwrap_or(0);
        for (i, m) in messages.iter().enumerate().skip(last_user + 1) {
            if m["role"] == "assistant" && m.get("reasoning_content").is_none() {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Missing `reasoning_content` field in the assistant message at message index {i}. For more information, please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                    ),
                );
            }
        }
    }

    // Prompt tokens: the words of every message, so a repeated prefix is a repeated token prefix.
    let prompt: Vec<String> = messages
        .iter()
        .flat_map(|m| {
            let mut w = words(m["role"].as_str().unwrap_or(""));
            w.extend(words(&text_of(m)));
            w
        })
        .collect();
    let cache_hit = {
        let mut seen = state.seen_prompts.lock().unwrap();
        let best = seen
            .iter()
            .map(|p| p.iter().zip(&prompt).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        // Bounded, so long benchmark runs stay cheap; tests make far fewer requests.
        if seen.len() == 256 {
            seen.remove(0);
        }
        seen.push(prompt.clone());
        (best / 64 * 64) as u64
    };

    let tool_call = match last["role"].as_str() {
        Some("user") => tools::call(&request, &last_text),
        _ => None,
    };
    let json_mode = request["response_format"]["type"] == "json_object";
    let content = if prefix {
        // The continuation of the assistant's prefix, without the prefix itself.
        words("and so it continues.")
    } else if tool_call.is_some() {
        Vec::new()
    } else if json_mode {
        // JSON mode answers a JSON object, whatever was asked.
        words(r#"{"answer": "Hello! How can I help you today?"}"#)
    } else if last["role"] == "tool" {
        words(&format!("The tool said: {last_text}"))
    } else if last_text.contains("__echo__") {
        words(&last_text.replace("__echo__", ""))
    } else if last_text.contains("__long__") {
        (0..200).map(|i| format!("w{i}")).collect()
    } else {
        words("Hello! How can I help you today?")
    };
    let reasoning = if thinking {
        words("The user greets me. I should answer politely.")
    } else {
        Vec::new()
    };
    let plan = Plan {
        id: format!("fake-{:08x}", counter()),
        model,
        reasoning,
        content,
        tool_call,
        prompt_tokens: prompt.len() as u64,
        cache_hit,
        chunk_delay: if last_text.contains("__slow__") || last_text.contains("__drip__") {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        },
        cut: last_text.contains("__cut__") || fault == Some(Fault::CutMid),
        finish: (fault == Some(Fault::InsufficientResource))
            .then_some("insufficient_system_resource"),
        cost: (dialect == Dialect::Openrouter && request["usage"]["include"] == true).then_some(
            if last_text.contains("__overbill__") {
                CostReport::Double
            } else {
                CostReport::AtRates
            },
        ),
    };
    let streaming = request["stream"].as_bool() == Some(true);
    if let Some(response) = fault.and_then(|f| broken_response(f, streaming)) {
        return response;
    }
    if streaming {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let ticks = if last_text.contains("__slow__") {
            500
        } else if last_text.contains("__drip__") {
            40
        } else {
            0
        };
        let hold = last_text.contains("__hold__");
        stream(state, dialect, plan, include_usage, ticks, hold)
    } else {
        complete(dialect, &plan)
    }
}

fn usage(dialect: Dialect, plan: &Plan) -> Value {
    let output = (plan.reasoning.len()
        + plan.content.len()
        + usize::from(plan.tool_call.is_some()) * 8) as u64;
    let mut u = json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": output,
        "total_tokens": plan.prompt_tokens + output,
        "prompt_tokens_details": {"cached_tokens": plan.cache_hit},
        "completion_tokens_details": {"reasoning_tokens": plan.reasoning.len()},
    });
    match dialect {
        Dialect::Deepseek => {
            u["prompt_cache_hit_tokens"] = json!(plan.cache_hit);
            u["prompt_cache_miss_tokens"] = json!(plan.prompt_tokens - plan.cache_hit);
        }
        Dialect::Openrouter => {
            if let Some(report) = plan.cost {
                let miss = plan.prompt_tokens - plan.cache_hit;
                let [hit_rate, miss_rate, output_rate] = OPENROUTER_RATES;
                let pico = plan.cache_hit * hit_rate + miss * miss_rate + output * output_rate;
                let pico = if report == CostReport::Double {
                    2 * pico
                } else {
                    pico
                };
                // OpenRouter sends a JSON number in dollars.
                u["cost"] = json!(pico as f64 / 1e12);
            }
        }
        Dialect::Openai => {}
    }
    u
}

fn reasoning_key(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Openrouter => "reasoning",
        _ => "reasoning_content",
    }
}

fn tool_calls(plan: &Plan) -> Option<Value> {
    plan.tool_call.as_ref().map(|(name, args)| {
        json!([{"id": format!("call_{}", plan.id), "type": "function", "function": {"name": name, "arguments": args}}])
    })
}

fn finish_reason(plan: &Plan) -> &'static str {
    if let Some(reason) = plan.finish {
        reason
    } else if plan.tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

fn complete(dialect: Dialect, plan: &Plan) -> Response {
    let mut message = json!({"role": "assistant", "content": plan.content.join(" ")});
    if !plan.reasoning.is_empty() {
        message[reasoning_key(dialect)] = json!(plan.reasoning.join(" "));
    }
    if let Some(calls) = tool_calls(plan) {
        message["tool_calls"] = calls;
    }
    let body = json!({
        "id": plan.id, "object": "chat.completion", "created": 1766977481, "model": plan.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(plan)}],
        "usage": usage(dialect, plan),
        "system_fingerprint": "fp_fake_prod",
    });
    let text = body.to_string();
    let text = if plan.cut {
        // A body that stops half way: the connection ends early.
        text[..text.len() / 2].to_owned()
    } else {
        // DeepSeek keeps a queued non-streaming request alive with blank lines.
        format!("\n\n{text}")
    };
    json_response(StatusCode::OK, text)
}

fn stream(
    state: Arc<FakeState>,
    dialect: Dialect,
    plan: Plan,
    include_usage: bool,
    ticks: usize,
    hold: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": plan.id, "object": "chat.completion.chunk", "created": 1766977481, "model": plan.model,
                "system_fingerprint": "fp_fake_prod",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            format!("data: {c}\n\n")
        };
        let rkey = reasoning_key(dialect);
        let mut frames = vec![": keep-alive\n\n".to_owned()];
        if plan.reasoning.is_empty() {
            frames.push(chunk(json!({"role": "assistant", "content": ""}), None));
        } else {
            frames.push(chunk(
                json!({"role": "assistant", "content": null, rkey: ""}),
                None,
            ));
            for w in &plan.reasoning {
                frames.push(chunk(json!({"content": null, rkey: format!("{w} ")}), None));
            }
        }
        for w in &plan.content {
            frames.push(chunk(json!({"content": format!("{w} "), rkey: null}), None));
        }
        if let Some(calls) = tool_calls(&plan) {
            let mut calls = calls;
            calls[0]["index"] = json!(0);
            frames.push(chunk(json!({"tool_calls": calls}), None));
        }
        frames.push(chunk(json!({"content": ""}), Some(finish_reason(&plan))));
        if include_usage {
            let c = json!({
                "id": plan.id, "object": "chat.completion.chunk", "created": 1766977481, "model": plan.model,
                "system_fingerprint": "fp_fake_prod", "choices": [], "usage": usage(dialect, &plan),
            });
            frames.push(format!("data: {c}\n\n"));
        }
        frames.push("data: [DONE]\n\n".to_owned());

        let tick = chunk(json!({"content": "tick "}), None);
        frames.splice(2..2, std::iter::repeat_n(tick, ticks));
        for (i, frame) in frames.into_iter().enumerate() {
            if hold && i == 2 {
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tx
                        .send(Ok(Bytes::from_static(b": keep-alive\n\n")))
                        .await
                        .is_err()
                    {
                        state.disconnects.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            if plan.cut && i == 4 {
                // Let what was sent leave the socket, then break the connection.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                return;
            }
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                state.disconnects.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if !plan.chunk_delay.is_zero() {
                tokio::time::sleep(plan.chunk_delay).await;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}
