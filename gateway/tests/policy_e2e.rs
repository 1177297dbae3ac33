//! Data-residency policies end to end: three fake upstreams labelled as different places (a
//! remote one in "cn", a remote OpenRouter in "eu", an on-prem vLLM), every shipped policy set,
//! every classification and two keys. A forbidden upstream never receives a byte of the prompt,
//! personal data is redacted before it leaves (and restored for the caller), and each decision
//! has its audit line.

use std::path::Path;

use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use serde_json::{Value, json};

const SETS: [&str; 4] = [
    "onprem-only",
    "confidential-onprem",
    "no-cn-without-optin",
    "redact-before-remote",
];
const CLASSES: [&str; 4] = ["public", "internal", "confidential", "restricted"];
/// In the order the model lists them.
const PLACES: [&str; 3] = ["cn", "eu", "onprem"];

struct Upstreams {
    cn: FakeUpstream,
    eu: FakeUpstream,
    onprem: FakeUpstream,
}

impl Upstreams {
    fn get(&self, place: &str) -> &FakeUpstream {
        match place {
            "cn" => &self.cn,
            "eu" => &self.eu,
            _ => &self.onprem,
        }
    }
}

fn config(set: &str, u: &Upstreams, audit: &Path) -> String {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/examples")
        .join(set);
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[ledger]
path = ""

[policy]
dir = "{policies}"
audit_log = "{audit}"

[[providers]]
name = "cn"
kind = "deepseek"
base_url = "{cn}"
region = "cn"

[[providers]]
name = "eu"
kind = "openrouter"
base_url = "{eu}/openrouter/api/v1"
region = "eu"
zero_retention = true

[[providers]]
name = "onprem"
kind = "openai"
base_url = "{onprem}/openai/v1"
region = "dc1"
onprem = true

[[models]]
name = "m"
deployments = [{{ provider = "cn", model = "deepseek-chat" }}, {{ provider = "eu", model = "deepseek/deepseek-v3.2" }}, {{ provider = "onprem", model = "deepseek-ai/DeepSeek-V3.2" }}]

[[models]]
name = "m-eu"
deployments = [{{ provider = "eu", model = "deepseek/deepseek-v3.2" }}]

[[keys]]
id = "alice"
team = "research"
key_env = "ALICE_KEY"

[[keys]]
id = "bob"
team = "ops"
key_env = "BOB_KEY"
opt_ins = ["region:cn"]
default_classification = "confidential"
"#,
        policies = policies.display(),
        audit = audit.display(),
        cn = u.cn.base_url(),
        eu = u.eu.base_url(),
        onprem = u.onprem.base_url(),
    )
}

