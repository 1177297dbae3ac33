//! One request, one pipeline. Every surface hands the pipeline the typed request it parsed
//! ([`request::Request`]) and the caller ([`context::Caller`]); the pipeline runs the phases in
//! order and hands back one typed answer ([`respond::Answer`]) or error:
//!
//! 1. admit ([`admit`], with [`admission`]): model and mode, policies, budgets, limits;
//! 2. route ([`routing`]): the deployments the policies allow, in the order to try them;
//! 3. call ([`routing::dispatch`] over [`crate::providers`]): attempts until one answers;
//! 4. respond ([`respond`]): the answer re-identified, counted and priced as it passes;
//! 5. settle ([`settle`]): one completion record and the limits reconciled, once, for every
//!    outcome, including requests refused before any of this.
//!
//! Providers report events and never settle; health is written through one function
//! ([`routing::health::Health::observe`]).

pub mod admission;
mod admit;
pub mod context;
pub mod request;
pub mod respond;
pub mod routing;
mod settle;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::accounting::metrics::Metrics;
use crate::accounting::pricing::PriceBook;
use crate::accounting::settlement::{Outcome, Served, Settlement};
use crate::accounting::spend::ledger::Ledger;
use crate::providers::Provider;
use crate::providers::call::{Residency, Strict, Target};
use crate::support::config::{Config, ConfigError, RoutingConfig};
use crate::wire::error::ApiError;
use admission::Rejection;
use admission::budgets::Budget;
use admission::limits::{Limiter, RateHeaders};
use admission::policy::audit::AuditLog;
use admission::policy::gate::Gate;
use admission::policy::redact::Redactor;
use admission::policy::{DeploymentAttrs, KeyAttrs, PolicyEngine, PolicyError};
use admit::Admitted;
use context::Caller;
use request::Request;
use respond::{Answer, Streaming, Whole};
use routing::catalog::{Catalog, Deployment, ModelSpec};
use routing::dispatch::{Candidate, Committed, dispatch};
use settle::Ticket;

/// Everything one request needs, built once from the configuration.
#[derive(Debug)]
pub struct Pipeline {
    pub catalog: Catalog,
    pub limiter: Option<Arc<Limiter>>,
    /// Swapped whole when the store's budgets change.
    budgets: RwLock<Arc<[Budget]>>,
    pub ledger: Arc<Ledger>,
    /// The store, when `[store]` is set: the durable, shared ledger reports read.
    pub store: Option<Arc<crate::store::Store>>,
    pub metrics: Arc<Metrics>,
    routing: RoutingConfig,
    /// Record spend (only benchmarks turn it off, to measure its cost).
    accounting: bool,
    /// The data-residency policies; swapped whole when they are reloaded (SIGHUP).
    policy: RwLock<Option<Arc<PolicyEngine>>>,
    /// What a policy reload needs: the policy directory and the entities' attributes (the
    /// keys' change with the store).
    policy_source: Option<(PathBuf, RwLock<Vec<KeyAttrs>>, Vec<DeploymentAttrs>)>,
    /// What a price reload re-reads: the configuration, when it has a prices file.
    price_source: Option<Config>,
    audit: AuditLog,
    redactor: Redactor,
    draining: AtomicBool,
}

/// The parts a pipeline is built from (see `app::AppState::build`).
#[derive(Debug)]
pub struct Parts {
    pub store: Option<Arc<crate::store::Store>>,
    pub providers: HashMap<String, Arc<Provider>>,
    pub limiter: Option<Arc<Limiter>>,
    pub ledger: Ledger,
    pub policy: Option<(PathBuf, PolicyEngine)>,
    pub audit: AuditLog,
    pub redactor: Redactor,
}

/// The pipeline's answer to one request.
pub struct Handled {
    pub answer: Result<Answer, ApiError>,
    /// The caller's remaining limits: every response to the request carries them.
    pub rate_headers: RateHeaders,
    /// The provider that served strict functions without enforcing their schemas (it has no
    /// strict path), so the client can be told.
    pub strict_unenforced_by: Option<String>,
}

