//! Data-residency policies in Cedar: which deployments a request's data may reach.
//!
//! A policy directory holds `*.cedar` files (every policy named with `@id`), optionally its own
//! `schema.cedarschema` (else the one in `policies/`, embedded), and `tests.toml` cases. At config
//! load the policies are validated strictly against the schema and the entities (keys, teams,
//! deployments) are built once; per request, each candidate deployment is one Cedar decision
//! with the request's classification, model and whether personal data was detected. `forbid`
//! wins over `permit`, nothing is allowed unless permitted, and any evaluation error denies.
//! Annotations on the permitting policies carry obligations ([`Obligations`]).

pub mod audit;
pub mod cases;
pub mod gate;
#[cfg(test)]
mod property_tests;
pub mod redact;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::Serialize;

/// The schema dsgw fills entities and contexts for.
pub const SCHEMA: &str = include_str!("../../../../../policies/schema.cedarschema");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy directory {dir}: {message}")]
    Load { dir: String, message: String },
    #[error("policy schema: {0}")]
    Schema(String),
    #[error("policies in {dir} do not validate against the schema:\n{errors}")]
    Invalid { dir: String, errors: String },
    #[error("policy entities: {0}")]
    Entities(String),
}

use crate::pipeline::routing::catalog::deployment_id;
pub use crate::support::config::Classification;

/// A key's attributes as policies see them.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyAttrs {
    pub id: String,
    pub team: String,
    pub clearance: Classification,
    pub opt_ins: Vec<String>,
    pub default_classification: Classification,
}

/// A deployment's attributes as policies see them.
#[derive(Debug, Clone, Default)]
pub struct DeploymentAttrs {
    /// `model/provider/upstream_model`: the entity id, and the name in errors and the audit log.
    pub id: String,
    pub model: String,
    pub provider: String,
    pub provider_kind: String,
    pub onprem: bool,
    pub region: String,
    pub zero_retention: bool,
    pub trains_on_data: bool,
}

/// What one request tells the policies.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub classification: Classification,
    pub model: &'a str,
    pub personal_data: bool,
}

/// What the permitting policies require of a deployment they allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Obligations {
    /// Replace personal data with placeholders before the provider sees the prompt.
    pub redact: bool,
    /// Put the originals back into the answer for the caller.
    pub reidentify: bool,
    /// OpenRouter's `provider.data_collection`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_data_collection: Option<String>,
    /// OpenRouter's `provider.zdr`: zero-data-retention endpoints only.
    pub provider_zdr: bool,
    /// OpenRouter's `provider.only` (with `allow_fallbacks: false`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provider_only: Vec<String>,
}

impl Obligations {
    fn from_annotations<'a>(annotations: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut o = Self::default();
        for (key, value) in annotations {
            match key {
                "redact" => o.redact = true,
                "reidentify" => o.reidentify = value != "false",
                "provider_data_collection" => o.provider_data_collection = Some(value.to_owned()),
                "provider_zdr" => o.provider_zdr = value != "false",
                "provider_only" => {
                    o.provider_only = value
                        .split(',')
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect();
                }
                _ => {}
            }
        }
        o
    }

    /// The union: every obligation any permitting policy asked for.
    fn merge(&mut self, other: &Self) {
        self.redact |= other.redact;
        self.reidentify |= other.reidentify;
        if other.provider_data_collection.is_some() {
            self.provider_data_collection = other.provider_data_collection.clone();
        }
        self.provider_zdr |= other.provider_zdr;
        for p in &other.provider_only {
            if !self.provider_only.contains(p) {
                self.provider_only.push(p.clone());
            }
        }
    }

    /// Short labels, for `policy explain`, tests and the audit log.
    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.redact {
            out.push("redact".to_owned());
        }
        if self.reidentify {
            out.push("reidentify".to_owned());
        }
        if let Some(d) = &self.provider_data_collection {
            out.push(format!("provider_data_collection={d}"));
        }
        if self.provider_zdr {
            out.push("provider_zdr".to_owned());
        }
        if !self.provider_only.is_empty() {
            out.push(format!("provider_only={}", self.provider_only.join(",")));
        }
        out
    }
}

