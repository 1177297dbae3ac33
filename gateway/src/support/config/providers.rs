//! `[[providers]]`: the upstreams a deployment may point at, one shape per `kind`. Each kind
//! takes only its own fields, so a setting on the wrong kind (a local engine's `device` on a
//! DeepSeek provider) is refused when the file is read, naming the field.

use serde::Deserialize;

/// How to talk to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// DeepSeek's own API: native cache-hit fields, `thinking` request field.
    Deepseek,
    /// Any OpenAI-compatible server (vLLM, SGLang).
    Openai,
    /// OpenRouter: `reasoning` fields, `provider` routing object.
    Openrouter,
    /// The in-process DeepSeek-V3.2 engine.
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deepseek => "deepseek",
            Self::Openai => "openai",
            Self::Openrouter => "openrouter",
            Self::Local => "local",
        }
    }
}

/// One `[[providers]]` entry, by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Deepseek(RemoteProviderConfig),
    Openai(RemoteProviderConfig),
    Openrouter(RemoteProviderConfig),
    Local(LocalProviderConfig),
}

/// A provider reached over HTTP in one of the OpenAI chat dialects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteProviderConfig {
    /// Unique name that deployments refer to.
    pub name: String,
    /// Base URL; `/chat/completions` is appended (include `/v1` for servers that need it).
    pub base_url: String,
    /// Environment variable holding the provider's API key. The key itself never goes in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Free label that residency policies match on (for example "cn", "eu", "on-prem").
    #[serde(default)]
    pub region: Option<String>,
    /// The provider runs on the premises: policies see `resource.kind == "onprem"`.
    #[serde(default)]
    pub onprem: bool,
    /// The provider keeps no prompts or outputs.
    #[serde(default)]
    pub zero_retention: bool,
    /// The provider may train on what it receives.
    #[serde(default)]
    pub trains_on_data: bool,
    /// Deadline for the TCP + TLS connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for the response headers after the request is sent (and for streams, for the
    /// first event: keep-alive comments while a provider queues the request do not count).
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two body chunks (keep-alive comments count as traffic).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Deadline for a whole non-streaming call (headers and body). Streams have none: they are
    /// bounded by the idle timeout instead.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Connections (calls in flight) to this provider at once; a call beyond waits up to
    /// `pool_wait_ms` for one, then is refused as the gateway's saturation (503), which never
    /// counts against the provider's health.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_pool_wait_ms")]
    pub pool_wait_ms: u64,
    /// OpenRouter only: the `provider` routing object sent with every request
    /// (`order`, `only`, `ignore`, `allow_fallbacks`, `data_collection`, `zdr`, ...).
    #[serde(default)]
    pub routing: Option<toml::Table>,
}

/// The in-process engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderConfig {
    /// Unique name that deployments refer to.
    pub name: String,
    /// Free label that residency policies match on. A local provider always counts as on-prem.
    #[serde(default)]
    pub region: Option<String>,
    /// Policies read it as `resource.zero_retention`.
    #[serde(default)]
    pub zero_retention: bool,
    /// Policies read it as `resource.trains_on_data`.
    #[serde(default)]
    pub trains_on_data: bool,
    /// A Hugging Face checkpoint directory (`config.json`, `*.safetensors`, and optionally
    /// `tokenizer.json`). Without it, a tiny built-in model with random weights, to exercise the
    /// whole path offline.
    #[serde(default)]
    pub model_dir: Option<String>,
    /// Where the engine runs: "auto" (CUDA device 0 when a usable GPU is there, else the CPU,
    /// with a log line saying why), "cpu", "cuda" or "cuda:N".
    #[serde(default)]
    pub device: Device,
    /// How weight matrices are held: "bf16" (half the memory and bytes read per token;
    /// activations rounded to bf16 per product, f32 accumulation) or "f32". Default: bf16 on
    /// CUDA, f32 on the CPU.
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Most sequences decoded together.
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Prompt snapshots kept for prefix-cache reuse.
    #[serde(default)]
    pub prefix_cache_entries: Option<usize>,
}

/// Where the local engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Device {
    /// CUDA device 0 when a usable GPU is there, else the CPU (with a log line saying why).
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl TryFrom<String> for Device {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("`device` must be \"auto\", \"cpu\" or \"cuda:N\" (got {other:?})")
                }),
        }
    }
}

/// How the local engine holds weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Weights {
    Bf16,
    F32,
}

impl TryFrom<String> for Weights {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "bf16" => Ok(Self::Bf16),
            "f32" => Ok(Self::F32),
            other => Err(format!(
                "`weights` must be \"bf16\" or \"f32\" (got {other:?})"
            )),
        }
    }
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_first_byte_timeout_ms() -> u64 {
    120_000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_request_timeout_ms() -> u64 {
    600_000
}

impl RemoteProviderConfig {
    /// A provider at `base_url` with every other setting at its default.
    pub fn new(name: &str, base_url: &str) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            api_key_env: None,
            region: None,
            onprem: false,
            zero_retention: false,
            trains_on_data: false,
            connect_timeout_ms: default_connect_timeout_ms(),
            first_byte_timeout_ms: default_first_byte_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_connections: default_max_connections(),
            pool_wait_ms: default_pool_wait_ms(),
            routing: None,
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn default_pool_wait_ms() -> u64 {
    1000
}

impl LocalProviderConfig {
    /// The built-in model on the best device found, every setting at its default.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            region: None,
            zero_retention: false,
            trains_on_data: false,
            model_dir: None,
            device: Device::Auto,
            weights: None,
            max_batch: None,
            prefix_cache_entries: None,
        }
    }
}

