//! Opt-in parity with Hugging Face transformers (needs `python3` with `torch` and `transformers`):
//!
//! ```sh
//! pip install torch transformers
//! cargo test -p longalign-core --test parity_transformers -- --ignored
//! ```
//!
//! tests/parity/make_tiny_models.py builds tiny Llama (llama3 and linear RoPE scaling, tied and
//! untied, with and without attention bias) and Qwen2 models with transformers and records their
//! logits and per-example losses; we load the same directories and must agree within 1e-4.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use longalign::data::synth::{SynthConfig, generate, to_jsonl};
use longalign::data::{ModelTokenizer, TokenizedDataset, builtin};
use longalign::model::PackedRows;
use longalign::model::generate::{GenerateConfig, generate as greedy};
use longalign::model::load::load_hf;
use longalign::train::teacher_forced::score_example;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn make_reference(dir: &Path) -> Value {
    let tok = dir.join("tok");
    std::fs::create_dir_all(&tok).unwrap();
    std::fs::write(tok.join("tokenizer.json"), builtin::tokenizer_json()).unwrap();
    std::fs::write(tok.join("tokenizer_config.json"), builtin::tokenizer_config_json()).unwrap();
    let data = generate(SynthConfig {
        examples: 12,
        seed: 4,
        min_len: 128,
        max_len: 200,
        mix: longalign::data::synth::MIX,
    });
    std::fs::write(dir.join("data.jsonl"), to_jsonl(&data)).unwrap();
    let status = Command::new("python3")
        .arg(repo().join("tests/parity/make_tiny_models.py"))
        .arg(dir)
        .arg(&tok)
        .arg(dir.join("data.jsonl"))
        .status()
        .expect("python3 runs");
    assert!(status.success(), "make_tiny_models.py failed");
    serde_json::from_str(&std::fs::read_to_string(dir.join("logits.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "needs python3 with torch and transformers"]
fn logits_and_scores_match_transformers() {
    let d = tempfile::tempdir().unwrap();
    let reference = make_reference(d.path());
    let scores: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("scores.json")).unwrap()).unwrap();
    let device = Default::default();
    let seqs: Vec<Vec<u32>> = serde_json::from_value(reference["sequences"].clone()).unwrap();
    for (name, per_seq) in reference["logits"].as_object().unwrap() {
        let (cfg, model) = load_hf::<Flex>(&d.path().join(name), &device).unwrap();
        let mut worst = 0f32;
        // Each sequence alone, and all of them packed in one row: both must match transformers.
        let packed_cu: Vec<u32> = std::iter::once(0)
            .chain(seqs.iter().scan(0u32, |acc, s| {
                *acc += s.len() as u32;
                Some(*acc)
            }))
            .collect();
        let total = *packed_cu.last().unwrap() as usize;
        let packed = PackedRows {
            tokens: seqs.concat(),
            cu_seqlens: vec![packed_cu.clone()],
            rows: 1,
            row_len: total,
        };
        let packed_logits = model.logits(&cfg, &packed, &device).into_data().to_vec::<f32>().unwrap();
        for (k, s) in seqs.iter().enumerate() {
            let rows = PackedRows {
                tokens: s.clone(),
                cu_seqlens: vec![vec![0, s.len() as u32]],
                rows: 1,
                row_len: s.len(),
            };
            let ours = model.logits(&cfg, &rows, &device).into_data().to_vec::<f32>().unwrap();
            let theirs: Vec<f32> = per_seq[k]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
                .collect();
            let off = packed_cu[k] as usize * cfg.vocab_size;
            for (i, t) in theirs.iter().enumerate() {
                worst = worst.max((ours[i] - t).abs()).max((packed_logits[off + i] - t).abs());
            }
        }
        println!("{name}: max |logit diff| = {worst:e}");

        // Greedy generation with our KV cache gives transformers' tokens.
        for (k, s) in seqs.iter().enumerate() {
            let gc = GenerateConfig { max_new_tokens: 16, ..Default::default() };
            let (ours, _) = greedy(&model, &cfg, s, &gc, &device, |_| true);
            let theirs: Vec<u32> = serde_json::from_value(reference["greedy"][name][k].clone()).unwrap();
            assert_eq!(ours, theirs, "{name} sequence {k}: greedy tokens");
        }
        assert!(worst <= 1e-4, "{name}: logits differ by {worst}");

        let tok = ModelTokenizer::from_dir(&d.path().join(name), None).unwrap();
        let ds = TokenizedDataset::load(&d.path().join("data.jsonl"), None, false, &tok).unwrap();
        for (i, t) in ds.tokens.iter().enumerate() {
            let ours = score_example(&model, &cfg, t, i, 1, &device);
            let theirs = &scores[name][i];
            assert_eq!(
                ours.target_tokens as u64,
                theirs["target_tokens"].as_u64().unwrap(),
                "{name} example {i}: target count"
            );
            let diff = (ours.loss - theirs["loss"].as_f64().unwrap()).abs();
            assert!(diff <= 1e-4, "{name} example {i}: loss {} vs {}", ours.loss, theirs["loss"]);
        }
    }
}
