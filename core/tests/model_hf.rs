//! Hugging Face directories: export → load round trip, and one clear error per kind of bad directory.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use longalign::model::LlamaConfig;
use longalign::model::load::{load_hf, save_hf};
use longalign::model::{Llama, PackedRows};

type B = Flex;

fn small(arch_qwen: bool) -> LlamaConfig {
    let mut c = LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 4,
        tie_word_embeddings: false,
        ..LlamaConfig::tiny()
    };
    if arch_qwen {
        c.architecture = longalign::model::Architecture::Qwen2ForCausalLM;
        c.qkv_bias = true;
        c.tie_word_embeddings = true;
    }
    c
}

fn rows() -> PackedRows {
    PackedRows { tokens: vec![1, 5, 7, 9, 2, 3, 0, 0], cu_seqlens: vec![vec![0, 4, 6]], rows: 1, row_len: 8 }
}

fn logits(m: &Llama<B>, cfg: &LlamaConfig) -> Vec<f32> {
    m.logits(cfg, &rows(), &Default::default()).into_data().to_vec::<f32>().unwrap()
}

fn export(dir: &Path, cfg: &LlamaConfig, seed: u64) -> Llama<B> {
    let device = Default::default();
    B::seed(&device, seed);
    let m = Llama::<B>::init(cfg, &device);
    save_hf(&m, cfg, dir, &[]).unwrap();
    m
}

#[test]
fn export_then_load_gives_identical_logits() {
    for qwen in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let cfg = small(qwen);
        let m = export(d.path(), &cfg, 3);
        let (cfg2, m2) = load_hf::<B>(d.path(), &Default::default()).unwrap();
        assert_eq!(cfg2, cfg, "config.json round trip");
        assert_eq!(logits(&m, &cfg), logits(&m2, &cfg2), "qwen={qwen}");
    }
}

#[test]
fn packed_rows_compute_what_separate_rows_compute() {
    let cfg = small(false);
    let d = tempfile::tempdir().unwrap();
    let m = export(d.path(), &cfg, 4);
    let packed = logits(&m, &cfg);
    let v = cfg.vocab_size;
    let device = Default::default();
    for (start, seq) in [(0usize, vec![1u32, 5, 7, 9]), (4, vec![2, 3])] {
        let alone = PackedRows {
            tokens: seq.clone(),
            cu_seqlens: vec![vec![0, seq.len() as u32]],
            rows: 1,
            row_len: seq.len(),
        };
        let l = m.logits(&cfg, &alone, &device).into_data().to_vec::<f32>().unwrap();
        for (i, x) in l.iter().enumerate() {
            let y = packed[start * v + i];
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}

#[test]
fn bad_model_dirs_get_one_clear_error_each() {
    let device = Default::default();
    let err = |dir: &Path| load_hf::<B>(dir, &device).expect_err("should fail").to_string();

    let d = tempfile::tempdir().unwrap();
    assert!(err(&d.path().join("nope")).contains("not a directory"));
    let e = err(d.path());
    assert!(e.contains("config.json") && e.contains("cannot read"), "{e}");

    let cfg = small(false);
    export(d.path(), &cfg, 5);
    // Unknown architecture.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("config.json")).unwrap()).unwrap();
    let good = v.clone();
    v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
    let e = err(d.path());
    assert!(e.contains("unsupported architecture \"GPT2LMHeadModel\""), "{e}");
    // Shape mismatch: config says a wider model than the weights.
    let mut v = good.clone();
    v["intermediate_size"] = serde_json::json!(32);
    std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
    let e = err(d.path());
    assert!(
        e.contains(
            "model.layers.0.mlp.gate_proj.weight has shape [24, 16], but config.json implies [32, 16]"
        ),
        "{e}"
    );
    // Missing weights file.
    std::fs::write(d.path().join("config.json"), good.to_string()).unwrap();
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = err(d.path());
    assert!(e.contains("no model.safetensors"), "{e}");
    // A tensor missing from the file.
    let d2 = tempfile::tempdir().unwrap();
    let tied = LlamaConfig { tie_word_embeddings: true, ..cfg.clone() };
    export(d2.path(), &tied, 6);
    std::fs::write(d2.path().join("config.json"), good.to_string()).unwrap();
    let e = err(d2.path());
    assert!(e.contains("tensor lm_head.weight is missing"), "{e}");
}

#[test]
fn newer_rope_parameters_block_is_read() {
    let v = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    });
    let c = LlamaConfig::from_hf_json(&v).unwrap();
    assert_eq!(c.rope_theta, 500000.0);
    assert!(matches!(c.rope_scaling, longalign::model::RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    assert_eq!(c.num_key_value_heads, 2);
    let old = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "rope_theta": 1e6,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    });
    let c = LlamaConfig::from_hf_json(&old).unwrap();
    assert!(c.qkv_bias && !c.o_bias);
    assert!(matches!(c.rope_scaling, longalign::model::RopeScaling::Yarn { factor, .. } if factor == 4.0));
}
