//! An FP8 (e4m3, 128x128 block scales) copy of a model loads to exactly its dequantised weights.

use std::collections::BTreeMap;

use dsgw_engine::backend::cpu::Cpu;
use dsgw_engine::checkpoint::{Checkpoint, e4m3_table};
use dsgw_engine::model::{Logits, Model};
use dsgw_engine::tooling::tiny::{TinySpec, write_model};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const BLOCK: usize = 128;

/// Nearest e4m3 code of `x` (brute force over the 254 finite codes).
fn encode(x: f32, table: &[f32; 256]) -> u8 {
    (0u8..=255)
        .filter(|&b| table[b as usize].is_finite())
        .min_by(|&a, &b| {
            (table[a as usize] - x)
                .abs()
                .total_cmp(&(table[b as usize] - x).abs())
        })
        .unwrap()
}

/// Quantises `w (rows, cols)` per 128x128 tile: returns codes, scales and the dequantised values.
fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    table: &[f32; 256],
) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let (tr, tc) = (rows.div_ceil(BLOCK), cols.div_ceil(BLOCK));
    let mut scales = vec![0f32; tr * tc];
    for r in 0..rows {
        for c in 0..cols {
            let s = &mut scales[(r / BLOCK) * tc + c / BLOCK];
            *s = s.max(w[r * cols + c].abs() / 448.0);
        }
    }
    for s in &mut scales {
        if *s == 0.0 {
            *s = 1.0;
        }
    }
    let mut codes = Vec::with_capacity(rows * cols);
    let mut dequant = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[(r / BLOCK) * tc + c / BLOCK];
            let code = encode(w[r * cols + c] / s, table);
            codes.push(code);
            dequant.push(table[code as usize] * s);
        }
    }
    (codes, scales, dequant)
}

fn is_quantised(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2
        && !name.contains("embed_tokens")
        && !name.contains("lm_head")
        && !name.ends_with("mlp.gate.weight")
        && !name.contains("weights_proj")
}

#[test]
fn fp8_checkpoint_equals_its_dequantised_f32_copy() {
    let base = std::env::temp_dir().join(format!("dsgw-fp8-{}", std::process::id()));
    let (src, fp8, deq) = (base.join("src"), base.join("fp8"), base.join("deq"));
    let spec = TinySpec {
        index_topk: 4,
        ..TinySpec::tiny(256)
    };
    write_model(&src, &spec, 21).unwrap();
    let table = e4m3_table();
    let ckpt = Checkpoint::open(&src).unwrap();

    let mut fp8_tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut deq_tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for (name, shape, _) in spec.tensors() {
        let w = ckpt.load(&name, &shape).unwrap().data;
        if is_quantised(&name, &shape) {
            let (codes, scales, dequant) = quantize(&w, shape[0], shape[1], &table);
            let tiles = vec![shape[0].div_ceil(BLOCK), shape[1].div_ceil(BLOCK)];
            fp8_tensors.push((name.clone(), Dtype::F8_E4M3, shape.clone(), codes));
            fp8_tensors.push((
                format!("{name}_scale_inv"),
                Dtype::F32,
                tiles,
                f32_bytes(&scales),
            ));
            deq_tensors.push((name, Dtype::F32, shape, f32_bytes(&dequant)));
        } else {
            fp8_tensors.push((name.clone(), Dtype::F32, shape.clone(), f32_bytes(&w)));
            deq_tensors.push((name, Dtype::F32, shape, f32_bytes(&w)));
        }
    }
    let mut config = spec.config_json();
    for (dir, tensors, quantised) in [(&fp8, &fp8_tensors, true), (&deq, &deq_tensors, false)] {
        std::fs::create_dir_all(dir).unwrap();
        if quantised {
            config["quantization_config"] = serde_json::json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
        } else {
            config
                .as_object_mut()
                .unwrap()
                .remove("quantization_config");
        }
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let views: BTreeMap<String, TensorView<'_>> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    }

    let tokens: Vec<u32> = (0..10).map(|i| (i * 29 + 7) % 256).collect();
    let run = |dir: &std::path::Path| {
        let model = Model::load(&Checkpoint::open(dir).unwrap(), Cpu).unwrap();
        model.forward(&tokens, &mut model.new_cache(), Logits::All)
    };
    let (from_fp8, from_deq, from_src) = (run(&fp8), run(&deq), run(&src));
    assert_eq!(
        from_fp8, from_deq,
        "FP8 loading must give exactly the dequantised weights"
    );
    assert_ne!(
        from_fp8, from_src,
        "quantisation must have changed something"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
