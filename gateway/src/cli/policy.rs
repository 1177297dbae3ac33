//! `dsgw policy`: check policy directories and their tests, explain a decision, time evaluation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use dsgw::pipeline::admission::policy::{
    Classification, DeploymentAttrs, KeyAttrs, PolicyEngine, RequestFacts, cases, deployment_attrs,
    key_attrs,
};
use dsgw::support::config::Config;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy directories strictly against the schema and run their tests.toml cases.
    Check {
        /// Policy directories (default: the `[policy] dir` of --config).
        dirs: Vec<PathBuf>,
        /// A configuration whose policy directory, keys and deployments to check together.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show which deployments of a model a key may reach with a classification, and why.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// Key id (`[[keys]] id`).
        #[arg(long)]
        key: String,
        /// public | internal | confidential | restricted (default: the key's default).
        #[arg(long)]
        classification: Option<String>,
        #[arg(long)]
        model: String,
        /// Evaluate as if the prompt held personal data.
        #[arg(long)]
        personal_data: bool,
    },
    /// Time one request's evaluation over N candidate deployments.
    Bench {
        /// Policy directory.
        dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        candidates: usize,
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dirs, config } => check(dirs, config.as_deref()),
        PolicyCommand::Explain {
            config,
            key,
            classification,
            model,
            personal_data,
        } => explain(
            &config,
            &key,
            classification.as_deref(),
            &model,
            personal_data,
        ),
        PolicyCommand::Bench {
            dir,
            candidates,
            requests,
        } => bench(&dir, candidates, requests),
    }
}

/// A configuration and its policy directory.
fn config_with_policy(path: &Path) -> anyhow::Result<(Config, PathBuf)> {
    let config = Config::load(path)?;
    let dir = config
        .policy
        .dir
        .clone()
        .with_context(|| format!("{}: no [policy] dir", path.display()))?;
    Ok((config, PathBuf::from(dir)))
}

fn check(mut dirs: Vec<PathBuf>, config: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = config {
        // The configuration's own keys and deployments must build into entities too.
        let (config, dir) = config_with_policy(path)?;
        PolicyEngine::load(&dir, &key_attrs(&config), &deployment_attrs(&config))?;
        dirs.push(dir);
    }
    if dirs.is_empty() {
        bail!("name policy directories, or --config");
    }
    let mut failed = false;
    for dir in dirs {
        let report = cases::run_dir(&dir)?;
        for failure in &report.failures {
            println!("FAIL {}: {failure}", dir.display());
        }
        println!(
            "{}: {} policies valid (strict); {} of {} cases pass",
            dir.display(),
            report.policies,
            report.cases - report.failures.len(),
            report.cases
        );
        failed |= !report.failures.is_empty();
    }
    if failed {
        bail!("policy cases failed");
    }
    Ok(())
}

