//! The app driven headless (egui_kittest): what it shows equals what `core-cli plan --json`
//! computes for the command line it displays; snapshots of the main screens.

use clap::Parser;
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};
use longalign_app::{AppState, Tab};
use serde_json::Value;

/// What `core-cli plan --compare --json <extra>` prints (the CLI's own parser and planner).
fn cli_json(extra: &[&str]) -> Value {
    let args = ["core-cli", "plan", "--compare", "--json"].iter().chain(extra);
    match longalign::cli::Cli::try_parse_from(args).unwrap().command {
        Some(longalign::cli::Command::Plan(a)) => longalign::cli::plan::json(&a).unwrap(),
        _ => unreachable!(),
    }
}

fn harness(mut state: AppState) -> Harness<'static, AppState> {
    state.timing_readout = false;
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_ui_state(|ui, s: &mut AppState| s.ui(ui), state)
}

fn snapshots() -> SnapshotOptions {
    SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/snapshots"))
}

/// Asserts the fill and steps each strategy shows are the CLI's.
fn assert_shows(h: &Harness<'_, AppState>, want: &Value, strategies: &[&str]) {
    for s in strategies {
        let fill = want[s]["fill"].as_f64().unwrap();
        h.get_by_label(&format!("{s} fill {:.2} %", 100.0 * fill));
        h.get_by_label(&format!(
            "{s} padding {:.2} %",
            100.0 * want[s]["padding_fraction"].as_f64().unwrap()
        ));
        h.get_by_label(&format!("{s} steps {}", want[s]["steps"]));
    }
}

#[test]
fn plan_view_shows_what_core_cli_plan_prints_and_follows_its_controls() {
    let mut h = harness(AppState::with_sample());
    h.run();
    let want = cli_json(&["--max-tokens", "2048"]);
    assert_shows(&h, &want, &["naive", "sorted", "pack"]);
    // Packing does better than naive batching on the sample, as the paper says it should.
    assert!(want["pack"]["fill"].as_f64().unwrap() > want["naive"]["fill"].as_f64().unwrap());
    h.snapshot_options("plan_side_by_side", &snapshots());

    // Switch the packing algorithm: the pack column follows the CLI's --algorithm next-fit.
    h.get_by_label("next-fit").click();
    h.run();
    let nf = cli_json(&["--max-tokens", "2048", "--algorithm", "next-fit"]);
    assert_shows(&h, &nf, &["pack"]);
    assert_eq!(
        h.state().plans[2].command.split_whitespace().skip_while(|w| *w != "--algorithm").nth(1),
        Some("next-fit")
    );

    // One strategy alone: the others' numbers leave the screen.
    h.get_by_label("sorted only").click();
    h.run();
    assert_shows(&h, &nf, &["sorted"]);
    assert!(h.query_by_label_contains("naive fill").is_none());
    assert!(h.query_by_label_contains("pack fill").is_none());

    // The three packers side by side, each as `core-cli plan --algorithm …` packs.
    h.get_by_label("packers").click();
    h.run();
    for algo in ["next-fit", "ffd", "bfd"] {
        let want = cli_json(&["--max-tokens", "2048", "--algorithm", algo]);
        h.get_by_label(&format!("pack/{algo} fill {:.2} %", 100.0 * want["pack"]["fill"].as_f64().unwrap()));
        h.get_by_label(&format!("pack/{algo} steps {}", want["pack"]["steps"]));
    }

    // Devices and accumulation reach the planner: 4 × 2 micro-batches per step.
    h.get_by_label("side by side").click();
    h.state_mut().settings.devices = 4;
    h.state_mut().settings.accum = 2;
    h.run();
    let dp = cli_json(&["--max-tokens", "2048", "--algorithm", "next-fit", "--devices", "4", "--accum", "2"]);
    assert_shows(&h, &dp, &["naive", "sorted", "pack"]);
    // The loss-weight view explains one step.
    h.get_by_label_contains("under sequence weighting");
}

#[test]
fn data_view_reports_the_dataset_and_inspects_examples() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("mixed.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"messages":[{"role":"user","content":"What is two plus two?"},{"role":"assistant","content":"Four."}],"meta":{"source":"math"}}"#, "\n",
            r#"{"conversations":[{"from":"human","value":"Name a colour."},{"from":"gpt","value":"Blue."}],"source":"chat"}"#, "\n",
            r#"{"messages":[{"role":"robot","content":"x"}]}"#, "\n",
            r#"{"instruction":"Say hi","input":"","output":"Hi!"}"#, "\n",
        ),
    )
    .unwrap();
    let mut state = AppState::default();
    state.open(path.clone());
    state.tab = Tab::Data;
    let mut h = harness(state);
    h.run();
    h.get_by_label_contains("3 sequences · 1 invalid records");
    h.get_by_label("1 invalid records (skipped)").click();
    h.run();
    h.get_by_label_contains("line 3: messages[0].role");
    h.get_by_label("math");
    h.get_by_label("chat");
    // The inspector renders the chat template with the answer as the target.
    h.get_by_label_contains("What is two plus two?");

    // The bundled sample's Data screen, as a snapshot.
    let mut state = AppState::with_sample();
    state.tab = Tab::Data;
    let mut h = harness(state);
    h.run();
    h.snapshot_options("data_sample", &snapshots());
}

