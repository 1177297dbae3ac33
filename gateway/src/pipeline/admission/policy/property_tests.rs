//! Random policy sets against an oracle: rules are drawn from a small grammar, rendered to Cedar,
//! and also evaluated directly in Rust; for random keys, deployments and requests the engine must
//! allow exactly what the oracle allows (forbid over permit, deny by default), so the router,
//! which only ever tries allowed deployments, never reaches a forbidden one.

use std::path::PathBuf;

use proptest::prelude::*;

use super::{Classification, DeploymentAttrs, KeyAttrs, PolicyEngine, RequestFacts};

const REGIONS: [&str; 3] = ["cn", "eu", "us"];

#[derive(Debug, Clone)]
struct Rule {
    permit: bool,
    region: Option<usize>,
    min_level: Option<i64>,
    onprem: Option<bool>,
    personal: Option<bool>,
    unless_opt_in: Option<usize>,
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        proptest::option::of(0..3usize),
        proptest::option::of(0..4i64),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..3usize),
    )
        .prop_map(
            |(permit, region, min_level, onprem, personal, unless_opt_in)| Rule {
                permit,
                region,
                min_level,
                onprem,
                personal,
                unless_opt_in,
            },
        )
}

impl Rule {
    fn cedar(&self, i: usize) -> String {
        let mut when = vec!["true".to_owned()];
        if let Some(r) = self.region {
            when.push(format!("resource.region == \"{}\"", REGIONS[r]));
        }
        if let Some(l) = self.min_level {
            when.push(format!("context.level >= {l}"));
        }
        if let Some(o) = self.onprem {
            when.push(format!(
                "resource.kind == \"{}\"",
                if o { "onprem" } else { "remote" }
            ));
        }
        if let Some(p) = self.personal {
            when.push(format!("context.personal_data == {p}"));
        }
        let unless = self.unless_opt_in.map_or(String::new(), |r| {
            format!(
                " unless {{ principal.opt_ins.contains(\"region:{}\") }}",
                REGIONS[r]
            )
        });
        format!(
            "@id(\"r{i}\")\n{} (principal, action == Dsgw::Action::\"route\", resource) when {{ {} }}{unless};\n",
            if self.permit { "permit" } else { "forbid" },
            when.join(" && ")
        )
    }

    fn matches(&self, key: &KeyAttrs, d: &DeploymentAttrs, facts: &RequestFacts<'_>) -> bool {
        self.region.is_none_or(|r| d.region == REGIONS[r])
            && self
                .min_level
                .is_none_or(|l| facts.classification.level() >= l)
            && self.onprem.is_none_or(|o| d.onprem == o)
            && self.personal.is_none_or(|p| facts.personal_data == p)
            && self
                .unless_opt_in
                .is_none_or(|r| !key.opt_ins.contains(&format!("region:{}", REGIONS[r])))
    }
}

fn oracle(rules: &[Rule], key: &KeyAttrs, d: &DeploymentAttrs, facts: &RequestFacts<'_>) -> bool {
    let hits = |permit: bool| {
        rules
            .iter()
            .any(|r| r.permit == permit && r.matches(key, d, facts))
    };
    hits(true) && !hits(false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_allows_exactly_what_the_rules_say(
        rules in proptest::collection::vec(rule(), 1..6),
        opt_ins in proptest::collection::vec(0..3usize, 0..3),
        deployments in proptest::collection::vec((0..3usize, any::<bool>()), 1..6),
        requests in proptest::collection::vec((0..4usize, any::<bool>()), 1..6),
    ) {
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "dsgw-prop-{}-{}",
            std::process::id(),
            crate::support::random::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = rules.iter().enumerate().map(|(i, r)| r.cedar(i)).collect();
        std::fs::write(dir.join("p.cedar"), &text).unwrap();
        let key = KeyAttrs {
            id: "k".into(),
            team: "t".into(),
            clearance: Classification::Restricted,
            opt_ins: opt_ins.iter().map(|r| format!("region:{}", REGIONS[*r])).collect(),
            default_classification: Classification::Internal,
        };
        let deployments: Vec<DeploymentAttrs> = deployments
            .iter()
            .enumerate()
            .map(|(i, (region, onprem))| DeploymentAttrs {
                id: format!("m/p{i}/x"),
                model: "m".into(),
                provider: format!("p{i}"),
                provider_kind: "deepseek".into(),
                onprem: *onprem,
                region: REGIONS[*region].into(),
                ..DeploymentAttrs::default()
            })
            .collect();
        let engine = PolicyEngine::load(&dir, std::slice::from_ref(&key), &deployments);
        std::fs::remove_dir_all(&dir).unwrap();
        let engine = engine.unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (class, personal) in requests {
            let facts = RequestFacts {
                classification: Classification::ALL[class],
                model: "m",
                personal_data: personal,
            };
            for d in &deployments {
                let verdict = engine.decide("k", &d.id, facts);
                prop_assert_eq!(&verdict.error, &None);
                prop_assert_eq!(
                    verdict.allowed,
                    oracle(&rules, &key, d, &facts),
                    "{} {:?} {:?}\n{}", d.id, d, facts, text
                );
            }
        }
    }
}