impl ProviderConfig {
    pub fn name(&self) -> &str {
        match self {
            Self::Deepseek(r) | Self::Openai(r) | Self::Openrouter(r) => &r.name,
            Self::Local(l) => &l.name,
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Deepseek(_) => ProviderKind::Deepseek,
            Self::Openai(_) => ProviderKind::Openai,
            Self::Openrouter(_) => ProviderKind::Openrouter,
            Self::Local(_) => ProviderKind::Local,
        }
    }

    /// The remote settings, for every kind but `local`.
    pub fn remote(&self) -> Option<&RemoteProviderConfig> {
        match self {
            Self::Deepseek(r) | Self::Openai(r) | Self::Openrouter(r) => Some(r),
            Self::Local(_) => None,
        }
    }

    pub fn region(&self) -> Option<&str> {
        match self {
            Self::Deepseek(r) | Self::Openai(r) | Self::Openrouter(r) => r.region.as_deref(),
            Self::Local(l) => l.region.as_deref(),
        }
    }

    /// Whether the data stays on the premises (a local engine always does).
    pub fn onprem(&self) -> bool {
        self.remote().is_none_or(|r| r.onprem)
    }

    pub fn zero_retention(&self) -> bool {
        match self {
            Self::Deepseek(r) | Self::Openai(r) | Self::Openrouter(r) => r.zero_retention,
            Self::Local(l) => l.zero_retention,
        }
    }

    pub fn trains_on_data(&self) -> bool {
        match self {
            Self::Deepseek(r) | Self::Openai(r) | Self::Openrouter(r) => r.trains_on_data,
            Self::Local(l) => l.trains_on_data,
        }
    }

    /// Checks what the types cannot say; `at` names the entry in messages.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let Some(r) = self.remote() else {
            return Ok(());
        };
        if !(r.base_url.starts_with("http://") || r.base_url.starts_with("https://")) {
            return Err(format!(
                "{at}: `base_url` must start with http:// or https://"
            ));
        }
        if r.routing.is_some() && self.kind() != ProviderKind::Openrouter {
            return Err(format!(
                "{at}: `routing` applies to kind = \"openrouter\" only"
            ));
        }
        for (field, ms) in [
            ("connect_timeout_ms", r.connect_timeout_ms),
            ("first_byte_timeout_ms", r.first_byte_timeout_ms),
            ("idle_timeout_ms", r.idle_timeout_ms),
            ("request_timeout_ms", r.request_timeout_ms),
            ("pool_wait_ms", r.pool_wait_ms),
            ("max_connections", r.max_connections as u64),
        ] {
            if ms == 0 {
                return Err(format!("{at}: `{field}` must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Providers {
        providers: Vec<ProviderConfig>,
    }

    fn parse(text: &str) -> Result<Vec<ProviderConfig>, String> {
        toml::from_str::<Providers>(text)
            .map(|p| p.providers)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_takes_its_own_fields() {
        let p = parse(
            "[[providers]]\nname = \"l\"\nkind = \"local\"\ndevice = \"cuda:1\"\nweights = \"bf16\"\n",
        )
        .unwrap();
        let ProviderConfig::Local(l) = &p[0] else {
            panic!("{p:?}")
        };
        assert_eq!(l.device, Device::Cuda(1));
        assert_eq!(l.weights, Some(Weights::Bf16));
        assert!(p[0].onprem());

        let e = parse("[[providers]]\nname = \"d\"\nkind = \"deepseek\"\nbase_url = \"https://x\"\ndevice = \"cpu\"\n").unwrap_err();
        assert!(e.contains("unknown field `device`"), "{e}");
        let e = parse("[[providers]]\nname = \"l\"\nkind = \"local\"\nbase_url = \"http://x\"\n")
            .unwrap_err();
        assert!(e.contains("unknown field `base_url`"), "{e}");
        let e = parse("[[providers]]\nname = \"d\"\nkind = \"openai\"\n").unwrap_err();
        assert!(e.contains("missing field `base_url`"), "{e}");
    }

    #[test]
    fn device_and_weights_are_checked_when_read() {
        let e =
            parse("[[providers]]\nname = \"l\"\nkind = \"local\"\ndevice = \"gpu\"\n").unwrap_err();
        assert!(e.contains("cuda:N"), "{e}");
        let e = parse("[[providers]]\nname = \"l\"\nkind = \"local\"\nweights = \"fp8\"\n")
            .unwrap_err();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
        for (text, device) in [
            ("auto", Device::Auto),
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(Device::try_from(text.to_owned()), Ok(device));
        }
    }

    #[test]
    fn routing_is_for_openrouter() {
        let text = "[[providers]]\nname = \"d\"\nkind = \"deepseek\"\nbase_url = \"https://x\"\nrouting = { only = [\"a\"] }\n";
        let p = parse(text).unwrap();
        assert!(
            p[0].validate("providers[0]")
                .unwrap_err()
                .contains("openrouter")
        );
        let p = parse(&text.replace("deepseek", "openrouter")).unwrap();
        assert!(p[0].validate("providers[0]").is_ok());
    }
}
