//! `dsgw-affinity`: what prefix-cache affinity is worth. Replays a multi-turn workload through
//! dsgw to three equally weighted deployments, each a fake DeepSeek with its own prefix cache
//! (64-token units, as DeepSeek bills), once with affinity and once without, and reports the
//! cache-hit ratio of the prompt tokens and what the input would cost at V3.2 prices.
//!
//! Build with `cargo build --release --workspace --bins` first.

use std::path::PathBuf;

use bytes::Bytes;
use clap::Parser;
use dsgw_tests::fake::FakeUpstream;
use dsgw_tests::harness::{self, Gateway};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/dsgw")]
    dsgw: PathBuf,
    /// Conversations replayed, interleaved turn by turn.
    #[arg(long, default_value_t = 60)]
    conversations: usize,
    #[arg(long, default_value_t = 6)]
    turns: usize,
    /// Distinct system prompts (agents) the conversations share.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Words (fake tokens) each user turn adds, like a tool result or a pasted file.
    #[arg(long, default_value_t = 150)]
    turn_words: usize,
}

/// V3.2's USD per million input tokens.
const HIT_PRICE: f64 = 0.028;
const MISS_PRICE: f64 = 0.28;

struct Totals {
    prompt: u64,
    hit: u64,
}

async fn replay(args: &Args, affinity: bool) -> Totals {
    let fakes = [
        FakeUpstream::start(None).await,
        FakeUpstream::start(None).await,
        FakeUpstream::start(None).await,
    ];
    let mut config = harness::config(&fakes[0].base_url(), "");
    for (i, fake) in fakes.iter().enumerate() {
        config.push_str(&format!(
            "\n[[providers]]\nname = \"p{i}\"\nkind = \"deepseek\"\nbase_url = \"{}\"\n",
            fake.base_url()
        ));
    }
    config.push_str(&format!(
        "\n[[models]]\nname = \"trio\"\ndeployments = [{}]\n\n[routing]\naffinity = {affinity}\n",
        (0..3)
            .map(|i| format!("{{ provider = \"p{i}\", model = \"deepseek-chat\", priority = 0 }}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let gw = Gateway::start(&args.dsgw, &config, &harness::env());
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let agents: Vec<String> = (0..args.agents)
        .map(|a| format!("You are agent {a}. ") + &"Follow the house rules carefully. ".repeat(60))
        .collect();
    let mut conversations: Vec<Vec<Value>> = (0..args.conversations)
        .map(|c| {
            vec![
                json!({"role": "system", "content": agents[c % args.agents]}),
                json!({"role": "user", "content": format!("Task {c}: {}", "details of the task ".repeat(20))}),
            ]
        })
        .collect();
    let mut totals = Totals { prompt: 0, hit: 0 };
    for turn in 0..args.turns {
        for messages in conversations.iter_mut() {
            let body = json!({"model": "trio", "messages": messages}).to_string();
            let request = http::Request::post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-alice")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let response = http.request(request).await.expect("gateway answers");
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).expect("JSON");
            let usage = &v["usage"];
            totals.prompt += usage["prompt_tokens"].as_u64().expect("usage");
            totals.hit += usage["prompt_cache_hit_tokens"].as_u64().expect("usage");
            messages.push(v["choices"][0]["message"].clone());
            let observation: Vec<String> = (0..args.turn_words)
                .map(|w| format!("t{turn}w{w}"))
                .collect();
            messages.push(json!({"role": "user", "content": format!("Result of step {turn}: {}", observation.join(" "))}));
        }
    }
    totals
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    println!(
        "{} conversations x {} turns ({} words added per turn), {} shared system prompts, 3 deployments of equal weight\n",
        args.conversations, args.turns, args.turn_words, args.agents
    );
    println!("| affinity | prompt tokens | cache-hit tokens | hit ratio | input cost (USD) |");
    println!("|---|---|---|---|---|");
    let mut costs = Vec::new();
    for affinity in [false, true] {
        let t = replay(&args, affinity).await;
        let miss = t.prompt - t.hit;
        let cost = (t.hit as f64 * HIT_PRICE + miss as f64 * MISS_PRICE) / 1e6;
        costs.push(cost);
        println!(
            "| {} | {} | {} | {:.1}% | {:.5} |",
            if affinity { "on" } else { "off" },
            t.prompt,
            t.hit,
            100.0 * t.hit as f64 / t.prompt as f64,
            cost
        );
    }
    println!(
        "\ninput cost with affinity: {:.0}% of without",
        100.0 * costs[1] / costs[0]
    );
}
