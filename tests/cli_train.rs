//! `core-cli train / score / export / demo / bench` end to end, on small data (CPU backend).

mod common;

use std::process::Command;

use common::{assert_same_curve, core_cli, crash_after, events, fails, ok, small_data};
use serde_json::Value;

const TRAIN: [&str; 9] = [
    "train",
    "--data",
    "small.jsonl",
    "--max-tokens",
    "512",
    "--quiet",
    "--lr",
    "3e-3",
    "--checkpoint-every",
];

#[test]
fn train_writes_events_checkpoints_and_an_hf_export() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let mut args = TRAIN.to_vec();
    args.extend(["2", "--steps", "4", "--out", "run"]);
    ok(d.path(), &args);
    let run = d.path().join("run");
    let ev = events(&run);
    assert_eq!(ev.len(), 4);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["step"], i + 1);
        for f in [
            "loss",
            "lr",
            "grad_norm",
            "useful_tokens",
            "padded_tokens",
            "useful_tok_per_s",
            "padded_tok_per_s",
            "occupancy",
            "seqs_per_row",
            "elapsed_s",
        ] {
            assert!(e[f].is_number(), "{f} in {e}");
        }
        assert!(e["useful_tokens"].as_u64() <= e["padded_tokens"].as_u64());
    }
    assert!(run.join("config.toml").exists());
    for step in [2, 4] {
        assert!(run.join(format!("checkpoints/step-{step}/state.json")).exists());
    }
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(run.join("export").join(f).exists(), "export/{f}");
    }
    // A second train into the same directory is refused rather than mixing two runs.
    let e = fails(d.path(), &args);
    assert!(e.contains("already holds a run"), "{e}");

    // score: one line per example with its mean target loss.
    let out = ok(d.path(), &["score", "--model", "run/export", "--data", "small.jsonl"]);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 40);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert!(l["loss"].as_f64().unwrap() > 0.0 && l["target_tokens"].as_u64().unwrap() > 0);
    }

    // export from the last checkpoint reproduces the run's own export byte for byte.
    ok(d.path(), &["export", "run", "--out", "again"]);
    assert_eq!(
        std::fs::read(run.join("export/model.safetensors")).unwrap(),
        std::fs::read(d.path().join("again/model.safetensors")).unwrap()
    );
}

/// Kill at step 3 (abort right after its checkpoint), resume, and the loss curve is bit-identical to
/// an uninterrupted run.
#[test]
fn resume_after_a_crash_continues_exactly() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let mut base = TRAIN.to_vec();
    base.extend(["3", "--steps", "7"]);
    let mut full = base.clone();
    full.extend(["--out", "full"]);
    ok(d.path(), &full);

    let mut crash = base.clone();
    crash.extend(["--out", "crash"]);
    crash_after(d.path(), &crash, 4);
    // Step 4 was logged but not checkpointed (checkpoints at 3, 6): resume rolls back to 3.
    assert_eq!(events(&d.path().join("crash")).len(), 4);
    let e = fails(d.path(), &["train", "--resume", "nope"]);
    assert!(e.contains("nope/config.toml"), "{e}");
    ok(d.path(), &["train", "--resume", "crash", "--quiet"]);
    // A resumed run keeps its configuration: TF32 (exact f32 here) is not switched on midway.
    let config = std::fs::read_to_string(d.path().join("crash/config.toml")).unwrap();
    assert!(config.contains("tf32 = false"), "{config}");
    let e = fails(d.path(), &["train", "--resume", "crash", "--tf32"]);
    assert!(e.contains("was trained with exact f32 matmuls"), "{e}");
    let (a, b) = (events(&d.path().join("full")), events(&d.path().join("crash")));
    assert_eq!(a.len(), 7);
    assert_same_curve(&a, &b);
    assert_eq!(
        std::fs::read(d.path().join("full/export/model.safetensors")).unwrap(),
        std::fs::read(d.path().join("crash/export/model.safetensors")).unwrap(),
        "final weights identical"
    );
}

