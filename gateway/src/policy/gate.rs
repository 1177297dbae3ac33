//! One request's passage through the policies: its classification, whether it carries personal
//! data, each deployment's verdict, the redacted prompt when an obligation asks for one, and the
//! audit line that records it all.

use std::sync::Arc;

use http::HeaderMap;

use super::audit::{Candidate, Entry};
use super::redact::{
    Redactor, Vault, contains_personal_data, messages_have_personal_data, redact_messages,
};
use super::{Classification, Obligations, PolicyEngine, RequestFacts, Verdict};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::models::ModelSpec;
use crate::request::{ChatRequest, Surface};

/// The header a client sets to classify a request's data.
pub const CLASSIFICATION_HEADER: &str = "x-data-classification";

#[derive(Debug)]
pub struct Gate {
    pub request_id: String,
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

impl Gate {
    pub fn evaluate(
        engine: &PolicyEngine,
        redactor: &Redactor,
        principal: &Principal,
        headers: &HeaderMap,
        request: &ChatRequest,
        model: &ModelSpec,
    ) -> Result<Self, ApiError> {
        let classification = match headers.get(CLASSIFICATION_HEADER) {
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
        let fim_texts = (request.surface == Surface::Fim).then(|| crate::fim::texts(request));
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
        let redacted = if !(personal_data && must_redact) {
            None
        } else if let Some(texts) = fim_texts {
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
        } else {
            redact_messages(messages, redactor).map(|(text, vault)| Redacted {
                fields: vec![("messages", text)],
                vault: Arc::new(vault),
            })
        };
        Ok(Self {
            request_id: format!("{:016x}", crate::routing::backoff::random_u64()),
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
            request_id: self.request_id.clone(),
            key_id: principal.key_id.to_string(),
            team: principal.team.to_string(),
            model: model.name.clone(),
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