/// One deployment's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// The policies that determined the decision: the permitting ones, or the forbidding ones
    /// (empty when nothing permitted).
    pub policies: Vec<String>,
    pub obligations: Obligations,
    /// Why the decision failed to evaluate (the deployment is then denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Verdict {
    fn deny(error: String) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            obligations: Obligations::default(),
            error: Some(error),
        }
    }
}

/// A loaded, validated policy set with its entities.
#[derive(Debug)]
pub struct PolicyEngine {
    dir: PathBuf,
    policies: PolicySet,
    entities: Entities,
    action: EntityUid,
    obligations: HashMap<PolicyId, Obligations>,
    /// Key id -> (entity, default classification, index).
    keys: HashMap<String, (EntityUid, Classification, u64)>,
    /// Deployment id -> (entity, index).
    deployments: HashMap<String, (EntityUid, u64)>,
    /// Decisions already made. A decision depends only on the key, the deployment (whose model
    /// is the request's model), the classification and `personal_data`: the entities are fixed
    /// for this engine's lifetime, so each is computed by Cedar once.
    memo: RwLock<HashMap<u64, Arc<Verdict>>>,
}

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("a valid entity type name")
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(kind), EntityId::new(id))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

/// The policy files of a directory, parsed, each renamed to its `@id`.
pub fn load_policies(dir: &Path) -> Result<PolicySet, PolicyError> {
    let load = |message: String| PolicyError::Load {
        dir: dir.display().to_string(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| load(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(load("no *.cedar policy files".into()));
    }
    let mut set = PolicySet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| load(e.to_string()))?;
        let parsed = PolicySet::from_str(&text)
            .map_err(|e| load(format!("{}: {:?}", file.display(), miette_text(&e))))?;
        for policy in parsed.policies() {
            let Some(id) = policy.annotation("id") else {
                return Err(load(format!(
                    "{}: every policy needs an @id(\"...\") annotation (the audit log and errors name it); this one has none:\n{policy}",
                    file.display()
                )));
            };
            set.add(policy.new_id(PolicyId::new(id)))
                .map_err(|e| load(format!("{}: {e}", file.display())))?;
        }
        if parsed.templates().next().is_some() {
            return Err(load(format!(
                "{}: templates are not supported",
                file.display()
            )));
        }
    }
    Ok(set)
}

fn miette_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The directory's own schema, or the embedded one.
pub fn load_schema(dir: &Path) -> Result<Schema, PolicyError> {
    let own = dir.join("schema.cedarschema");
    let text = match std::fs::read_to_string(&own) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SCHEMA.to_owned(),
        Err(e) => return Err(PolicyError::Schema(format!("{}: {e}", own.display()))),
    };
    Schema::from_cedarschema_str(&text)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| PolicyError::Schema(miette_text(&e)))
}

/// Strict validation: every attribute and type checked against the schema.
pub fn validate(dir: &Path, schema: &Schema, policies: &PolicySet) -> Result<(), PolicyError> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let errors: Vec<String> = result
        .validation_errors()
        .map(|e| format!("- {}", miette_text(e)))
        .collect();
    Err(PolicyError::Invalid {
        dir: dir.display().to_string(),
        errors: errors.join("\n"),
    })
}

impl PolicyEngine {
    /// Loads and validates `dir` and builds the entities of these keys and deployments.
    pub fn load(
        dir: &Path,
        keys: &[KeyAttrs],
        deployments: &[DeploymentAttrs],
    ) -> Result<Self, PolicyError> {
        let schema = load_schema(dir)?;
        let policies = load_policies(dir)?;
        validate(dir, &schema, &policies)?;
        Self::with(dir, &schema, policies, keys, deployments)
    }