#[test]
fn bad_backends_and_models_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let e = fails(d.path(), &["train", "--data", "small.jsonl", "--backend", "tpu", "--out", "r1"]);
    assert!(e.contains("unknown backend \"tpu\""), "{e}");
    if !cfg!(feature = "cuda") {
        let e = fails(d.path(), &["train", "--data", "small.jsonl", "--backend", "cuda", "--out", "r2"]);
        assert!(e.contains("built without CUDA"), "{e}");
    }
    let e = fails(d.path(), &["train", "--data", "small.jsonl", "--model", "no-such-model", "--out", "r3"]);
    assert!(e.contains("no-such-model"), "{e}");
    let e = fails(d.path(), &["train", "--data", "small.jsonl", "--attention", "flash", "--out", "r5"]);
    assert!(e.contains("expected auto, varlen"), "{e}");
    // `--tf32` is global (before or after the command) and the run records it for its resume.
    ok(
        d.path(),
        &[
            "--tf32",
            "train",
            "--data",
            "small.jsonl",
            "--max-tokens",
            "512",
            "--steps",
            "1",
            "--quiet",
            "--out",
            "r6",
        ],
    );
    let config = std::fs::read_to_string(d.path().join("r6/config.toml")).unwrap();
    assert!(config.contains("tf32 = true"), "{config}");
}

/// Ten training steps on `--backend wgpu` (fusion and autotune as shipped, a fresh autotune
/// cache) lose what the CPU's lose, within 1e-4 relative at every step.
#[test]
fn wgpu_training_equals_the_cpu_over_ten_steps() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 60, 4);
    let run = |backend: &str| {
        let out = format!("run-{backend}");
        let status = Command::new(env!("CARGO_BIN_EXE_core-cli"))
            .args(["train", "--data", "small.jsonl", "--max-tokens", "512", "--steps", "10", "--quiet"])
            .args(["--backend", backend, "--out", &out])
            .current_dir(d.path())
            .env("LONGALIGN_KERNEL_CACHE", d.path().join("kernels"))
            .status()
            .unwrap();
        assert!(status.success());
        events(&d.path().join(out))
    };
    let (cpu, gpu) = (run("cpu"), run("wgpu"));
    assert_eq!((cpu.len(), gpu.len()), (10, 10));
    for (c, g) in cpu.iter().zip(&gpu) {
        let (a, b) = (c["loss"].as_f64().unwrap(), g["loss"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * a.abs(), "step {}: cpu {a} vs wgpu {b}", c["step"]);
    }
}

/// `--backend wgpu` trains through the varlen kernel by default, and its steps equal the plain
/// per-sequence tensor path's (on lavapipe in CI: slow, so three steps of 1,024-token rows).
#[test]
fn wgpu_training_on_the_varlen_kernel_equals_segmented_attention() {
    varlen_equals_segmented("wgpu");
}

/// The same on the CPU backend, whose varlen kernel is the host (rayon) one.
#[test]
fn cpu_training_on_the_host_kernel_equals_segmented_attention() {
    varlen_equals_segmented("cpu");
}

fn varlen_equals_segmented(backend: &str) {
    let d = tempfile::tempdir().unwrap();
    let run = |attention: &str| {
        let out = format!("run-{attention}");
        ok(
            d.path(),
            &["train", "--backend", backend, "--steps", "3", "--max-tokens", "1024", "--quiet"][..]
                .iter()
                .copied()
                .chain(["--attention", attention, "--out", &out])
                .collect::<Vec<_>>(),
        );
        let config = std::fs::read_to_string(d.path().join(&out).join("config.toml")).unwrap();
        assert!(config.contains(&format!("attention = \"{attention}\"")), "{config}");
        events(&d.path().join(&out))
    };
    let (varlen, segmented) = (run("varlen"), run("segmented"));
    assert_eq!(varlen.len(), 3);
    for (a, b) in varlen.iter().zip(&segmented) {
        for key in ["loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1e-3), "step {}: {key} {x} vs {y}", a["step"]);
        }
        assert_eq!(a["useful_tokens"], b["useful_tokens"]);
    }
    assert!(varlen[2]["loss"].as_f64().unwrap() > 1.0, "a real step was compared");
}

