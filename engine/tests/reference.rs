//! The engine against an implementation someone else wrote: Apple's mlx-lm (`deepseek_v32`,
//! `deepseek_v3`), run on tiny random checkpoints by `engine/reference/make_fixtures.py`. The
//! fixtures it produced are committed; each must match to 1e-4 in f32.

use std::path::{Path, PathBuf};

use dsgw_engine::backend::cpu::Cpu;
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::model::{Logits, Model};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Fixture {
    model: Model<Cpu>,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    dir: PathBuf,
}

fn load(name: &str) -> Fixture {
    let dir = fixtures().join(name);
    assert!(
        dir.is_dir(),
        "fixture {} is missing: run engine/reference/make_fixtures.py",
        dir.display()
    );
    let model = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu).unwrap();
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
    let tokens = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let bytes = std::fs::read(dir.join("logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("logits").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    let logits = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Fixture {
        model,
        tokens,
        logits,
        dir,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_logits(name: &str) -> Fixture {
    let f = load(name);
    let ours = f
        .model
        .forward(&f.tokens, &mut f.model.new_cache(), Logits::All);
    let err = max_abs_diff(&ours, &f.logits);
    assert!(err < 1e-4, "{name}: max abs error {err} against mlx-lm");
    f
}

#[test]
fn deepseek_v32_matches_mlx_lm_with_sparse_attention_active() {
    let f = check_logits("tiny_v32");
    let ix = f
        .model
        .config
        .indexer
        .as_ref()
        .expect("deepseek_v32 has an indexer");
    assert!(ix.topk < f.tokens.len(), "the fixture must exercise DSA");
    let moe = f.model.config.moe.as_ref().unwrap();
    assert!(
        moe.n_group > 1 && moe.topk_group < moe.n_group,
        "several expert groups"
    );
}

#[test]
fn a_longer_sequence_with_topk_far_below_it_matches_mlx_lm() {
    let f = check_logits("tiny_v32_long");
    assert!(f.model.config.indexer.as_ref().unwrap().topk * 4 < f.tokens.len());
}

#[test]
fn indexer_selects_the_positions_mlx_lm_selects() {
    for name in ["tiny_v32", "tiny_v32_long"] {
        let f = load(name);
        let expected: Vec<Vec<Vec<u32>>> = serde_json::from_str(
            &std::fs::read_to_string(f.dir.join("indexer_topk.json")).unwrap(),
        )
        .unwrap();
        let (_, traces) = f
            .model
            .forward_traced(&f.tokens, &mut f.model.new_cache(), Logits::All);
        assert_eq!(traces.len(), expected.len());
        for (layer, (ours, theirs)) in traces.iter().zip(&expected).enumerate() {
            assert_eq!(ours.as_ref().unwrap(), theirs, "{name} layer {layer}");
        }
    }
}

#[test]
fn fp8_checkpoint_matches_its_dequantised_reference() {
    let f = check_logits("tiny_v32_fp8");
    assert!(f.model.config.fp8_block.is_some());
}

#[test]
fn deepseek_v3_without_indexer_matches_mlx_lm() {
    let f = check_logits("tiny_v3");
    assert!(f.model.config.indexer.is_none());
}

#[test]
fn every_fixture_decodes_token_by_token_like_its_prefill() {
    for name in ["tiny_v32", "tiny_v3", "tiny_v32_long"] {
        let f = load(name);
        let vocab = f.model.config.vocab_size;
        let mut cache = f.model.new_cache();
        for (t, &token) in f.tokens.iter().enumerate() {
            let step = f.model.forward(&[token], &mut cache, Logits::Last);
            let err = max_abs_diff(&step, &f.logits[t * vocab..(t + 1) * vocab]);
            assert!(
                err < 1e-4,
                "{name}: position {t} differs from the reference by {err}"
            );
        }
    }
}
