//! Table-driven policy tests: a policy directory's `tests.toml` lists cases (a key, a
//! deployment, a request) with the decision, the determining policies and the obligations
//! expected. `dsgw policy check` and the unit tests run them.

use std::path::Path;

use serde::Deserialize;

use super::{
    Classification, DeploymentAttrs, KeyAttrs, PolicyEngine, PolicyError, RequestFacts,
    load_policies, load_schema, validate,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    key: KeySpec,
    classification: Classification,
    #[serde(default)]
    personal_data: bool,
    #[serde(default = "default_model")]
    model: String,
    deployment: DeploymentSpec,
    expect: Expect,
    /// The determining policies, if the case checks them.
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    obligations: Option<Vec<String>>,
}

fn default_model() -> String {
    "deepseek-chat".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct KeySpec {
    team: String,
    clearance: Classification,
    opt_ins: Vec<String>,
}

impl Default for KeySpec {
    fn default() -> Self {
        Self {
            team: "team".to_owned(),
            clearance: Classification::Restricted,
            opt_ins: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentSpec {
    kind: Placement,
    #[serde(default = "default_provider")]
    provider: String,
    #[serde(default = "default_provider")]
    provider_kind: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    zero_retention: bool,
    #[serde(default)]
    trains_on_data: bool,
}

fn default_provider() -> String {
    "deepseek".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Placement {
    Remote,
    Onprem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// What a directory's cases came to.
#[derive(Debug, Default)]
pub struct Report {
    pub policies: usize,
    pub cases: usize,
    /// One line per failed case.
    pub failures: Vec<String>,
}

/// Loads, validates strictly and runs the cases of one policy directory.
pub fn run_dir(dir: &Path) -> Result<Report, PolicyError> {
    let schema = load_schema(dir)?;
    let policies = load_policies(dir)?;
    validate(dir, &schema, &policies)?;
    let mut report = Report {
        policies: policies.policies().count(),
        ..Report::default()
    };
    let path = dir.join("tests.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(PolicyError::Load {
                dir: dir.display().to_string(),
                message: format!("tests.toml: {e}"),
            });
        }
    };
    let file: CaseFile = toml::from_str(&text).map_err(|e| PolicyError::Load {
        dir: dir.display().to_string(),
        message: format!("tests.toml: {e}"),
    })?;
    for case in file.cases {
        report.cases += 1;
        let key = KeyAttrs {
            id: "case-key".to_owned(),
            team: case.key.team.clone(),
            clearance: case.key.clearance,
            opt_ins: case.key.opt_ins.clone(),
            default_classification: Classification::Internal,
        };
        let deployment = DeploymentAttrs {
            id: "case-deployment".to_owned(),
            model: case.model.clone(),
            provider: case.deployment.provider.clone(),
            provider_kind: case.deployment.provider_kind.clone(),
            onprem: case.deployment.kind == Placement::Onprem,
            region: case.deployment.region.clone(),
            zero_retention: case.deployment.zero_retention,
            trains_on_data: case.deployment.trains_on_data,
        };
        let engine = PolicyEngine::with(dir, &schema, policies.clone(), &[key], &[deployment])?;
        let verdict = engine.decide(
            "case-key",
            "case-deployment",
            RequestFacts {
                classification: case.classification,
                model: &case.model,
                personal_data: case.personal_data,
            },
        );
        let mut wrong = Vec::new();
        if verdict.allowed != (case.expect == Expect::Allow) {
            wrong.push(format!(
                "expected {:?}, got {}",
                case.expect,
                if verdict.allowed { "allow" } else { "deny" }
            ));
        }
        if let Some(expected) = &case.policies {
            let mut expected = expected.clone();
            expected.sort_unstable();
            if expected != verdict.policies {
                wrong.push(format!(
                    "expected policies {expected:?}, got {:?}",
                    verdict.policies
                ));
            }
        }
        if let Some(expected) = &case.obligations {
            let got = verdict.obligations.labels();
            if expected != &got {
                wrong.push(format!("expected obligations {expected:?}, got {got:?}"));
            }
        }
        if let Some(e) = &verdict.error {
            wrong.push(format!("evaluation error: {e}"));
        }
        if !wrong.is_empty() {
            report
                .failures
                .push(format!("{}: {}", case.name, wrong.join("; ")));
        }
    }
    Ok(report)
}
