//! Training inside the app — a browser tab or the desktop window — with no `core-cli` process:
//! a core [`Session`] of a preset on the CPU backend, one optimizer step per frame, nothing written
//! anywhere. The run is the one `core-cli train` would make with the Train view's settings (same
//! plan, same step code; the UI test checks the losses are identical natively).

use egui_plot::{Legend, Line, Plot, PlotPoints};
use longalign::batch::{PlanConfig, Strategy};
use longalign::train::TrainConfig;
use longalign::train::session::{CpuSession, SessionStep, cpu_session};

use crate::AppState;

/// The in-app trainer's settings and state.
pub struct InApp {
    /// A preset: `tiny` (the browser's size), `small`, `medium`.
    pub model: String,
    pub steps: usize,
    pub lr: f64,
    pub session: Option<CpuSession>,
    pub history: Vec<SessionStep>,
    pub running: bool,
    pub error: Option<String>,
    /// Natively the Train tab shows this instead of the core-cli run (in the browser: always).
    pub shown: bool,
}

impl Default for InApp {
    fn default() -> Self {
        Self {
            model: "tiny".into(),
            steps: 30,
            lr: 2e-3,
            session: None,
            history: Vec::new(),
            running: false,
            error: None,
            shown: cfg!(target_arch = "wasm32"),
        }
    }
}

/// The run configuration for the current plan settings: what `core-cli train` makes of the
/// arguments the Train view shows (`TrainArgs::to_config`), for the in-app model, steps and lr.
pub fn config(app: &AppState) -> TrainConfig {
    let s = &app.settings;
    let strategy = app.train_strategy;
    let mut cfg = TrainConfig::embedded_default();
    cfg.model = app.in_app.model.clone();
    cfg.plan = PlanConfig {
        strategy,
        algorithm: s.algorithm,
        max_tokens: Some(s.max_tokens),
        batch_size: if strategy == Strategy::Pack { s.pack_rows } else { s.batch_size },
        // A session is one device; the plan view's devices × accumulation become accumulation,
        // which gives the same global steps and loss weights.
        devices: 1,
        accum: s.accum * s.devices,
        loss: s.loss,
        seed: s.seed,
        ..PlanConfig::default()
    };
    cfg.lr = app.in_app.lr;
    cfg.max_steps = Some(app.in_app.steps);
    cfg.init_seed = s.seed;
    cfg
}

/// Starts a session on the open dataset.
pub fn start(app: &mut AppState) {
    let cfg = config(app);
    let t = &mut app.in_app;
    t.history.clear();
    t.error = None;
    t.running = false;
    t.session = None;
    let Some(d) = &app.data else {
        t.error = Some("open a dataset first".into());
        return;
    };
    let Some(ds) = &d.dataset else {
        t.error = Some("a lengths file has no text to train on: open a dataset".into());
        return;
    };
    match cpu_session(&cfg, ds, &d.tokenizer) {
        Ok(s) => {
            t.session = Some(s);
            t.running = true;
        }
        Err(e) => t.error = Some(format!("{e:#}")),
    }
}

/// Takes the next step if running; returns it.
pub fn tick(t: &mut InApp) -> Option<&SessionStep> {
    if !t.running {
        return None;
    }
    match t.session.as_mut().and_then(|s| s.step()) {
        Some(r) => {
            t.history.push(r);
            t.history.last()
        }
        None => {
            t.running = false;
            None
        }
    }
}

/// The one-line status, as tests and the page title read it.
pub fn status(t: &InApp) -> String {
    let total = t.session.as_ref().map_or(0, |s| s.total());
    let state = if t.running {
        "training"
    } else if t.session.is_some() {
        "done"
    } else {
        "idle"
    };
    match t.history.last() {
        Some(e) => format!(
            "{state} · step {}/{total} · loss {:.4} · lr {:.2e} · useful {:.0} tok/s · padded {:.0} tok/s",
            e.step,
            e.loss,
            e.lr,
            e.useful_tok_per_s(),
            e.padded_tok_per_s()
        ),
        None => format!("{state} · no steps yet"),
    }
}

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    ui.strong("Train here (CPU, in this app; nothing leaves it)");
    ui.horizontal_wrapped(|ui| {
        ui.label("preset");
        egui::ComboBox::from_id_salt("in-app model").selected_text(app.in_app.model.clone()).show_ui(
            ui,
            |ui| {
                for m in ["tiny", "small"] {
                    ui.selectable_value(&mut app.in_app.model, m.to_string(), m);
                }
            },
        );
        ui.label("strategy");
        for s in crate::plans::STRATEGIES {
            ui.radio_value(&mut app.train_strategy, s, format!("{s}"));
        }
        ui.label("steps");
        ui.add(egui::DragValue::new(&mut app.in_app.steps).range(1..=100_000));
        ui.label("lr");
        ui.add(egui::DragValue::new(&mut app.in_app.lr).speed(1e-4).range(1e-7..=1.0));
        if ui.add_enabled(!app.in_app.running, egui::Button::new("Train here")).clicked() {
            start(app);
        }
        if ui.add_enabled(app.in_app.running, egui::Button::new("Stop here")).clicked() {
            app.in_app.running = false;
        }
    });
    if tick(&mut app.in_app).is_some() {
        ui.ctx().request_repaint();
    }
    ui.label(status(&app.in_app));
    if let Some(e) = &app.in_app.error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    let h = &app.in_app.history;
    if h.is_empty() {
        return;
    }
    let height = (ui.available_height() - 30.0).clamp(120.0, 260.0);
    ui.columns(2, |cols| {
        plot(&mut cols[0], "loss (in app)", height, &[("loss", h, &|e| e.loss)]);
        plot(
            &mut cols[1],
            "tokens per second (in app)",
            height,
            &[("useful tok/s", h, &|e| e.useful_tok_per_s()), ("padded tok/s", h, &|e| e.padded_tok_per_s())],
        );
    });
}

type Series<'a> = (&'a str, &'a [SessionStep], &'a dyn Fn(&SessionStep) -> f64);

fn plot(ui: &mut egui::Ui, title: &str, height: f32, series: &[Series<'_>]) {
    ui.strong(title);
    Plot::new(title).height(height).legend(Legend::default()).x_axis_label("step").show(ui, |p| {
        for (name, h, f) in series {
            let pts: PlotPoints = h.iter().map(|e| [e.step as f64, f(e)]).collect();
            p.line(Line::new(*name, pts));
        }
    });
}
