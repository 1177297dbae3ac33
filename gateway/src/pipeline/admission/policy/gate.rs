//! One request's passage through the policies: its classification, whether it carries personal
//! data, each deployment's verdict, the redacted prompt when an obligation asks for one, and the
//! audit line that records it all.

use std::sync::Arc;

use http::HeaderValue;

use super::audit::{Candidate, Entry};
use super::redact::{
    Redactor, Vault, contains_personal_data, messages_have_personal_data, redact_messages,
};
use super::{Classification, Obligations, PolicyEngine, RequestFacts, Verdict};
use crate::pipeline::request::Request;
use crate::pipeline::routing::catalog::ModelSpec;
use crate::providers::call::{Endpoint, Residency};
use crate::support::principal::Principal;
use crate::wire::error::ApiError;
use crate::wire::raw_object::RawObject;

/// The header a client sets to classify a request's data.
pub const CLASSIFICATION_HEADER: &str = "x-data-classification";

#[derive(Debug)]
pub struct Gate {
    pub request_id: Arc<str>,
    pub classification: Classification,
    pub personal_data: bool,
    /// One per deployment of the model, in configuration order.
    pub verdicts: Vec<Arc<Verdict>>,
    /// The prompt fields (`messages`, or FIM's `prompt` and `suffix`) as JSON with personal data
    /// replaced, when an allowed deployment must not see it.
    pub redacted: Option<Redacted>,
}

/// Prompt fields with personal data replaced, and the originals behind the placeholders.
#[derive(Debug)]
pub struct Redacted {
    /// Field name and its new JSON text.
    pub fields: Vec<(&'static str, String)>,
    pub vault: Arc<Vault>,
}

/// One request as the policies see it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a Arc<str>,
    /// The client's `x-data-classification` header, if it sent one.
    pub classification: Option<&'a HeaderValue>,
}

/// The FIM prompt and suffix texts, for the personal-data scan and redaction.
fn fim_texts(raw: &RawObject) -> Vec<(&'static str, String)> {
    ["prompt", "suffix"]
        .into_iter()
        .filter_map(|name| {
            raw.get(name)
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                .map(|t| (name, t))
        })
        .collect()
}

