//! Properties of the engine on generated models: prefill and token-by-token decode agree, and the
//! lightning indexer really restricts attention when the context exceeds `index_topk`.

use dsgw_engine::backend::Backend;
use dsgw_engine::backend::cpu::{Cpu, CpuBf16};
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::model::{Logits, Model};
use dsgw_engine::tooling::tiny::{TinySpec, write_model};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dsgw-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn spec() -> TinySpec {
    TinySpec {
        index_topk: 4,
        ..TinySpec::tiny(256)
    }
}

#[test]
fn prefill_logits_equal_token_by_token_decode() {
    let dir = temp_dir("decode");
    write_model(&dir, &spec(), 7).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    prefill_equals_decode(Model::load(&ckpt, Cpu).unwrap());
    // bf16 weights (activations rounded per product): each row still computes alone.
    prefill_equals_decode(Model::load(&ckpt, CpuBf16).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn prefill_equals_decode<B: Backend>(model: Model<B>) {
    // Long enough to cross KV-cache blocks (64 tokens) during the prefill and during decode.
    let tokens: Vec<u32> = (0..150).map(|i| (i * 37 + 5) % 256).collect();
    let vocab = model.config.vocab_size;

    let mut cache = model.new_cache();
    let prefill = model.forward(&tokens, &mut cache, Logits::All);
    assert_eq!(prefill.len(), tokens.len() * vocab);
    assert_eq!(cache.len(), tokens.len());

    // Decode after a 70-token prefill, one token at a time.
    let mut cache = model.new_cache();
    let first = model.forward(&tokens[..70], &mut cache, Logits::Last);
    let mut worst = max_diff(&first, &prefill[69 * vocab..70 * vocab]);
    for (t, &token) in tokens.iter().enumerate().skip(70) {
        let step = model.forward(&[token], &mut cache, Logits::Last);
        worst = worst.max(max_diff(&step, &prefill[t * vocab..(t + 1) * vocab]));
    }
    let name = model.backend().name();
    assert!(worst < 1e-4, "{name}: prefill and decode differ by {worst}");
    assert!(prefill.iter().all(|v| v.is_finite()), "{name}");
}

#[test]
fn indexer_keeps_top_k_positions_once_the_context_is_longer() {
    let dir = temp_dir("dsa");
    write_model(&dir, &spec(), 11).unwrap();
    let model = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 53 + 3) % 256).collect();
    let mut cache = model.new_cache();
    let (_, traces) = model.forward_traced(&tokens, &mut cache, Logits::All);
    assert_eq!(traces.len(), 3);
    for layer in &traces {
        let selected = layer.as_ref().expect("deepseek_v32 runs the indexer");
        for (t, positions) in selected.iter().enumerate() {
            assert_eq!(positions.len(), (t + 1).min(4), "query {t}");
            assert!(positions.iter().all(|&s| s as usize <= t), "causal");
        }
    }
    // Sparse attention changes the result relative to dense attention over the same weights.
    let mut dense_spec = spec();
    dense_spec.index_topk = 64;
    let dense_dir = temp_dir("dense");
    write_model(&dense_dir, &dense_spec, 11).unwrap();
    let dense = Model::load(&Checkpoint::open(&dense_dir).unwrap(), Cpu).unwrap();
    let sparse_logits = model.forward(&tokens, &mut model.new_cache(), Logits::Last);
    let dense_logits = dense.forward(&tokens, &mut dense.new_cache(), Logits::Last);
    assert!(max_diff(&sparse_logits, &dense_logits) > 1e-3);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dense_dir).unwrap();
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let dir = temp_dir("errors");
    write_model(&dir, &spec(), 1).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["hidden_size"] = serde_json::json!(48);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has shape") && err.contains("expected"),
        "{err}"
    );

    config["hidden_size"] = serde_json::json!(64);
    config["num_hidden_layers"] = serde_json::json!(4);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.3") && err.contains("missing"),
        "{err}"
    );

    config["model_type"] = serde_json::json!("llama");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(err.contains("model_type") && err.contains("llama"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batched_decode_equals_each_sequence_alone() {
    use dsgw_engine::model::Segment;
    let dir = temp_dir("batch");
    write_model(&dir, &spec(), 5).unwrap();
    let model = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu).unwrap();
    // `a` ends past a KV-cache block boundary (64 tokens), `b` inside its first block.
    let a: Vec<u32> = (0..130).map(|i| (i * 31 + 2) % 256).collect();
    let b: Vec<u32> = (0..6).map(|i| (i * 17 + 9) % 256).collect();
    let alone_a = model.forward(&a, &mut model.new_cache(), Logits::Last);
    let alone_b = model.forward(&b, &mut model.new_cache(), Logits::Last);

    // Prefill `a` but its last ten tokens (which cross into a third block) and `b` but its
    // last, then run the rest of both together.
    let (mut ca, mut cb) = (model.new_cache(), model.new_cache());
    model.forward(&a[..120], &mut ca, Logits::Last);
    model.forward(&b[..5], &mut cb, Logits::Last);
    let together = model.forward_batch(
        &mut [
            Segment {
                cache: &mut ca,
                tokens: &a[120..],
            },
            Segment {
                cache: &mut cb,
                tokens: &b[5..],
            },
        ],
        Logits::Last,
    );
    let vocab = model.config.vocab_size;
    assert!(max_diff(&together[..vocab], &alone_a) < 1e-4);
    assert!(max_diff(&together[vocab..], &alone_b) < 1e-4);
    assert_eq!((ca.len(), cb.len()), (130, 6));
    std::fs::remove_dir_all(&dir).unwrap();
}
