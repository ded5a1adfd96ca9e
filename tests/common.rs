//! Helpers shared by the end-to-end tests: run the real `core-cli` binary as a user would.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use longalign::data::synth::{SynthConfig, generate, to_jsonl};
use serde_json::Value;

/// A small, quick dataset in `dir/small.jsonl`: generated examples of 128–300 tokens.
pub fn small_data(dir: &Path, examples: usize, seed: u64) {
    let ex = generate(SynthConfig {
        examples,
        seed,
        min_len: 128,
        max_len: 300,
        mix: longalign::data::synth::MIX,
    });
    std::fs::write(dir.join("small.jsonl"), to_jsonl(&ex)).unwrap();
}

/// The built-in tokenizer's files in `dir`, as a Hugging Face tokenizer directory.
pub fn builtin_tokenizer_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), longalign::data::builtin::tokenizer_json()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), longalign::data::builtin::tokenizer_config_json())
        .unwrap();
}

/// A run's `events.jsonl`, parsed.
pub fn events(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `core-cli` with `args` in `dir`.
pub fn core_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_core-cli")).args(args).current_dir(dir).output().expect("core-cli runs")
}

/// Runs and asserts success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = core_cli(dir, args);
    assert!(
        out.status.success(),
        "core-cli {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and asserts failure; returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = core_cli(dir, args);
    assert!(
        !out.status.success(),
        "core-cli {args:?} should fail; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A LongAlign-like lengths file (see `longalign::plan::mix::longalign_like`).
pub fn longalign_lengths(n_long: usize, n_short: usize, seed: u64) -> String {
    longalign::plan::mix::to_lengths_file(&longalign::plan::mix::longalign_like(n_long, n_short, seed))
}

/// Runs `core-cli args` in `dir` with the crash hook (`LONGALIGN_CRASH_AFTER_STEP`): the process
/// aborts like a killed one after step `step`'s event and checkpoint are on disk.
pub fn crash_after(dir: &Path, args: &[&str], step: usize) {
    let status = Command::new(env!("CARGO_BIN_EXE_core-cli"))
        .args(args)
        .current_dir(dir)
        .env("LONGALIGN_CRASH_AFTER_STEP", step.to_string())
        .status()
        .expect("core-cli runs");
    assert!(!status.success(), "the crash hook did not fire");
}

/// Two runs' events, step by step: the same steps, losses and gradient norms bit for bit.
pub fn assert_same_curve(a: &[Value], b: &[Value]) {
    assert_eq!(a.len(), b.len(), "steps logged");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["step"], y["step"]);
        for key in ["loss", "grad_norm"] {
            let bits = |e: &Value| e[key].as_f64().unwrap().to_bits();
            assert_eq!(bits(x), bits(y), "step {}: {key}: {x} vs {y}", x["step"]);
        }
    }
}