impl Pipeline {
    pub fn new(config: &Config, parts: Parts) -> Self {
        let policy_source = parts.policy.as_ref().map(|(dir, _)| {
            (
                dir.clone(),
                RwLock::new(admission::policy::key_attrs(config)),
                admission::policy::deployment_attrs(config),
            )
        });
        Self {
            catalog: Catalog::build(config, &parts.providers),
            limiter: parts.limiter,
            budgets: RwLock::new(
                config
                    .budgets
                    .iter()
                    .map(|b| Budget::from_config(b, &config.keys))
                    .collect(),
            ),
            ledger: Arc::new(parts.ledger),
            store: parts.store,
            metrics: Arc::new(Metrics::new()),
            routing: config.routing.clone(),
            accounting: config.server.accounting,
            policy: RwLock::new(parts.policy.map(|(_, engine)| Arc::new(engine))),
            policy_source,
            price_source: config.prices_file.is_some().then(|| config.clone()),
            audit: parts.audit,
            redactor: parts.redactor,
            draining: AtomicBool::new(false),
        }
    }

    /// Runs one request through every phase. A request the surface could not parse still gets
    /// its record.
    pub async fn run(&self, caller: &Caller, request: Result<Request, ApiError>) -> Handled {
        // The record's model becomes a metric label: only a served name, never the client's
        // string (which could grow the exposition without bound).
        let model: Arc<str> = match &request {
            Ok(r) => match self.catalog.get(&r.model) {
                Some(spec) => spec.name.clone(),
                None => "other".into(),
            },
            Err(_) => "-".into(),
        };
        let mut ticket = Ticket::new(Settlement::new(
            caller.principal.clone(),
            model,
            caller.request_id.clone(),
            self.accounting.then(|| self.metrics.clone()),
            self.accounting.then(|| self.ledger.clone()),
        ));
        let admitted = match request {
            Ok(request) => match admit::admit(self, caller, &request, &mut ticket).await {
                Ok(admitted) => Ok((request, admitted)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match admitted {
            Ok((request, admitted)) => {
                let served = self.serve(caller, &request, &admitted, ticket).await;
                let (answer, strict_unenforced_by) = match served {
                    Ok((answer, provider)) => {
                        let unenforced =
                            request.strict == Strict::Enforced && !provider.enforces_strict();
                        (Ok(answer), unenforced.then(|| provider.name.clone()))
                    }
                    Err(e) => (Err(e), None),
                };
                Handled {
                    answer,
                    rate_headers: admitted.rate_headers,
                    strict_unenforced_by,
                }
            }
            Err(error) => {
                ticket.settle(Outcome::from(&error));
                Handled {
                    answer: Err(error),
                    rate_headers: RateHeaders::default(),
                    strict_unenforced_by: None,
                }
            }
        }
    }

    /// Route, call, respond: the admitted request to the first deployment that answers (it
    /// comes back beside the answer).
    async fn serve(
        &self,
        caller: &Caller,
        request: &Request,
        admitted: &Admitted,
        mut ticket: Ticket,
    ) -> Result<(Answer, Arc<Provider>), ApiError> {
        let Admitted {
            model, mode, gate, ..
        } = admitted;
        let residencies: Vec<Option<Residency>> = model
            .deployments
            .iter()
            .map(|d| gate.as_ref().and_then(|g| g.residency(d.index)))
            .collect();
        let candidates = candidates(model, gate.as_ref(), &residencies);
        let order = routing::plan(candidates, &request.raw, &self.routing);
        ticket.record().upstream_started();
        let dispatched = dispatch(
            model,
            &order,
            &request.call(*mode),
            &self.routing,
            &self.metrics,
        )
        .await;
        let audit = |outcome, chosen| {
            if let Some(gate) = gate {
                let entry = gate.entry(&caller.principal, model, outcome, chosen);
                self.audit.append(&entry);
            }
        };
        let unanswered = match &dispatched {
            Ok(d) => &d.unanswered,
            Err(failed) => &failed.unanswered,
        };
        for call in unanswered {
            ticket
                .record()
                .unanswered(served(call.deployment, call.sent_at), call.attempt);
        }
        let dispatched = match dispatched {
            Ok(d) => d,
            Err(failed) => {
                audit("failed", None);
                match failed.answered {
                    Some(d) => ticket
                        .record()
                        .served(served(d, jiff::Timestamp::now()), failed.attempts),
                    None => ticket.record().attempted(failed.attempts),
                }
                ticket.settle(Outcome::from(&failed.error));
                return Err(failed.error);
            }
        };
        let deployment = dispatched.deployment;
        audit("routed", Some(deployment.index));
        ticket
            .record()
            .served(served(deployment, dispatched.sent_at), dispatched.attempts);
        let vault = gate
            .as_ref()
            .and_then(|g| g.reidentification(deployment.index));
        let answer = match dispatched.answer {
            Committed::Whole(reply) => Answer::Whole(Whole::settle(
                reply,
                model.clone(),
                vault.as_deref(),
                ticket,
            )),
            Committed::Stream { first, rest } => Answer::Stream(Streaming::new(
                (first, rest),
                model.clone(),
                deployment,
                vault,
                ticket,
            )),
        };
        Ok((answer, deployment.provider.clone()))
    }

    /// Counts a request admission refused.
    fn reject(&self, caller: &Caller, reason: Rejection) {
        let p = &caller.principal;
        self.metrics.rejection(&p.team, &p.key_id, reason.label());
    }

    /// The policies in force now (a reload swaps them between two requests, never during one).
    pub fn policy(&self) -> Option<Arc<PolicyEngine>> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Re-reads the policy directory; on any error the policies in force stay.
    pub fn reload_policy(&self) -> Result<(), PolicyError> {
        let Some((dir, keys, deployments)) = &self.policy_source else {
            return Ok(());
        };
        let engine = PolicyEngine::load(dir, &keys.read().expect("policy keys lock"), deployments)?;
        *self.policy.write().expect("policy lock") = Some(Arc::new(engine));
        Ok(())
    }

    /// The budgets in force.
    pub fn budgets(&self) -> Arc<[Budget]> {
        self.budgets.read().expect("budgets lock").clone()
    }

    /// Puts `budgets` in force (the store's changed).
    pub fn set_budgets(&self, budgets: Vec<Budget>) {
        *self.budgets.write().expect("budgets lock") = budgets.into();
    }

    /// The keys policies know changed (the store's): the policies are rebuilt with them, and
    /// kept as they were if they do not load.
    pub fn set_policy_keys(&self, keys: Vec<KeyAttrs>) -> Result<(), PolicyError> {
        let Some((_, current, _)) = &self.policy_source else {
            return Ok(());
        };
        // A refresh that changed no key leaves the policies alone (they reload on SIGHUP).
        if *current.read().expect("policy keys lock") == keys {
            return Ok(());
        }
        let previous = std::mem::replace(&mut *current.write().expect("policy keys lock"), keys);
        let reloaded = self.reload_policy();
        if reloaded.is_err() {
            *current.write().expect("policy keys lock") = previous;
        }
        reloaded
    }

    /// Re-reads the prices file and reprices every deployment; on any error (the file, or a
    /// price a deployment names that is gone) the prices in force stay. `Ok(false)`: there is
    /// no prices file.
    pub fn reload_prices(&self) -> Result<bool, ConfigError> {
        let Some(next) = self.price_source.as_ref().and_then(Config::reread_prices) else {
            return Ok(false);
        };
        let next = next?;
        let book = PriceBook::new(next.operator_prices());
        self.catalog.reprice(&book).map_err(ConfigError::Invalid)?;
        Ok(true)
    }

    /// Commits what the last requests queued (ledger and audit log) before the process goes.
    pub fn close(&self) {
        self.ledger.close();
        self.audit.close();
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The deployments the policies allow (never tried otherwise, not even as a fallback), each
/// with what its policy changed.
fn candidates<'a>(
    model: &'a ModelSpec,
    gate: Option<&'a Gate>,
    residencies: &'a [Option<Residency>],
) -> Vec<Candidate<'a>> {
    model
        .deployments
        .iter()
        .filter(|d| gate.is_none_or(|g| g.allows(d.index)))
        .map(|deployment| Candidate {
            deployment,
            target: Target {
                upstream_model: deployment.name.upstream_model(),
                redacted: gate.and_then(|g| g.redacted_fields(deployment.index)),
                residency: residencies[deployment.index].as_ref(),
            },
        })
        .collect()
}

fn served(deployment: &Deployment, sent_at: jiff::Timestamp) -> Served {
    Served {
        deployment: deployment.name.clone(),
        price: deployment.price.get(),
        provider_cost_is_truth: deployment.provider_cost_is_truth,
        sent_at,
        series: deployment.series.clone(),
    }
}