fn explain(
    path: &Path,
    key: &str,
    classification: Option<&str>,
    model: &str,
    personal_data: bool,
) -> anyhow::Result<()> {
    let (config, dir) = config_with_policy(path)?;
    let keys = key_attrs(&config);
    let deployments = deployment_attrs(&config);
    let engine = PolicyEngine::load(&dir, &keys, &deployments)?;
    let Some(k) = keys.iter().find(|k| k.id == key) else {
        bail!("no key with id {key:?} in {}", path.display());
    };
    let classification = match classification {
        Some(c) => Classification::parse(c).with_context(|| {
            format!("classification {c:?}: expected public, internal, confidential or restricted")
        })?,
        None => k.default_classification,
    };
    let candidates: Vec<&DeploymentAttrs> =
        deployments.iter().filter(|d| d.model == model).collect();
    if candidates.is_empty() {
        bail!("model {model:?} has no deployments in {}", path.display());
    }
    println!(
        "key {key} (team {}, clearance {}, opt-ins [{}]), {} data{}, model {model}, policies {}:",
        k.team,
        k.clearance.as_str(),
        k.opt_ins.join(", "),
        classification.as_str(),
        if personal_data {
            " with personal data"
        } else {
            ""
        },
        dir.display(),
    );
    let facts = RequestFacts {
        classification,
        model,
        personal_data,
    };
    for d in candidates {
        let v = engine.decide(key, &d.id, facts);
        let placement = if d.onprem { "onprem" } else { "remote" };
        let region = if d.region.is_empty() { "-" } else { &d.region };
        let verdict = if v.allowed { "ALLOW" } else { "DENY " };
        let why = match (&v.error, v.policies.is_empty(), v.allowed) {
            (Some(e), _, _) => format!("error: {e}"),
            (None, true, false) => "no policy permits it".to_owned(),
            (None, _, true) => format!("permitted by {}", v.policies.join(", ")),
            (None, false, false) => format!("forbidden by {}", v.policies.join(", ")),
        };
        let obligations = v.obligations.labels();
        println!(
            "  {verdict} {} [{placement}, region {region}]: {why}{}",
            d.id,
            if obligations.is_empty() {
                String::new()
            } else {
                format!("; obligations: {}", obligations.join(", "))
            }
        );
    }
    Ok(())
}

/// Mean seconds to decide every candidate of one request; `cold` forgets earlier decisions
/// first (untimed), so each one goes to Cedar.
fn time_requests(
    engine: &PolicyEngine,
    deployments: &[DeploymentAttrs],
    requests: usize,
    cold: bool,
) -> f64 {
    let mut spent = std::time::Duration::ZERO;
    for r in 0..requests {
        if cold {
            engine.forget();
        }
        let facts = RequestFacts {
            classification: Classification::ALL[(r / 2) % 4],
            model: "m",
            personal_data: r % 2 == 0,
        };
        let started = Instant::now();
        for d in deployments {
            std::hint::black_box(engine.decide("k", &d.id, facts));
        }
        spent += started.elapsed();
    }
    spent.as_secs_f64() / requests as f64
}

fn bench(dir: &Path, candidates: usize, requests: usize) -> anyhow::Result<()> {
    let keys = [KeyAttrs {
        id: "k".into(),
        team: "t".into(),
        clearance: Classification::Restricted,
        opt_ins: vec!["region:cn".into()],
        default_classification: Classification::Internal,
    }];
    let regions = ["cn", "eu", "us", "local"];
    let deployments: Vec<DeploymentAttrs> = (0..candidates)
        .map(|i| DeploymentAttrs {
            id: format!("m/p{i}/x"),
            model: "m".into(),
            provider: format!("p{i}"),
            provider_kind: "deepseek".into(),
            onprem: i % 4 == 3,
            region: regions[i % 4].into(),
            zero_retention: i % 2 == 0,
            trains_on_data: false,
        })
        .collect();
    let engine = PolicyEngine::load(dir, &keys, &deployments)?;
    let cold = time_requests(&engine, &deployments, requests, true);
    let warm = time_requests(&engine, &deployments, requests, false);
    println!(
        "{}: {candidates} candidates: {:.1} us per request evaluated by Cedar ({:.2} us per decision), {:.2} us per request from the decision memo",
        dir.display(),
        cold * 1e6,
        cold * 1e6 / candidates as f64,
        warm * 1e6,
    );
    // What the gate adds per request besides the decisions: the personal-data scan of the prompt.
    let text = "Please review the deployment notes for the staging cluster and summarise them. "
        .repeat(50);
    let messages = serde_json::json!([
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": text},
    ])
    .to_string();
    let rounds = 2000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(
            dsgw::pipeline::admission::policy::redact::messages_have_personal_data(&messages),
        );
    }
    println!(
        "personal-data scan of a {:.1} KiB prompt: {:.1} us",
        messages.len() as f64 / 1024.0,
        started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    );
    Ok(())
}