/// The prompt fields with personal data replaced: FIM's texts, or the chat messages.
fn redact(
    redactor: &Redactor,
    fim_texts: Option<Vec<(&'static str, String)>>,
    messages: &str,
) -> Option<Redacted> {
    let Some(texts) = fim_texts else {
        return redact_messages(messages, redactor).map(|(text, vault)| Redacted {
            fields: vec![("messages", text)],
            vault: Arc::new(vault),
        });
    };
    let mut vault = Vault::default();
    let fields = texts
        .into_iter()
        .map(|(name, text)| {
            let redacted = redactor.redact(&text, &mut vault);
            (
                name,
                serde_json::to_string(&redacted).expect("a string serialises"),
            )
        })
        .collect();
    Some(Redacted {
        fields,
        vault: Arc::new(vault),
    })
}

impl Gate {
    pub fn evaluate(
        engine: &PolicyEngine,
        redactor: &Redactor,
        subject: Subject<'_>,
        request: &Request,
        model: &ModelSpec,
    ) -> Result<Self, ApiError> {
        let principal = subject.principal;
        let classification = match subject.classification {
            Some(value) => value
                .to_str()
                .ok()
                .and_then(Classification::parse)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Invalid {CLASSIFICATION_HEADER} header: expected one of public, internal, confidential, restricted."
                    ))
                    .with_param(CLASSIFICATION_HEADER)
                })?,
            None => engine
                .default_classification(&principal.key_id)
                .unwrap_or(Classification::Internal),
        };
        let fim_texts = (request.endpoint == Endpoint::Fim).then(|| fim_texts(&request.raw));
        let messages = request.raw.get("messages").map_or("[]", |m| m.get());
        let personal_data = match &fim_texts {
            Some(texts) => contains_personal_data(texts.iter().map(|(_, t)| t.as_str())),
            None => messages_have_personal_data(messages),
        };
        let facts = RequestFacts {
            classification,
            model: &model.name,
            personal_data,
        };
        let verdicts: Vec<Arc<Verdict>> = model
            .deployments
            .iter()
            .map(|d| engine.decide(&principal.key_id, &d.policy_id, facts))
            .collect();
        let must_redact = verdicts.iter().any(|v| v.allowed && v.obligations.redact);
        let redacted = (personal_data && must_redact)
            .then(|| redact(redactor, fim_texts, messages))
            .flatten();
        Ok(Self {
            request_id: subject.request_id.clone(),
            classification,
            personal_data,
            verdicts,
            redacted,
        })
    }

    pub fn allows(&self, deployment: usize) -> bool {
        self.verdicts.get(deployment).is_some_and(|v| v.allowed)
    }

    pub fn obligations(&self, deployment: usize) -> Option<&Obligations> {
        self.verdicts
            .get(deployment)
            .filter(|v| v.allowed)
            .map(|v| &v.obligations)
    }

    /// The prompt fields a deployment must receive instead of the originals, if any.
    pub fn redacted_fields(&self, deployment: usize) -> Option<&[(&'static str, String)]> {
        let o = self.obligations(deployment)?;
        o.redact
            .then_some(self.redacted.as_ref().map(|r| r.fields.as_slice()))
            .flatten()
    }

    /// The placeholders to put back into this deployment's answer, if its policy allows it.
    pub fn reidentification(&self, deployment: usize) -> Option<Arc<Vault>> {
        let o = self.obligations(deployment)?;
        (o.redact && o.reidentify)
            .then(|| self.redacted.as_ref().map(|r| r.vault.clone()))
            .flatten()
    }

    /// What this deployment's policy asks of a provider that routes further (OpenRouter).
    pub fn residency(&self, deployment: usize) -> Option<Residency> {
        let o = self.obligations(deployment)?;
        let residency = Residency {
            only: o.provider_only.clone(),
            data_collection: o.provider_data_collection.clone(),
            zdr: o.provider_zdr,
        };
        (!residency.is_empty()).then_some(residency)
    }

    /// Whether any deployment may receive the request.
    pub fn any_allowed(&self) -> bool {
        self.verdicts.iter().any(|v| v.allowed)
    }

    /// The 403 for a request no deployment may receive, naming what forbade it.
    pub fn refusal(&self, model: &ModelSpec) -> ApiError {
        let mut reasons: Vec<String> = Vec::new();
        for (d, v) in model.deployments.iter().zip(&self.verdicts) {
            let why = match (&v.error, v.policies.is_empty()) {
                (Some(e), _) => format!("evaluation error ({e})"),
                (None, true) => "no policy permits it".to_owned(),
                (None, false) => format!("forbidden by {}", v.policies.join(", ")),
            };
            reasons.push(format!("{} ({why})", d.provider.name));
        }
        ApiError::policy_denied(format!(
            "Data-residency policy refuses this request: no deployment of `{}` may receive {} data from this key: {}.",
            model.name,
            self.classification.as_str(),
            reasons.join("; ")
        ))
    }

    /// The audit line for this request, once its outcome is known.
    pub fn entry(
        &self,
        principal: &Principal,
        model: &ModelSpec,
        outcome: &'static str,
        chosen: Option<usize>,
    ) -> Entry {
        let candidates = model
            .deployments
            .iter()
            .zip(&self.verdicts)
            .map(|(d, v)| Candidate {
                deployment: d.policy_id.clone(),
                allowed: v.allowed,
                policies: v.policies.clone(),
                obligations: v.obligations.labels(),
                error: v.error.clone(),
            })
            .collect();
        let redacted_for_chosen = chosen.is_some_and(|i| self.redacted_fields(i).is_some());
        let redactions = match &self.redacted {
            Some(r) if redacted_for_chosen => r.vault.len(),
            _ => 0,
        };
        Entry {
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            request_id: self.request_id.to_string(),
            key_id: principal.key_id.to_string(),
            team: principal.team.to_string(),
            model: model.name.to_string(),
            classification: self.classification.as_str(),
            personal_data: self.personal_data,
            candidates,
            outcome,
            chosen: chosen.map(|i| model.deployments[i].policy_id.clone()),
            applied: chosen
                .and_then(|i| self.obligations(i))
                .map(Obligations::labels)
                .unwrap_or_default(),
            redactions,
        }
    }
}
