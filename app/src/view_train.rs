//! The Train view: start `core-cli train` on the open dataset with the plan view's batching, or
//! attach to any run folder, and watch its `events.jsonl`: loss, learning rate, useful vs padded
//! tokens per second, occupancy.

use std::path::PathBuf;

use longalign::model::Precision;
use longalign::plan::Strategy;

use crate::AppState;
use crate::curves::curve;
use crate::data::Origin;
use crate::runs::Run;

/// `core-cli train` arguments for the current data, plan settings and launch settings.
pub fn train_args(app: &AppState, out: &str) -> Option<Vec<String>> {
    let d = app.data.as_ref()?;
    let mut a: Vec<String> = vec!["train".into()];
    match &d.origin {
        Origin::Sample => {}
        Origin::File(p) => {
            a.extend(["--data".into(), p.display().to_string(), "--skip-invalid".into()]);
            if d.tokenizer.name != "builtin" {
                a.extend(["--tokenizer".into(), d.tokenizer.name.clone()]);
            }
        }
        Origin::Lengths(_) => return None,
    }
    let s = &app.settings;
    let l = &app.launch;
    let rows = if app.train_strategy == Strategy::Pack { s.pack_rows } else { s.batch_size };
    for (k, v) in [
        ("--model", l.model.clone()),
        ("--backend", l.backend.to_string()),
        ("--strategy", app.train_strategy.to_string()),
        ("--algorithm", s.algorithm.to_string()),
        ("--loss", s.loss.to_string()),
        ("--max-tokens", s.max_tokens.to_string()),
        ("--batch-size", rows.to_string()),
        ("--accum", s.accum.to_string()),
        ("--seed", s.seed.to_string()),
        ("--steps", l.steps.to_string()),
        ("--lr", l.lr.to_string()),
        ("--out", out.to_string()),
    ] {
        a.push(k.into());
        a.push(v);
    }
    if app.train_precision != Precision::F32 {
        a.extend(["--precision".into(), app.train_precision.to_string()]);
    }
    if s.devices > 1 {
        // The plan view's devices become data-parallel ranks (on cpu: replicas in one process).
        a.push("--devices".into());
        a.push((0..s.devices).map(|d| d.to_string()).collect::<Vec<_>>().join(","));
    }
    a.push("--quiet".into());
    Some(a)
}

/// The one-line status of a run: what the tests and the eye read first.
pub fn status(run: &Run) -> String {
    let state = match (&run.exit, run.running()) {
        (Some(e), _) => e.clone(),
        (None, true) => "running".into(),
        (None, false) => "attached".into(),
    };
    match run.events.last() {
        Some(e) => format!(
            "{state} · step {} · loss {:.4} · lr {:.2e} · useful {:.0} tok/s · padded {:.0} tok/s · occupancy {:.1} %",
            e.step,
            e.loss,
            e.lr,
            e.useful_tok_per_s,
            e.padded_tok_per_s,
            100.0 * e.occupancy
        ),
        None => format!("{state} · no steps yet"),
    }
}

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label("run folder");
        ui.add(egui::TextEdit::singleline(&mut app.run_dir_input).desired_width(260.0));
        if ui
            .button("Attach")
            .on_hover_text("watch this folder's events.jsonl (a run from the CLI or another machine)")
            .clicked()
        {
            app.run = Some(Run::attach(PathBuf::from(app.run_dir_input.trim())));
        }
    });
    ui.horizontal_wrapped(|ui| {
        ui.label("model");
        egui::ComboBox::from_id_salt("model").selected_text(app.launch.model.clone()).show_ui(ui, |ui| {
            for m in ["tiny", "small", "medium"] {
                ui.selectable_value(&mut app.launch.model, m.to_string(), m);
            }
        });
        ui.add(
            egui::TextEdit::singleline(&mut app.launch.model)
                .hint_text("or a model folder")
                .desired_width(160.0),
        );
        ui.label("backend");
        egui::ComboBox::from_id_salt("backend").selected_text(app.launch.backend.as_str()).show_ui(
            ui,
            |ui| {
                for b in [
                    longalign::backend::Backend::Cpu,
                    longalign::backend::Backend::Wgpu,
                    longalign::backend::Backend::Cuda,
                ] {
                    ui.selectable_value(&mut app.launch.backend, b, b.as_str());
                }
            },
        );
        crate::in_app::precision_picker(ui, "precision", &mut app.train_precision);
        ui.label("strategy");
        for s in crate::plans::STRATEGIES {
            ui.radio_value(&mut app.train_strategy, s, format!("train {s}"));
        }
        ui.label("steps");
        ui.add(egui::DragValue::new(&mut app.launch.steps).range(1..=1_000_000));
        ui.label("lr");
        ui.add(egui::DragValue::new(&mut app.launch.lr).speed(1e-4).range(1e-7..=1.0));
    });
    let args = train_args(app, app.run_dir_input.trim());
    ui.horizontal(|ui| {
        let running = app.run.as_ref().is_some_and(Run::running);
        let can_start = args.is_some() && !running && !app.run_dir_input.trim().is_empty();
        if ui.add_enabled(can_start, egui::Button::new("Start")).clicked()
            && let Some(a) = &args
        {
            match Run::start(PathBuf::from(app.run_dir_input.trim()), a.clone()) {
                Ok(r) => app.run = Some(r),
                Err(e) => app.error = Some(format!("{e:#}")),
            }
        }
        if ui.add_enabled(running, egui::Button::new("Stop")).clicked()
            && let Some(r) = &mut app.run
        {
            r.stop();
        }
    });
    match &args {
        Some(a) => ui.add(
            egui::Label::new(egui::RichText::new(format!("core-cli {}", a.join(" "))).monospace()).wrap(),
        ),
        None => ui.label("a lengths file has no text to train on: open a dataset"),
    };
    ui.separator();
    let Some(run) = &mut app.run else {
        ui.label("Start a run, or attach to a run folder.");
        return;
    };
    run.poll(false);
    if run.running() {
        // Keep polling while the process lives, even when nothing moves on screen.
        ui.ctx().request_repaint_after(std::time::Duration::from_millis(500));
    }
    ui.strong(status(run));
    if let Some(e) = &run.error {
        ui.label(egui::RichText::new(e).weak());
    }
    let ev = &run.events;
    if ev.is_empty() {
        return;
    }
    let h = (ui.available_height() / 2.0 - 30.0).max(120.0);
    ui.columns(2, |cols| {
        curve(&mut cols[0], "loss", h, &[("loss", ev, &|e| e.loss)]);
        curve(&mut cols[1], "learning rate", h, &[("lr", ev, &|e| e.lr)]);
    });
    ui.columns(2, |cols| {
        curve(
            &mut cols[0],
            "tokens per second",
            h,
            &[("useful tok/s", ev, &|e| e.useful_tok_per_s), ("padded tok/s", ev, &|e| e.padded_tok_per_s)],
        );
        curve(
            &mut cols[1],
            "occupancy % (useful / padded)",
            h,
            &[("occupancy", ev, &|e| 100.0 * e.occupancy)],
        );
    });
}
