//! The generation service on a tiny random model with the real V3.2 tokenizer.

use std::sync::OnceLock;

use dsgw_engine::backend::cpu::Cpu;
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::generate::{
    Constraint, Engine, EngineError, EngineOptions, Event, FinishReason, GenerationRequest,
    GenerationUsage, SamplingParams,
};
use dsgw_engine::model::Model;
use dsgw_engine::tokenizer::Tokenizer;
use dsgw_engine::tooling::tiny::{TinySpec, write_model};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| start("shared"))
}

fn start(name: &str) -> Engine {
    let dir = std::env::temp_dir().join(format!(
        "dsgw-engine-generate-{name}-{}",
        std::process::id()
    ));
    let spec = TinySpec {
        hidden_size: 32,
        max_position_embeddings: 1024,
        ..TinySpec::tiny(129_280)
    };
    write_model(&dir, &spec, 3).unwrap();
    let model = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Engine::start(
        model,
        std::sync::Arc::new(Tokenizer::deepseek_v32().unwrap()),
        EngineOptions::default(),
    )
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

fn run(prompt: &[u32], params: SamplingParams) -> (String, FinishReason, GenerationUsage) {
    let mut rx = engine()
        .submit(GenerationRequest {
            prompt: prompt.to_vec(),
            params,
        })
        .unwrap();
    let mut text = String::new();
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Finished { reason, usage } => return (text, reason, usage),
        }
    }
    panic!("the engine dropped the request");
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7919 + salt) % 120_000 + 100)
        .collect()
}

#[test]
fn greedy_generation_is_deterministic_and_bounded() {
    let p = prompt(20, 1);
    let (a, reason, usage) = run(&p, greedy(12));
    let (b, _, _) = run(&p, greedy(12));
    assert_eq!(a, b);
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage.completion_tokens, 12);
    assert_eq!(usage.prompt_tokens, 20);
}

#[test]
fn seeded_sampling_reproduces() {
    let p = prompt(10, 2);
    let params = SamplingParams {
        seed: Some(9),
        temperature: 0.8,
        top_p: 0.95,
        max_tokens: 10,
        ..SamplingParams::default()
    };
    assert_eq!(run(&p, params.clone()).0, run(&p, params).0);
}

#[test]
fn a_repeated_prompt_reuses_whole_blocks_and_answers_the_same() {
    let p = prompt(200, 3);
    let (first, _, u1) = run(&p, greedy(8));
    let (second, _, u2) = run(&p, greedy(8));
    assert_eq!(u1.cached_tokens, 0);
    assert_eq!(
        u2.cached_tokens, 192,
        "three 64-token blocks, leaving the last token to compute"
    );
    assert_eq!(first, second, "reused KV must give the same result");

    // A prompt sharing only its first 130 tokens reuses two blocks.
    let mut other = p[..130].to_vec();
    other.extend(prompt(40, 99));
    let (_, _, u3) = run(&other, greedy(2));
    assert_eq!(u3.cached_tokens, 128);
}

#[test]
fn concurrent_requests_decode_together_and_match_running_alone() {
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| prompt(15 + i * 4, 50 + i as u32)).collect();
    let alone: Vec<String> = prompts.iter().map(|p| run(p, greedy(10)).0).collect();
    let receivers: Vec<_> = prompts
        .iter()
        .map(|p| {
            engine()
                .submit(GenerationRequest {
                    prompt: p.clone(),
                    params: greedy(10),
                })
                .unwrap()
        })
        .collect();
    for (mut rx, expected) in receivers.into_iter().zip(alone) {
        let mut text = String::new();
        while let Some(event) = rx.blocking_recv() {
            if let Event::Text(t) = event {
                text.push_str(&t);
            }
        }
        assert_eq!(text, expected);
    }
}

#[test]
fn stop_strings_end_generation_before_them() {
    let p = prompt(12, 4);
    let (full, _, _) = run(&p, greedy(24));
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 8, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let (cut, reason, _) = run(
        &p,
        SamplingParams {
            stop: vec![stop.clone()],
            ..greedy(24)
        },
    );
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(cut, full[..full.find(&stop).unwrap()]);
}

#[test]
fn a_prompt_over_the_context_is_refused_with_deepseeks_message() {
    let err = engine()
        .submit(GenerationRequest {
            prompt: prompt(1000, 5),
            params: greedy(100),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::TooLong {
            limit: 1024,
            total: 1100,
            ..
        }
    ));
    assert!(
        err.to_string()
            .starts_with("This model's maximum context length is 1024 tokens.")
    );
}

#[test]
fn a_stopped_engine_ends_its_sequences_and_refuses_new_ones() {
    let engine = start("stopped");
    let mut running = engine
        .submit(GenerationRequest {
            prompt: prompt(10, 8),
            params: greedy(1000),
        })
        .unwrap();
    assert!(matches!(running.blocking_recv(), Some(Event::Text(_))));
    engine.stop();
    // The channel closes without a Finished event, as if the engine had crashed.
    while let Some(event) = running.blocking_recv() {
        assert!(matches!(event, Event::Text(_)), "{event:?}");
    }
    // A submission after the thread has gone is refused; one that raced it is dropped unanswered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match engine.submit(GenerationRequest {
            prompt: prompt(10, 9),
            params: greedy(3),
        }) {
            Err(e) => {
                assert_eq!(e, EngineError::Stopped);
                break;
            }
            Ok(mut rx) => assert!(rx.blocking_recv().is_none()),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never stopped"
        );
    }
}

#[test]
fn a_dropped_receiver_cancels_without_disturbing_others() {
    let rx = engine()
        .submit(GenerationRequest {
            prompt: prompt(10, 6),
            params: greedy(500),
        })
        .unwrap();
    drop(rx);
    let (_, reason, _) = run(&prompt(10, 7), greedy(3));
    assert_eq!(reason, FinishReason::Length);
}

#[test]
fn json_mode_makes_a_random_model_answer_a_json_object() {
    // Random weights would never write JSON on their own: every answer here is the constraint's.
    for seed in 0..6 {
        let params = SamplingParams {
            seed: Some(seed),
            temperature: 1.0,
            max_tokens: 60,
            constraint: Constraint::JsonObject,
            ..SamplingParams::default()
        };
        let (text, reason, usage) = run(&prompt(12, seed as u32), params);
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {text:?}"));
        assert!(value.is_object(), "{text}");
        assert_eq!(reason, FinishReason::Stop, "{text}");
        assert!(usage.completion_tokens <= 60);
    }
    // Even a budget too small for a free answer closes the object.
    let params = SamplingParams {
        seed: Some(1),
        max_tokens: 4,
        constraint: Constraint::JsonObject,
        ..SamplingParams::default()
    };
    let (text, _, _) = run(&prompt(12, 1), params);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "{text:?}"
    );
}

#[test]
fn token_bytes_undo_the_byte_level_encoding() {
    let t = Tokenizer::deepseek_v32().unwrap();
    let table = t.token_bytes();
    assert_eq!(table.len(), t.vocab_size());
    for text in ["{\"name\": \"Zoë\", \"n\": 12}", " hello\n\tworld"] {
        let ids = t.encode(text).unwrap();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| table[id as usize].as_deref().unwrap().to_vec())
            .collect();
        assert_eq!(bytes, text.as_bytes());
    }
    assert!(
        table[t.eos() as usize].is_none(),
        "special tokens have no bytes"
    );
}