/// What each shipped set means, written out independently of Cedar.
fn allowed(set: &str, key: &str, class: &str, place: &str) -> bool {
    let level = CLASSES.iter().position(|c| *c == class).unwrap();
    match set {
        "onprem-only" => place == "onprem",
        "confidential-onprem" => level < 2 || place == "onprem",
        "no-cn-without-optin" => place != "cn" || key == "bob",
        "redact-before-remote" => true,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_upstreams_never_see_the_prompt_and_every_decision_is_audited() {
    dsgw::providers::install_tls();
    let u = Upstreams {
        cn: FakeUpstream::start(None).await,
        eu: FakeUpstream::start(None).await,
        onprem: FakeUpstream::start(None).await,
    };
    let http = reqwest::Client::new();
    let mut n = 0;
    for set in SETS {
        let audit =
            std::env::temp_dir().join(format!("dsgw-audit-{}-{set}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&audit);
        let mut gw = Gateway::start(
            Path::new(env!("CARGO_BIN_EXE_dsgw")),
            &config(set, &u, &audit),
            &[("ALICE_KEY", "sk-alice"), ("BOB_KEY", "sk-bob")],
        );
        let mut expected_audit = Vec::new();
        for key in ["alice", "bob"] {
            for class in CLASSES {
                for stream in [false, true] {
                    n += 1;
                    let marker = format!("marker{n}x");
                    let prompt = format!("__echo__ {marker} write to jane.doe@example.com");
                    let r = http
                        .post(gw.url("/v1/chat/completions"))
                        .bearer_auth(format!("sk-{key}"))
                        .header("x-data-classification", class)
                        .json(&json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": prompt}]}))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let request_id = r
                        .headers()
                        .get("x-dsgw-request-id")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let text = r.text().await.unwrap();
                    let case = format!("{set} / {key} / {class} / stream {stream}");
                    let chosen = PLACES.into_iter().find(|p| allowed(set, key, class, p));
                    for place in PLACES {
                        if Some(place) != chosen {
                            assert!(
                                !u.get(place).saw(&marker),
                                "{case}: {place} received the prompt"
                            );
                        }
                    }
                    let Some(place) = chosen else {
                        assert_eq!(status, 403, "{case}: {text}");
                        let v: Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(v["error"]["code"], "policy_denied", "{case}");
                        assert!(
                            v["error"]["message"]
                                .as_str()
                                .unwrap()
                                .contains("forbidden by"),
                            "{case}: the policy is named: {text}"
                        );
                        expected_audit.push((request_id, "refused", None));
                        continue;
                    };
                    assert_eq!(status, 200, "{case}: {text}");
                    let sent = u.get(place).bodies_with(&marker);
                    assert_eq!(sent.len(), 1, "{case}: {place} served it once");
                    let redacted = set == "redact-before-remote" && place != "onprem";
                    assert_eq!(
                        sent[0].contains("jane.doe@example.com"),
                        !redacted,
                        "{case}: redaction before the bytes leave: {}",
                        sent[0]
                    );
                    if redacted {
                        assert!(sent[0].contains("[EMAIL_"), "{case}");
                    }
                    // The caller gets its own data back, never a placeholder.
                    assert!(text.contains("jane.doe@example.com"), "{case}: {text}");
                    assert!(!text.contains("[EMAIL_"), "{case}: {text}");
                    expected_audit.push((request_id, "routed", Some(place)));
                }
            }
        }
        if set == "redact-before-remote" {
            // On OpenRouter the policy's provider preferences travel with the request.
            let r = http
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth("sk-alice")
                .json(&json!({"model": "m-eu", "messages": [{"role": "user", "content": "__echo__ eu-marker mail ops@corp.example"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains("ops@corp.example"));
            let sent: Value = serde_json::from_str(&u.eu.bodies_with("eu-marker")[0]).unwrap();
            assert_eq!(
                sent["provider"],
                json!({"data_collection": "deny", "zdr": true}),
                "{sent}"
            );
            assert!(!sent.to_string().contains("ops@corp"));
            expected_audit.push((None, "routed", Some("eu")));

            // Fill in the middle is redacted too: prompt and suffix.
            let r = http
                .post(gw.url("/beta/completions"))
                .bearer_auth("sk-alice")
                .json(&json!({"model": "m", "prompt": "fim-marker mail jane.doe@example.com", "suffix": "10.0.0.7 end"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let answer: Value = r.json().await.unwrap();
            assert_eq!(
                answer["choices"][0]["text"], "filled jane.doe@example.com to 10.0.0.7",
                "re-identified for the caller"
            );
            let sent = &u.cn.bodies_with("fim-marker")[0];
            assert!(
                !sent.contains("jane.doe") && !sent.contains("10.0.0.7"),
                "{sent}"
            );
            expected_audit.push((None, "routed", Some("cn")));
            let streamed = http
                .post(gw.url("/beta/completions"))
                .bearer_auth("sk-alice")
                .json(&json!({"model": "m", "stream": true, "prompt": "fim-stream mail jane.doe@example.com", "suffix": "10.0.0.7 end"}))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let text: String = streamed
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(
                text, "filled jane.doe@example.com to 10.0.0.7",
                "{streamed}"
            );
            expected_audit.push((None, "routed", Some("cn")));
        }
        // Classification comes from the key when the header is absent; a bad header is a 400.
        let r = http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-bob")
            .header("x-data-classification", "secret")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Durable before the process goes: a SIGTERM drains, and the audit writer flushes.
        gw.terminate();
        assert!(gw.wait_exit(std::time::Duration::from_secs(10)));
        let lines: Vec<Value> = std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            expected_audit.len(),
            "{set}: one line per decision"
        );
        for (line, (request_id, outcome, chosen)) in lines.iter().zip(&expected_audit) {
            assert_eq!(
                line["request_id"].as_str(),
                request_id.as_deref().or(line["request_id"].as_str())
            );
            assert_eq!(line["outcome"], *outcome, "{set}: {line}");
            let chosen_id = line["chosen"]
                .as_str()
                .map(|c| c.split('/').nth(1).unwrap().to_owned());
            assert_eq!(chosen_id.as_deref(), *chosen, "{set}: {line}");
            assert!(!line["candidates"].as_array().unwrap().is_empty());
            assert!(
                !line.to_string().contains("jane.doe"),
                "no prompt in the audit log"
            );
            assert!(
                !line.to_string().contains("marker"),
                "no prompt in the audit log"
            );
        }
        let _ = std::fs::remove_file(&audit);
    }
}

#[test]
fn policy_check_runs_every_shipped_set_and_refuses_a_broken_one() {
    let bin = Path::new(env!("CARGO_BIN_EXE_dsgw"));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let dirs: Vec<_> = SETS.iter().map(|s| examples.join(s)).collect();
    let out = std::process::Command::new(bin)
        .args(["policy", "check"])
        .args(&dirs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("cases pass").count(), 4, "{text}");

    let broken = std::env::temp_dir().join(format!("dsgw-broken-policy-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("p.cedar"),
        "@id(\"p\")\npermit (principal, action, resource) when { context.level > \"high\" };\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["policy", "check"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not validate"));
    std::fs::remove_dir_all(&broken).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_deciding_policies() {
    let u = Upstreams {
        cn: FakeUpstream::start(None).await,
        eu: FakeUpstream::start(None).await,
        onprem: FakeUpstream::start(None).await,
    };
    let audit = std::env::temp_dir().join("dsgw-explain-audit.jsonl");
    let path = std::env::temp_dir().join(format!("dsgw-explain-{}.toml", std::process::id()));
    std::fs::write(&path, config("confidential-onprem", &u, &audit)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["policy", "explain", "--config"])
        .arg(&path)
        .args([
            "--key",
            "alice",
            "--classification",
            "confidential",
            "--model",
            "m",
        ])
        .env("ALICE_KEY", "x")
        .env("BOB_KEY", "y")
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "DENY  m/cn/deepseek-chat [remote, region cn]: forbidden by confidential-stays-onprem"
        ),
        "{text}"
    );
    assert!(text.contains("ALLOW m/onprem/deepseek-ai/DeepSeek-V3.2 [onprem, region dc1]: permitted by default-allow"), "{text}");
    let _ = harness::env();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_policies_and_keeps_them_when_the_new_ones_are_broken() {
    let u = Upstreams {
        cn: FakeUpstream::start(None).await,
        eu: FakeUpstream::start(None).await,
        onprem: FakeUpstream::start(None).await,
    };
    let dir = std::env::temp_dir().join(format!("dsgw-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let install = |set: &str| {
        std::fs::copy(
            examples.join(set).join("policies.cedar"),
            dir.join("policies.cedar"),
        )
        .unwrap();
    };
    install("no-cn-without-optin");
    let audit = dir.join("audit.jsonl");
    let text = config("no-cn-without-optin", &u, &audit).replace(
        &examples.join("no-cn-without-optin").display().to_string(),
        &dir.display().to_string(),
    );
    let gw = Gateway::start(
        Path::new(env!("CARGO_BIN_EXE_dsgw")),
        &text,
        &[("ALICE_KEY", "sk-alice"), ("BOB_KEY", "sk-bob")],
    );
    let http = reqwest::Client::new();
    let status = || async {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-bob")
            .json(&json!({"model": "m-eu", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status()
            .unwrap()
    };
    assert_eq!(status().await, 200, "eu is allowed");
    install("onprem-only");
    assert!(hup().success());
    assert!(gw.wait_for_log("policies reloaded", std::time::Duration::from_secs(5)));
    assert_eq!(status().await, 403, "the new policies hold");
    std::fs::write(
        dir.join("policies.cedar"),
        "@id(\"x\") permit (principal, action, resource) when { resource.nope };",
    )
    .unwrap();
    assert!(hup().success());
    assert!(gw.wait_for_log("policy reload refused", std::time::Duration::from_secs(5)));
    assert_eq!(status().await, 403, "the last good policies stay");
    drop(gw);
    std::fs::remove_dir_all(&dir).unwrap();
}