#[test]
fn demo_runs_and_reports_before_and_after() {
    let d = tempfile::tempdir().unwrap();
    let out = core_cli(d.path(), &["demo", "--steps", "2", "--out", "demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("trained 2 steps") && text.contains("exact after") && text.contains("passkey"),
        "{text}"
    );
}

#[test]
fn bench_train_reports_three_strategies_padded_and_padding_free() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let v: Value = serde_json::from_str(&ok(
        d.path(),
        &["bench", "train", "--data", "small.jsonl", "--max-tokens", "512", "--batch-size", "4", "--json"],
    ))
    .unwrap();
    for s in ["naive", "sorted", "pack"] {
        for f in ["useful_tok_per_s", "padded_tok_per_s", "wall_s", "peak_rss_bytes"] {
            assert!(v[s][f].is_number(), "{s}.{f} in {v}");
            assert!(v["padding_free"][s][f].is_number(), "padding_free.{s}.{f} in {v}");
        }
        // The same plan, the same sequences: padding-free computes no more, and trains the same.
        let (p, f) = (&v[s], &v["padding_free"][s]);
        assert_eq!(p["useful_tokens"], f["useful_tokens"]);
        assert!(f["padded_tokens"].as_u64() <= p["padded_tokens"].as_u64(), "{s}: {f} vs {p}");
        let (lp, lf) = (p["final_loss"].as_f64().unwrap(), f["final_loss"].as_f64().unwrap());
        assert!((lp - lf).abs() <= 1e-4 * lp, "{s}: loss {lp} padded vs {lf} padding-free");
    }
    // Packing wastes less: its occupancy beats naive padding; padding-free naive wastes nothing.
    assert!(v["pack"]["occupancy"].as_f64().unwrap() > v["naive"]["occupancy"].as_f64().unwrap());
    assert_eq!(v["padding_free"]["naive"]["occupancy"].as_f64(), Some(1.0));
}

/// `bench loss` times both losses on the same inputs; their values agree, and on the CPU the fused
/// one (run first) leaves the lower peak memory.
#[test]
fn bench_loss_compares_fused_and_plain() {
    let d = tempfile::tempdir().unwrap();
    let args = ["bench", "loss", "--targets", "2048", "--hidden", "16", "--vocab", "8000", "--chunk", "128"];
    let v: Value =
        serde_json::from_str(&ok(d.path(), &[&args[..], &["--reps", "1", "--json"]].concat())).unwrap();
    let (f, p) = (&v[0], &v[1]);
    assert_eq!((f["path"].as_str(), p["path"].as_str()), (Some("fused"), Some("plain")), "{v}");
    let (a, b) = (f["loss"].as_f64().unwrap(), p["loss"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * b.abs() && a > 0.0, "{a} vs {b}");
    // The plain path keeps 2 × 2048 × 8000 × 4 B = 131 MB for its backward; the fused one a chunk.
    let rss = |r: &Value| r["peak_rss_bytes_after"].as_f64().unwrap();
    assert!(rss(p) > rss(f) + 50e6, "peak RSS after fused {} vs after plain {}", rss(f), rss(p));
}

/// Activation checkpointing trades memory for recomputation; the numbers stay the same.
#[test]
fn activation_checkpointing_gives_the_same_losses() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let mut a = TRAIN.to_vec();
    a.extend(["3", "--steps", "3", "--out", "plain"]);
    ok(d.path(), &a);
    let mut b = TRAIN.to_vec();
    b.extend(["3", "--steps", "3", "--out", "ckpt", "--activation-checkpointing"]);
    ok(d.path(), &b);
    for (x, y) in events(&d.path().join("plain")).iter().zip(events(&d.path().join("ckpt")).iter()) {
        let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{x} vs {y}");
    }
}