#[test]
fn ten_thousand_sequences_plan_and_draw() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("mix.txt");
    std::fs::write(
        &path,
        longalign::plan::mix::to_lengths_file(&longalign::plan::mix::longalign_like(5000, 5000, 1)),
    )
    .unwrap();
    let mut state = AppState::default();
    state.open(path);
    state.settings.max_tokens = 65536;
    let mut h = harness(state);
    h.run();
    let want = cli_json(&["--lengths", d.path().join("mix.txt").to_str().unwrap(), "--max-tokens", "65536"]);
    assert_eq!(want["naive"]["sequences"], 10_000);
    assert_shows(&h, &want, &["naive", "sorted", "pack"]);
    // Frames after the first reuse the plans: drawing only the visible rows keeps them cheap. The
    // frame rate is measured in the native app (README); here only that frames keep coming.
    for _ in 0..5 {
        h.step();
    }
}

/// The native window under Xvfb (CI installs it): eframe on wgpu (Mesa's software Vulkan here)
/// draws the plan visualiser and saves its own screenshot.
#[test]
fn native_window_draws_under_xvfb() {
    let d = tempfile::tempdir().unwrap();
    let shot = d.path().join("plan.png");
    let runtime = d.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    let out = std::process::Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1600x1000x24", env!("CARGO_BIN_EXE_longalign-app"), "--screenshot"])
        .arg(&shot)
        .args(["--width", "1200", "--height", "800"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("xvfb-run is installed (apt-get install xvfb xauth; .ci/run does)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&shot).unwrap().to_rgba8();
    assert_eq!((img.width(), img.height()), (1200, 800));
    // Something was drawn: many distinct colours (text, coloured segments), not a blank window.
    let colours: std::collections::HashSet<[u8; 4]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 50, "{} colours", colours.len());
}

fn event(step: usize, loss: f64) -> longalign::train::events::StepEvent {
    longalign::train::events::StepEvent {
        v: 1,
        step,
        epoch: 0,
        loss,
        lr: 1e-3 * step as f64,
        grad_norm: 1.0,
        useful_tokens: 1900,
        padded_tokens: 2048,
        target_tokens: 40,
        sequences: 5,
        rows: 1,
        useful_tok_per_s: 950.0 + step as f64,
        padded_tok_per_s: 1024.0 + step as f64,
        occupancy: 1900.0 / 2048.0,
        seqs_per_row: 5.0,
        step_s: 2.0,
        elapsed_s: 2.0 * step as f64,
        attn_work: 5 * 380 * 380,
        compiles: 0,
        autotunes: 0,
    }
}

#[test]
fn train_view_attaches_to_a_run_folder_and_plots_its_events() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("copied-run");
    std::fs::create_dir(&run).unwrap();
    let mut text: String =
        (1..=20).map(|s| serde_json::to_string(&event(s, 5.0 - 0.1 * s as f64)).unwrap() + "\n").collect();
    text.push_str("{\"v\":1,\"step\":21,\"lo"); // a line still being written
    std::fs::write(run.join("events.jsonl"), text).unwrap();
    let mut state = AppState::with_sample();
    state.tab = Tab::Train;
    state.run_dir_input = run.display().to_string();
    let mut h = harness(state);
    h.run();
    h.get_by_label("Attach").click();
    h.run();
    h.get_by_label("attached · step 20 · loss 3.0000 · lr 2.00e-2 · useful 970 tok/s · padded 1044 tok/s · occupancy 92.8 %");
    // A broken line in the middle is named, not skipped.
    let mut bad = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    bad = bad.replacen("\"step\":3,", "\"step\":\"three\",", 1);
    std::fs::write(run.join("events.jsonl"), bad).unwrap();
    h.get_by_label("Attach").click();
    h.run();
    h.get_by_label_contains("events.jsonl:3:");
    std::fs::write(
        run.join("events.jsonl"),
        (1..=20)
            .map(|s| serde_json::to_string(&event(s, 5.0 - 0.1 * s as f64)).unwrap() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    h.get_by_label("Attach").click();
    h.run();
    // The run folder path differs per test run: mask the field and the command line holding it.
    let field = h.get_by_label("run folder").rect();
    let cmd = h.get_by_label_contains("core-cli train --model").rect();
    h.mask(egui::Rect::from_min_max(field.right_top(), egui::pos2(1400.0, field.bottom() + 2.0)));
    h.mask(cmd.expand(2.0));
    h.snapshot_options("train_attached", &snapshots());
}

/// core-cli next to this test binary (`cargo test --workspace` builds it; target/debug/deps/..).
fn core_cli_path() -> std::path::PathBuf {
    let me = std::env::current_exe().unwrap();
    let p = me.parent().unwrap().parent().unwrap().join(format!("core-cli{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} missing: run the workspace's tests (cargo test --workspace) so core-cli is built",
        p.display()
    );
    p
}

#[test]
fn train_view_starts_core_cli_and_follows_the_run() {
    // SAFETY: set before any thread of this test reads it; the Run spawns core-cli with it.
    unsafe { std::env::set_var("LONGALIGN_CORE_CLI", core_cli_path()) };
    let d = tempfile::tempdir().unwrap();
    let mut state = AppState::with_sample();
    state.tab = Tab::Train;
    state.run_dir_input = d.path().join("run").display().to_string();
    state.launch.steps = 3;
    state.settings.max_tokens = 1024;
    let mut h = harness(state);
    h.run();
    h.get_by_label_contains("--steps 3 --lr");
    h.get_by_label("Start").click();
    h.run();
    let t0 = std::time::Instant::now();
    loop {
        h.step();
        let st = h.state().run.as_ref().map(longalign_app::view_train::status).unwrap_or_default();
        if st.starts_with("finished") {
            assert!(st.contains("· step 3 · loss"), "{st}");
            break;
        }
        assert!(!st.starts_with("failed"), "{st}");
        assert!(t0.elapsed().as_secs() < 300, "no finish: {st}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    h.run();
    h.get_by_label_contains("finished · step 3 · loss");
    assert_eq!(std::fs::read_to_string(d.path().join("run/events.jsonl")).unwrap().lines().count(), 3);
}

#[test]
fn eval_view_opens_longbench_chat_and_needle_results() {
    let d = tempfile::tempdir().unwrap();
    let lbc = d.path().join("lbc");
    std::fs::create_dir(&lbc).unwrap();
    std::fs::write(
        lbc.join("report.json"),
        serde_json::json!({
            "mean_score": 7.0, "mean_score_en": 7.0, "mean_score_zh": null, "scored": 2, "failed": 1,
            "judge_tokens": 10, "prediction_tokens": 20,
            "items": [
                {"idx": 1, "score": 8.0, "chinese": false, "query": "Who wins?", "prediction": "The tortoise.", "analysis": "Correct and brief. Rating: [[8]]", "error": null},
                {"idx": 2, "score": 6.0, "chinese": false, "query": "Why?", "prediction": "Because.", "analysis": "Too short. Rating: [[6]]", "error": null},
                {"idx": 3, "score": null, "chinese": false, "query": "When?", "prediction": "Later.", "analysis": "", "error": "the judge's reply has no [[rating]]"},
            ],
        })
        .to_string(),
    )
    .unwrap();
    let needle = d.path().join("needle");
    std::fs::create_dir(&needle).unwrap();
    std::fs::write(
        needle.join("grid.json"),
        serde_json::json!({
            "lengths": [1000, 2000], "depths": [0, 50], "scores": [[1.0, 1.0], [0.0, 0.0]], "mean": 0.5,
            "judge_scores": [[null, null], [null, null]], "judge_mean": null, "scored": 4, "missing": 0,
            "cells": [{"length": 1000, "depth_pct": 0, "key": "4711", "answer": "4711", "prompt_tokens": 1000, "score": 1.0}],
        })
        .to_string(),
    )
    .unwrap();
    let mut state = AppState::default();
    state.tab = Tab::Eval;
    state.eval_input = lbc.display().to_string();
    let mut h = harness(state);
    h.run();
    h.get_by_label("Open result").click();
    h.run();
    h.get_by_label("mean score 7.00 · English 7.00 · Chinese — · 2 scored, 1 failed");
    h.get_by_label("#2").click();
    h.run();
    h.get_by_label("Too short. Rating: [[6]]");
    h.get_by_label("#3").click();
    h.run();
    h.get_by_label("the judge's reply has no [[rating]]");

    h.state_mut().eval_input = needle.display().to_string();
    h.get_by_label("Open result").click();
    h.run();
    h.get_by_label("mean exact retrieval 50.0 % · 4 cells scored, 0 missing");
    // Paths differ per run: mask the field and the heading before the snapshot.
    let heading = h.get_by_label_contains("Needle in a haystack ·").rect();
    h.mask(egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1400.0, heading.bottom() + 2.0)));
    h.snapshot_options("eval_needle", &snapshots());

    h.state_mut().eval_input = d.path().display().to_string();
    h.get_by_label("Open result").click();
    h.run();
    h.get_by_label_contains("no report.json (longbench-chat) or grid.json (needle)");
}

/// What the browser's file picker (and a drop) hands over — a name and bytes — loads like a file:
/// records by their format, `.txt` as lengths.
#[test]
fn picked_bytes_load_as_records_or_lengths() {
    let mut state = AppState::with_sample();
    state.tab = Tab::Data;
    let picked = state.picked.clone();
    let mut h = harness(state);
    h.run();
    *picked.lock().unwrap() = Some(("lengths.txt".into(), b"100 10\n2000\n300 0\n".to_vec()));
    h.run();
    h.get_by_label("lengths.txt");
    h.get_by_label_contains("3 sequences · 0 invalid records");
    let rec = r#"{"messages":[{"role":"user","content":"Hi?"},{"role":"assistant","content":"Hello."}]}"#;
    *picked.lock().unwrap() = Some(("chat.jsonl".into(), format!("{rec}\n{rec}\nnot json\n").into_bytes()));
    h.run();
    h.get_by_label_contains("2 sequences · 1 invalid records");
    *picked.lock().unwrap() = Some(("bad.txt".into(), b"12 40\n".to_vec()));
    h.run();
    h.get_by_label_contains("bad.txt:1: target_len: 40 exceeds total_len 12");
}

/// In the Eval tab, a picked or dropped file is a result: what the browser build opens.
#[test]
fn eval_tab_opens_picked_result_bytes() {
    let mut state = AppState::default();
    state.tab = Tab::Eval;
    let picked = state.picked.clone();
    let mut h = harness(state);
    h.run();
    let report = serde_json::json!({
        "mean_score": 5.5, "mean_score_en": 5.5, "mean_score_zh": null, "scored": 2, "failed": 0,
        "items": [
            {"idx": 7, "score": 5.0, "query": "Q?", "prediction": "A.", "analysis": "[[5]]", "error": null},
            {"idx": 8, "score": 6.0, "query": "R?", "prediction": "B.", "analysis": "[[6]]", "error": null},
        ],
    });
    *picked.lock().unwrap() = Some(("report.json".into(), report.to_string().into_bytes()));
    h.run();
    h.get_by_label("mean score 5.50 · English 5.50 · Chinese — · 2 scored, 0 failed");
    *picked.lock().unwrap() = Some(("notes.json".into(), b"{\"x\": 1}".to_vec()));
    h.run();
    h.get_by_label_contains("notes.json: neither a LongBench-Chat report");
}

/// "Train here" trains inside the app (no core-cli process): the run is the one `core-cli train`
/// makes from the command the view shows, and the view follows it step by step.
#[test]
fn train_here_runs_what_core_cli_train_would_and_shows_its_steps() {
    let mut state = AppState::with_sample();
    state.tab = Tab::Train;
    state.settings.max_tokens = 512;
    state.in_app.steps = 2;
    state.launch.steps = 2;
    state.launch.lr = state.in_app.lr;
    let cli_config = |state: &AppState| {
        let args = longalign_app::view_train::train_args(state, "out").unwrap();
        match longalign::cli::Cli::try_parse_from(std::iter::once("core-cli".to_string()).chain(args))
            .unwrap()
            .command
        {
            Some(longalign::cli::Command::Train(a)) => a.to_config(1),
            _ => unreachable!(),
        }
    };
    assert_eq!(longalign_app::in_app::config(&state), cli_config(&state));
    // The precision picked in the view reaches both the command and the in-app session.
    state.train_precision = longalign::model::Precision::Bf16;
    let bf16 = cli_config(&state);
    assert_eq!(bf16.precision, longalign::model::Precision::Bf16);
    assert_eq!(longalign_app::in_app::config(&state), bf16);
    state.train_precision = Default::default();

    let mut h = harness(state);
    h.run();
    h.get_by_label("train in this app").click();
    h.run();
    h.get_by_label("idle · no steps yet");
    h.get_by_label("Train here").click();
    for _ in 0..20 {
        h.step();
        if !h.state().in_app.running && h.state().in_app.session.is_some() {
            break;
        }
    }
    h.run();
    let hist = &h.state().in_app.history;
    assert_eq!(hist.len(), 2);
    let last = &hist[1];
    h.get_by_label_contains(&format!("done · step 2/2 · loss {:.4}", last.loss));
    assert!(hist.iter().all(|e| e.loss.is_finite() && e.counts.useful_tokens > 0));
    // Speeds differ run to run: mask the status line and the tokens-per-second plot.
    let status = h.get_by_label_contains("done · step 2/2").rect();
    h.mask(egui::Rect::from_min_max(status.left_top(), egui::pos2(1400.0, status.bottom() + 1.0)));
    h.mask(egui::Rect::from_min_max(egui::pos2(700.0, status.bottom() + 1.0), egui::pos2(1400.0, 900.0)));
    h.snapshot_options("train_here", &snapshots());
}
