//! `dsgw engine init` and `dsgw engine logits`, run as a user would.

use std::process::Command;

use dsgw_engine::backend::cpu::Cpu;
use dsgw_engine::checkpoint::Checkpoint;
use dsgw_engine::model::{Logits, Model};

#[test]
fn init_writes_a_loadable_model_and_logits_prints_one_row_per_token() {
    let dir = std::env::temp_dir().join(format!("dsgw-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_dsgw");
    let status = Command::new(bin)
        .args(["engine", "init", "--tiny"])
        .arg(&dir)
        .args(["--seed", "5"])
        .status()
        .unwrap();
    assert!(status.success());
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(file).exists(), "{file}");
    }
    let out = Command::new(bin)
        .args(["engine", "logits", "--model"])
        .arg(&dir)
        .args(["--tokens", "0,17,33"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = printed["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);

    let model = Model::load(&Checkpoint::open(&dir).unwrap(), Cpu).unwrap();
    assert_eq!(rows[0].as_array().unwrap().len(), model.config.vocab_size);
    let expected = model.forward(&[0, 17, 33], &mut model.new_cache(), Logits::All);
    let printed: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(printed, expected, "printed logits must round-trip exactly");

    let bad = Command::new(bin)
        .args(["engine", "logits", "--model"])
        .arg(&dir)
        .args(["--tokens", "999999"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("outside the vocabulary"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn device_check_without_a_usable_gpu_says_why_and_fails_cleanly() {
    // No such device anywhere: here (no driver) and on a GPU machine alike, the check must end
    // with an error naming the cause, never a panic, and write no report.
    let out_file = std::env::temp_dir().join(format!("dsgw-dc-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dsgw"))
        .args(["engine", "device-check", "--device", "64", "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("no CUDA driver") || stderr.contains("CUDA device 64"),
        "{stderr}"
    );
    assert!(!out_file.exists());
}
