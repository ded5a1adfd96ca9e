//! LoRA end to end through `core-cli`: a LoRA run on a Hugging Face model directory trains only its
//! adapters (and what `--train` adds), writes a PEFT adapter beside the merged export, resumes bit
//! for bit after a crash (dropout included), and `--adapter` applies the adapter for `score` and
//! `generate` exactly as the merged model computes. The PEFT parity itself is opt-in
//! (`core/tests/parity_peft.rs`).

mod common;

use common::{assert_same_curve, crash_after, events, fails, ok, small_data};
use serde_json::Value;

const LORA: [&str; 16] = [
    "train",
    "--model",
    "base/export",
    "--data",
    "small.jsonl",
    "--max-tokens",
    "512",
    "--quiet",
    "--lora-rank",
    "4",
    "--lora-targets",
    "all",
    "--train",
    "embeddings,norms",
    "--lr",
    "1e-2",
];

/// Tensor name → element count of a safetensors file.
fn tensors(path: &std::path::Path) -> Vec<(String, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, usize)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.shape().iter().product())).collect();
    v.sort();
    v
}

fn losses(out: &str) -> Vec<f64> {
    out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
}

#[test]
fn lora_run_writes_a_peft_adapter_that_adapter_flags_apply_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    // The base: a Hugging Face directory (a short full fine-tune of the tiny preset).
    ok(
        d.path(),
        &[
            "train",
            "--data",
            "small.jsonl",
            "--max-tokens",
            "512",
            "--quiet",
            "--steps",
            "2",
            "--out",
            "base",
        ],
    );

    let mut args = LORA.to_vec();
    args.extend([
        "--lora-dropout",
        "0.1",
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--out",
        "lora",
        "--summary-json",
        "s.json",
    ]);
    ok(d.path(), &args);
    let run = d.path().join("lora");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("s.json")).unwrap()).unwrap();
    assert!(s["last_loss"].as_f64() < s["first_loss"].as_f64(), "loss falls: {s}");

    // The adapter holds exactly what was trained, under PEFT's names.
    let adapter = tensors(&run.join("adapter/adapter_model.safetensors"));
    // The tiny preset ties its head to the embeddings: PEFT wants the head's copy too, which is
    // the same tensor, not another trained one.
    let trained: usize = adapter.iter().filter(|(n, _)| !n.ends_with("lm_head.weight")).map(|(_, n)| n).sum();
    assert!(adapter.iter().any(|(n, _)| n == "base_model.model.lm_head.weight"));
    assert_eq!(s["trainable_parameters"].as_u64(), Some(trained as u64), "{s}");
    assert!(trained < s["total_parameters"].as_u64().unwrap() as usize);
    assert_eq!(s["optimizer_state_bytes"].as_u64(), Some(8 * trained as u64));
    let names: Vec<&str> = adapter.iter().map(|(n, _)| n.as_str()).collect();
    for n in [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight",
        "base_model.model.model.embed_tokens.weight",
        "base_model.model.model.layers.1.input_layernorm.weight",
        "base_model.model.model.norm.weight",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert_eq!(names.iter().filter(|n| n.ends_with("lora_A.weight")).count(), 4 * 7);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!((config["peft_type"].as_str(), config["r"].as_u64()), (Some("LORA"), Some(4)));
    assert_eq!(config["lora_alpha"].as_f64(), Some(8.0));

    // --adapter folds it into the base: the same scores and the same greedy answer as the merged
    // export.
    let merged = losses(&ok(d.path(), &["score", "--model", "lora/export", "--data", "small.jsonl"]));
    let adapted = losses(&ok(
        d.path(),
        &["score", "--model", "base/export", "--adapter", "lora/adapter", "--data", "small.jsonl"],
    ));
    let before = losses(&ok(d.path(), &["score", "--model", "base/export", "--data", "small.jsonl"]));
    assert_eq!(merged.len(), 40);
    for ((m, a), b) in merged.iter().zip(&adapted).zip(&before) {
        assert!((m - a).abs() <= 1e-4 * m.abs(), "merged {m} vs adapter {a}");
        assert!((m - b).abs() > 1e-6, "the adapter changes the model");
    }
    let answer = |extra: &[&str]| {
        let mut a = vec!["generate", "--prompt", "Summarize the report.", "--max-new-tokens", "12"];
        a.extend(extra);
        ok(d.path(), &a)
    };
    assert_eq!(
        answer(&["--model", "lora/export"]),
        answer(&["--model", "base/export", "--adapter", "lora/adapter"])
    );

    // export from the last checkpoint reproduces both files byte for byte.
    ok(d.path(), &["export", "lora", "--adapter", "--out", "again"]);
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(run.join("adapter").join(f)).unwrap(),
            std::fs::read(d.path().join("again").join(f)).unwrap()
        );
    }
    let e = fails(d.path(), &["export", "base", "--adapter", "--out", "x"]);
    assert!(e.contains("not a LoRA run"), "{e}");

    // Crash after step 4 (checkpoint at 3), resume: the same curve and adapter bit for bit.
    let mut crash = LORA.to_vec();
    crash.extend(["--lora-dropout", "0.1", "--steps", "6", "--checkpoint-every", "3", "--out", "crash"]);
    crash_after(d.path(), &crash, 4);
    ok(d.path(), &["train", "--resume", "crash", "--quiet"]);
    let (a, b) = (events(&run), events(&d.path().join("crash")));
    assert_eq!(a.len(), 6);
    assert_same_curve(&a, &b);
    assert_eq!(
        std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap(),
        std::fs::read(d.path().join("crash/adapter/adapter_model.safetensors")).unwrap()
    );
}