/// `--precision bf16`: mixed precision (f32 master weights and AdamW, bf16 compute) follows the
/// f32 loss curve to within bf16 rounding, is recorded in the run's config, exports f32 weights,
/// and resumes exactly; a backend without bf16 is a clear error before any work.
#[test]
fn bf16_mixed_precision_tracks_f32_and_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let run = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut a = TRAIN.to_vec();
        a.extend(["3", "--steps", "6"]);
        a.extend(extra);
        let mut c = Command::new(env!("CARGO_BIN_EXE_core-cli"));
        c.args(&a).current_dir(d.path());
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.status().unwrap().success()
    };
    assert!(run(&["--out", "f32"], None));
    assert!(run(&["--out", "bf16", "--precision", "bf16"], None));
    let config = std::fs::read_to_string(d.path().join("bf16/config.toml")).unwrap();
    assert!(config.contains("precision = \"bf16\""), "{config}");
    let (a, b) = (events(&d.path().join("f32")), events(&d.path().join("bf16")));
    assert_eq!((a.len(), b.len()), (6, 6));
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 0.02 * x, "f32 {x} vs bf16 {y}");
        assert_ne!(x, y, "bf16 really computed in bf16");
    }
    assert!(b[5]["loss"].as_f64().unwrap() < b[0]["loss"].as_f64().unwrap(), "bf16 learns");
    let st = std::fs::read(d.path().join("bf16/export/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&st[8..8 + header_len]).unwrap();
    assert!(header.contains("\"F32\"") && !header.contains("BF16"), "master weights exported: {header}");

    // Crash after step 4 (checkpoint at 3), resume: the same curve bit for bit.
    assert!(!run(&["--out", "crash", "--precision", "bf16"], Some(("LONGALIGN_CRASH_AFTER_STEP", "4"))));
    ok(d.path(), &["train", "--resume", "crash", "--quiet"]);
    let c = events(&d.path().join("crash"));
    assert_eq!(c.len(), 6);
    assert_same_curve(&b, &c);

    let e =
        fails(d.path(), &["train", "--backend", "wgpu", "--precision", "bf16", "--steps", "1", "--out", "w"]);
    assert!(e.contains("--precision bf16 is not supported by backend \"wgpu\""), "{e}");
    assert!(!d.path().join("w/events.jsonl").exists());
}

/// `--precision f16` on wgpu (lavapipe in CI has `shader-f16`; WGSL has no bf16): the step's loss
/// and gradient norm match the f32 run on the same backend to within f16 rounding.
#[test]
fn wgpu_f16_mixed_precision_matches_f32() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 40, 9);
    let run = |out: &str, precision: &str| {
        let mut a = TRAIN.to_vec();
        a.extend(["2", "--steps", "2", "--backend", "wgpu", "--precision", precision, "--out", out]);
        ok(d.path(), &a);
        events(&d.path().join(out))
    };
    let (h, f) = (run("f16", "f16"), run("f32", "f32"));
    for (x, y) in h.iter().zip(&f) {
        for key in ["loss", "grad_norm"] {
            let (a, b) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((a - b).abs() <= 5e-3 * b, "step {}: {key} f16 {a} vs f32 {b}", x["step"]);
        }
    }
    assert_ne!(h[1]["loss"], f[1]["loss"], "f16 really computed in f16");
    assert!(f[1]["loss"].as_f64().unwrap() > 1.0, "a real step was compared");
}

/// `core-cli doctor`: the CPU backend, the wgpu adapters (lavapipe here), CUDA not built in, a
/// smoke run with its throughput; and the CUDA stub library on LD_LIBRARY_PATH is caught.
#[test]
fn doctor_reports_backends_adapters_and_a_smoke_run() {
    let d = tempfile::tempdir().unwrap();
    let v: Value = serde_json::from_str(&ok(d.path(), &["doctor", "--json"])).unwrap();
    assert!(v["backends"].as_array().unwrap().iter().any(|b| b == "cpu"), "{v}");
    assert!(v["cpu"]["threads"].as_u64().unwrap() >= 1);
    assert!(v["cpu"]["memory_total_bytes"].as_u64().unwrap() > 1 << 30);
    assert_eq!(v["cuda"]["built_in"], cfg!(feature = "cuda"));
    assert_eq!(v["cuda"]["tf32"], false, "exact f32 unless --tf32: {v}");
    let adapters = v["wgpu"].as_array().unwrap();
    assert!(
        adapters.iter().any(|a| a["name"].as_str().unwrap().contains("llvmpipe")),
        "lavapipe (Mesa's software Vulkan) is what these machines have: {v}"
    );
    let smoke = &v["smoke"][0];
    assert_eq!((smoke["backend"].as_str(), smoke["ok"].as_bool()), (Some("cpu"), Some(true)), "{smoke}");
    assert!(smoke["useful_tok_per_s"].as_f64().unwrap() > 100.0, "{smoke}");
    // The stub libcuda.so of a CUDA toolkit on the loader path.
    let stubs = d.path().join("cuda/lib64/stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::write(stubs.join("libcuda.so"), b"").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_core-cli"))
        .args(["doctor", "--smoke", "none", "--tf32"])
        .env("LD_LIBRARY_PATH", &stubs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("warning: LD_LIBRARY_PATH contains") && text.contains("CUDA_ERROR_STUB_LIBRARY"),
        "{text}"
    );
    assert!(text.contains("cuda: not built in") || cfg!(feature = "cuda"), "{text}");
    assert!(text.contains("f32 matmuls: TF32 allowed (--tf32)"), "{text}");
    assert!(!text.contains("smoke"), "--smoke none runs nothing: {text}");
}