    fn with(
        dir: &Path,
        schema: &Schema,
        policies: PolicySet,
        keys: &[KeyAttrs],
        deployments: &[DeploymentAttrs],
    ) -> Result<Self, PolicyError> {
        let mut entities = Vec::new();
        let mut teams: Vec<&str> = keys.iter().map(|k| k.team.as_str()).collect();
        teams.sort_unstable();
        teams.dedup();
        let entity_error = |e: &dyn std::error::Error| PolicyError::Entities(miette_text(e));
        for team in teams {
            entities.push(Entity::new_no_attrs(
                uid("Dsgw::Team", team),
                Default::default(),
            ));
        }
        let mut key_map = HashMap::new();
        for k in keys {
            let id = uid("Dsgw::Key", &k.id);
            let attrs = HashMap::from([
                ("team".to_owned(), string(&k.team)),
                (
                    "clearance".to_owned(),
                    RestrictedExpression::new_long(k.clearance.level()),
                ),
                (
                    "opt_ins".to_owned(),
                    RestrictedExpression::new_set(k.opt_ins.iter().map(|o| string(o))),
                ),
                (
                    "default_classification".to_owned(),
                    string(k.default_classification.as_str()),
                ),
            ]);
            let parents = [uid("Dsgw::Team", &k.team)].into_iter().collect();
            entities.push(Entity::new(id.clone(), attrs, parents).map_err(|e| entity_error(&e))?);
            let index = key_map.len() as u64;
            key_map.insert(k.id.clone(), (id, k.default_classification, index));
        }
        let mut deployment_map = HashMap::new();
        for d in deployments {
            let id = uid("Dsgw::Deployment", &d.id);
            let attrs = HashMap::from([
                ("model".to_owned(), string(&d.model)),
                ("provider".to_owned(), string(&d.provider)),
                ("provider_kind".to_owned(), string(&d.provider_kind)),
                (
                    "kind".to_owned(),
                    string(if d.onprem { "onprem" } else { "remote" }),
                ),
                ("region".to_owned(), string(&d.region)),
                (
                    "zero_retention".to_owned(),
                    RestrictedExpression::new_bool(d.zero_retention),
                ),
                (
                    "trains_on_data".to_owned(),
                    RestrictedExpression::new_bool(d.trains_on_data),
                ),
            ]);
            entities.push(
                Entity::new(id.clone(), attrs, Default::default()).map_err(|e| entity_error(&e))?,
            );
            let index = deployment_map.len() as u64;
            deployment_map.insert(d.id.clone(), (id, index));
        }
        let entities =
            Entities::from_entities(entities, Some(schema)).map_err(|e| entity_error(&e))?;
        let obligations = policies
            .policies()
            .map(|p| {
                (
                    p.id().clone(),
                    Obligations::from_annotations(p.annotations()),
                )
            })
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            policies,
            entities,
            action: uid("Dsgw::Action", "route"),
            obligations,
            keys: key_map,
            deployments: deployment_map,
            memo: RwLock::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The classification a key's requests carry when they do not say.
    pub fn default_classification(&self, key_id: &str) -> Option<Classification> {
        self.keys.get(key_id).map(|(_, c, _)| *c)
    }

    /// Whether `key_id` may send this request to `deployment_id`.
    pub fn decide(
        &self,
        key_id: &str,
        deployment_id: &str,
        facts: RequestFacts<'_>,
    ) -> Arc<Verdict> {
        let Some((principal, _, key_index)) = self.keys.get(key_id) else {
            return Arc::new(Verdict::deny(format!(
                "key {key_id:?} is not known to the policies"
            )));
        };
        let Some((resource, deployment_index)) = self.deployments.get(deployment_id) else {
            return Arc::new(Verdict::deny(format!(
                "deployment {deployment_id:?} is not known to the policies"
            )));
        };
        let slot = ((key_index * self.deployments.len() as u64 + deployment_index) * 4
            + facts.classification.level() as u64)
            * 2
            + u64::from(facts.personal_data);
        if let Some(v) = self.memo.read().expect("policy memo lock").get(&slot) {
            return v.clone();
        }
        let verdict = Arc::new(self.evaluate(principal, resource, facts));
        self.memo
            .write()
            .expect("policy memo lock")
            .insert(slot, verdict.clone());
        verdict
    }

    /// Drops every remembered decision (for benchmarks of the evaluation itself).
    pub fn forget(&self) {
        self.memo.write().expect("policy memo lock").clear();
    }

    /// One Cedar decision.
    fn evaluate(
        &self,
        principal: &EntityUid,
        resource: &EntityUid,
        facts: RequestFacts<'_>,
    ) -> Verdict {
        let context = Context::from_pairs([
            (
                "classification".to_owned(),
                string(facts.classification.as_str()),
            ),
            (
                "level".to_owned(),
                RestrictedExpression::new_long(facts.classification.level()),
            ),
            ("model".to_owned(), string(facts.model)),
            (
                "personal_data".to_owned(),
                RestrictedExpression::new_bool(facts.personal_data),
            ),
        ]);
        let request = context.map_err(|e| miette_text(&e)).and_then(|context| {
            Request::new(
                principal.clone(),
                self.action.clone(),
                resource.clone(),
                context,
                None,
            )
            .map_err(|e| miette_text(&e))
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => return Verdict::deny(e),
        };
        let response = Authorizer::new().is_authorized(&request, &self.policies, &self.entities);
        let diagnostics = response.diagnostics();
        // A policy that fails to evaluate is skipped by Cedar; a skipped forbid would let data
        // through, so any error denies.
        if let Some(e) = diagnostics.errors().next() {
            return Verdict::deny(format!("policy evaluation failed: {e}"));
        }
        let mut policies: Vec<String> = diagnostics.reason().map(|id| id.to_string()).collect();
        policies.sort_unstable();
        let allowed = response.decision() == Decision::Allow;
        let mut obligations = Obligations::default();
        if allowed {
            for id in diagnostics.reason() {
                if let Some(o) = self.obligations.get(id) {
                    obligations.merge(o);
                }
            }
        }
        Verdict {
            allowed,
            policies,
            obligations,
            error: None,
        }
    }
}

/// Policy attributes of the configured keys.
pub fn key_attrs(config: &crate::support::config::Config) -> Vec<KeyAttrs> {
    key_attrs_of(&config.keys)
}

/// Policy attributes of `keys` (with the open principal when there are none).
pub fn key_attrs_of(keys: &[crate::support::config::KeyConfig]) -> Vec<KeyAttrs> {
    keys.iter()
        .map(|k| KeyAttrs {
            id: k.id.clone(),
            team: k.team.clone(),
            clearance: k.clearance,
            opt_ins: k.opt_ins.clone(),
            default_classification: k.default_classification,
        })
        .chain(keys.is_empty().then(|| KeyAttrs {
            // The open loopback principal (no keys configured).
            id: "local".to_owned(),
            team: "local".to_owned(),
            clearance: Classification::Restricted,
            opt_ins: Vec::new(),
            default_classification: Classification::Internal,
        }))
        .collect()
}

/// Policy attributes of every configured deployment.
pub fn deployment_attrs(config: &crate::support::config::Config) -> Vec<DeploymentAttrs> {
    let mut out = Vec::new();
    for m in &config.models {
        for d in &m.deployments {
            let Some(p) = config.providers.iter().find(|p| p.name() == d.provider) else {
                continue;
            };
            out.push(DeploymentAttrs {
                id: deployment_id(&m.name, &d.provider, &d.model),
                model: m.name.clone(),
                provider: p.name().to_owned(),
                provider_kind: p.kind().as_str().to_owned(),
                onprem: p.onprem(),
                region: p.region().unwrap_or_default().to_owned(),
                zero_retention: p.zero_retention(),
                trains_on_data: p.trains_on_data(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples")
    }

    #[test]
    fn every_shipped_example_validates_and_passes_its_cases() {
        let mut sets = 0;
        for entry in std::fs::read_dir(examples()).unwrap() {
            let dir = entry.unwrap().path();
            let report = cases::run_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert!(report.cases >= 3, "{}: {report:?}", dir.display());
            assert!(
                report.failures.is_empty(),
                "{}: {:#?}",
                dir.display(),
                report.failures
            );
            sets += 1;
        }
        assert_eq!(sets, 4);
    }

    #[test]
    fn strict_validation_names_the_mistake() {
        let dir = std::env::temp_dir().join(format!("dsgw-policy-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("p.cedar"),
            "@id(\"typo\")\nforbid (principal, action == Dsgw::Action::\"route\", resource) when { resource.regoin == \"cn\" };\n",
        )
        .unwrap();
        let e = PolicyEngine::load(&dir, &[], &[]).unwrap_err().to_string();
        assert!(e.contains("regoin"), "{e}");
        std::fs::write(
            dir.join("p.cedar"),
            "forbid (principal, action, resource);\n",
        )
        .unwrap();
        let e = PolicyEngine::load(&dir, &[], &[]).unwrap_err().to_string();
        assert!(e.contains("@id"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn classifications_order_and_parse() {
        assert!(Classification::Confidential > Classification::Internal);
        assert_eq!(
            Classification::parse(" Restricted"),
            Some(Classification::Restricted)
        );
        assert_eq!(Classification::parse("secret"), None);
    }
}