/// The tiny preset on the embedded sample: the loss falls with adapters alone, and activation
/// checkpointing gives the same curve.
#[test]
fn lora_on_the_embedded_sample_learns_and_checkpointing_agrees() {
    let d = tempfile::tempdir().unwrap();
    let base = ["train", "--quiet", "--steps", "12", "--lora-rank", "8", "--train", "norms", "--lr", "1e-2"];
    let mut plain = base.to_vec();
    plain.extend(["--out", "plain"]);
    ok(d.path(), &plain);
    let mut ck = base.to_vec();
    ck.extend(["--out", "ck", "--activation-checkpointing"]);
    ok(d.path(), &ck);
    let (a, b) = (events(&d.path().join("plain")), events(&d.path().join("ck")));
    let first = a[0]["loss"].as_f64().unwrap();
    let last = a[11]["loss"].as_f64().unwrap();
    assert!(last < first - 0.1, "loss falls with adapters alone: {first} → {last}");
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-4 * x.abs(), "checkpointed {y} vs {x}");
    }
}

#[test]
fn bad_lora_flags_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    for (args, want) in [
        (vec!["train", "--lora-rank", "4", "--lora-targets", "q,x"], "unknown LoRA target \"x\""),
        (vec!["train", "--lora-rank", "0"], "--lora-rank"),
        (
            vec!["train", "--lora-rank", "4", "--lora-dropout", "1.5", "--quiet"],
            "--lora-dropout must be in [0, 1)",
        ),
        (vec!["train", "--train", "norms"], "--lora-rank"),
        (vec!["score", "--model", "nowhere", "--adapter", "x", "--data", "y"], "nowhere"),
    ] {
        let e = fails(d.path(), &args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

/// Two devices equal one device accumulating two micro-batches, LoRA dropout included (its masks
/// follow the micro-batch, not the device).
#[test]
fn lora_data_parallel_equals_accumulation() {
    let d = tempfile::tempdir().unwrap();
    let base =
        ["train", "--quiet", "--steps", "5", "--lora-rank", "4", "--lora-dropout", "0.1", "--train", "norms"];
    let mut one = base.to_vec();
    one.extend(["--accum", "2", "--out", "one"]);
    ok(d.path(), &one);
    let mut two = base.to_vec();
    two.extend(["--devices", "0,1", "--out", "two"]);
    ok(d.path(), &two);
    let (a, b) = (events(&d.path().join("one")), events(&d.path().join("two")));
    assert_eq!(a.len(), 5);
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs(), "2 devices {y} vs accumulation {x}");
    }
}