/// `--backend wgpu` (fusion and autotune as shipped), 30 steps over lengths 64..2,048: the warm-up
/// before step 1 runs each input shape of the plan once, so no step after the third compiles or
/// tunes anything (steps 1 and 2 compile the optimizer's kernels); `compiles` /
/// `autotunes` per step are in events.jsonl, the warm-up's in the summary. A second run finds the
/// autotune results in the persisted cache (`LONGALIGN_KERNEL_CACHE`), tunes nothing, and computes
/// the same losses.
#[test]
fn wgpu_compiles_nothing_after_the_warm_up_and_caches_autotune_results() {
    let d = tempfile::tempdir().unwrap();
    let ex = longalign::data::synth::generate(longalign::data::synth::SynthConfig {
        examples: 120,
        seed: 5,
        min_len: 64,
        max_len: 2048,
        mix: longalign::data::synth::MIX,
    });
    std::fs::write(d.path().join("varied.jsonl"), longalign::data::synth::to_jsonl(&ex)).unwrap();
    let cache = d.path().join("kernels");
    let run = |out: &str, steps: usize| {
        let args = ["train", "--backend", "wgpu", "--data", "varied.jsonl", "--max-tokens", "2048"];
        let status = Command::new(env!("CARGO_BIN_EXE_core-cli"))
            .args(args)
            .args(["--steps", &steps.to_string(), "--quiet", "--out", out])
            .args(["--summary-json", &format!("{out}.json")])
            .current_dir(d.path())
            .env("LONGALIGN_KERNEL_CACHE", &cache)
            .status()
            .unwrap();
        assert!(status.success());
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(format!("{out}.json"))).unwrap())
                .unwrap();
        (summary["warm_up"].clone(), events(&d.path().join(out)))
    };
    let n = |e: &Value, k: &str| e[k].as_u64().unwrap();
    let (warm, first) = run("first", 30);
    assert_eq!(first.len(), 30);
    // Packed 2,048-token rows: full rows, and a few streams and target counts of other buckets.
    assert!(n(&warm, "shapes") >= 2, "lengths 64..2048 make several shapes: {warm}");
    assert!(n(&warm["jit"], "compiles") > 10, "the warm-up compiles the kernels: {warm}");
    let per_step: Vec<(u64, u64)> = first.iter().map(|e| (n(e, "compiles"), n(e, "autotunes"))).collect();
    eprintln!("compiles, autotunes per step: {per_step:?}");
    // Steps 1 and 2 compile the optimizer's kernels (AdamW's first update, then the one with
    // moments); the data's shapes were all compiled by the warm-up.
    for e in &first[3..] {
        assert_eq!((n(e, "compiles"), n(e, "autotunes")), (0, 0), "step {} compiled: {e}", n(e, "step"));
    }
    let mut times: Vec<f64> = first[3..].iter().map(|e| e["step_s"].as_f64().unwrap()).collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "warm-up {warm}; steps 4..30: fastest {:.2} s, median {:.2} s ({:.2}× the fastest)",
        times[0],
        times[times.len() / 2],
        times[times.len() / 2] / times[0]
    );
    // Steps of equal tokens differ in attention work (Σ n², 62× between 18 short sequences and
    // one of 2,048 tokens), so raw times spread with it. Least squares of t = a·tokens + b·Σn²
    // over the warm steps: how far each step is from what its work predicts (a compile or a stall
    // would stand out). A figure, printed; timing goals live in benchmarks (docs/measurements.md).
    let w: Vec<(f64, f64, f64)> = (first[3..].iter())
        .map(|e| {
            (
                e["padded_tokens"].as_f64().unwrap(),
                e["attn_work"].as_f64().unwrap(),
                e["step_s"].as_f64().unwrap(),
            )
        })
        .collect();
    let s = |f: &dyn Fn(&(f64, f64, f64)) -> f64| w.iter().map(f).sum::<f64>();
    let (xx, xy, yy) = (s(&|r| r.0 * r.0), s(&|r| r.0 * r.1), s(&|r| r.1 * r.1));
    let (xt, yt) = (s(&|r| r.0 * r.2), s(&|r| r.1 * r.2));
    let det = xx * yy - xy * xy;
    let (a, b) = ((xt * yy - yt * xy) / det, (yt * xx - xt * xy) / det);
    let mut ratio: Vec<f64> = w.iter().map(|r| r.2 / (a * r.0 + b * r.1)).collect();
    ratio.sort_by(f64::total_cmp);
    eprintln!(
        "measured / (a·tokens + b·Σn²): min {:.2}, median {:.2}, max {:.2}; median/min {:.2}",
        ratio[0],
        ratio[ratio.len() / 2],
        ratio[ratio.len() - 1],
        ratio[ratio.len() / 2] / ratio[0]
    );
    assert!(std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) > 0, "autotune results persisted");
    let (warm2, second) = run("second", 3);
    let tuned = n(&warm2["jit"], "autotunes") + second.iter().map(|e| n(e, "autotunes")).sum::<u64>();
    assert_eq!(tuned, 0, "the second run tunes nothing: {warm2} {second:?}");
    let (a, b) = (first[2]["loss"].as_f64().unwrap(), second[2]["loss"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5 * a.abs(), "cached tuning, same result: {a} vs {b}");
}

