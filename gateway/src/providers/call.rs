//! What a provider is asked to do: one request, in the chat wire form every surface was turned
//! into, with the few facts about it that change how it is sent.

use crate::wire::raw_object::{Edit, RawObject};

/// The API a request came in on, and so the endpoint it is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/chat/completions`.
    Chat,
    /// `/beta/chat/completions`: chat prefix completion and strict function calling.
    BetaChat,
    /// `/beta/completions`: fill in the middle (`prompt`, `suffix`), non-thinking only.
    Fim,
}

/// Whether the model reasons before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    NonThinking,
    Thinking,
}

impl Mode {
    pub fn thinking(self) -> bool {
        self == Self::Thinking
    }
}

/// How hard a thinking model reasons: DeepSeek's `reasoning_effort` values. Clients' other names
/// map onto them (`minimal` -> low; `medium`, `xhigh` -> high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Low,
    High,
    Max,
}

impl Effort {
    /// A client's effort name; `None` for one no API uses.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "minimal" | "low" => Some(Self::Low),
            "medium" | "high" | "xhigh" => Some(Self::High),
            "max" => Some(Self::Max),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::High => "high",
            Self::Max => "max",
        }
    }
}

/// What happens to `strict: true` on the request's functions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strict {
    /// No function asks for it.
    #[default]
    None,
    /// Every strict function's schema is one the provider's strict mode takes: the call goes
    /// through the provider's strict path (DeepSeek's `/beta`, the flag for others).
    Enforced,
    /// A schema falls outside that subset: the flags are removed (`tools` holds the tools
    /// without them, as JSON), and the client is told why.
    Dropped { tools: String, why: String },
}

/// One request for a provider.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The client's body, fields as they came (a provider edits only the ones it owns).
    pub body: &'a RawObject,
    pub endpoint: Endpoint,
    pub mode: Mode,
    /// How hard to reason, when the client said (thinking mode only).
    pub effort: Option<Effort>,
    pub strict: &'a Strict,
    pub stream: bool,
    /// The last message is an assistant message with `prefix: true`: the model continues it.
    pub prefix: bool,
    pub max_tokens: Option<u32>,
}

/// Where one attempt of a call goes, and what the policies changed for it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The model name the provider knows.
    pub upstream_model: &'a str,
    /// Prompt fields (`messages`, or FIM's `prompt` and `suffix`) that replace the client's,
    /// with personal data redacted: field name and its new JSON text.
    pub redacted: Option<&'a [(&'static str, String)]>,
    /// What a residency policy asks of a provider that routes further (OpenRouter).
    pub residency: Option<&'a Residency>,
}

/// A residency policy's demands on a provider that routes to others (OpenRouter's levers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Residency {
    /// Only these upstream providers, without fallback to others.
    pub only: Vec<String>,
    /// `"allow"` or `"deny"`.
    pub data_collection: Option<String>,
    /// Zero data retention.
    pub zdr: bool,
}

impl Residency {
    pub fn is_empty(&self) -> bool {
        self.only.is_empty() && self.data_collection.is_none() && !self.zdr
    }
}

impl<'a> Target<'a> {
    /// The policy's replacements for the client's prompt fields, as edits.
    pub fn redaction_edits(&self) -> Vec<Edit<'a>> {
        self.redacted
            .unwrap_or_default()
            .iter()
            .map(|(field, value)| Edit::Set(field, value.as_str().into()))
            .collect()
    }
}