/// On the backend users get (`--backend wgpu`: Burn's fusion and autotune as shipped), a trained
/// tiny model's greedy answer (`generate`, KV cache, up to 64 tokens) is the CPU's, and `score` is
/// the CPU's within 1e-4.
#[test]
fn wgpu_generation_and_scores_equal_the_cpu() {
    let d = tempfile::tempdir().unwrap();
    ok(d.path(), &["train", "--steps", "40", "--quiet", "--out", "run"]);
    let answer = |backend: &str| {
        let out = common::core_cli(
            d.path(),
            &[
                "generate",
                "--model",
                "run/export",
                "--backend",
                backend,
                "--max-new-tokens",
                "64",
                "--prompt",
                "Find the pass key in the text and repeat it.",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (String::from_utf8(out.stdout).unwrap(), err)
    };
    let ((cpu, cpu_err), (gpu, gpu_err)) = (answer("cpu"), answer("wgpu"));
    assert_eq!(cpu, gpu, "greedy answers differ:\ncpu: {cpu_err}\nwgpu: {gpu_err}");
    // The answer ends at the model's end of turn; 64 tokens without a stop token are compared in
    // core/tests/wgpu_backend.rs.
    assert!(!cpu.trim().is_empty(), "an answer was compared: {cpu_err}");
    // 20 held-out examples: lavapipe is slow.
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../datasets/sample/eval.jsonl"))
            .unwrap();
    let head: String = sample.lines().take(20).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.path().join("eval.jsonl"), head).unwrap();
    let scores = |backend: &str| -> Vec<f64> {
        ok(d.path(), &["score", "--model", "run/export", "--data", "eval.jsonl", "--backend", backend])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect()
    };
    let (c, g) = (scores("cpu"), scores("wgpu"));
    assert_eq!(c.len(), 20);
    for (x, y) in c.iter().zip(&g) {
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "score cpu {x} vs wgpu {y}");
    }
}
