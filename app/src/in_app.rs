//! Training inside the app — a browser tab or the desktop window — with no `core-cli` process:
//! the library's `Trainer` on a preset on the CPU backend, nothing written anywhere. Natively it takes
//! one optimizer step per frame; in the browser the session runs in a Web Worker
//! (`worker.rs`) and the page reads its reports each frame. The run is the one `core-cli
//! train` would make with the Train view's settings (same plan, same step code; the UI test checks
//! the losses are identical natively, the browser test in the page). Opt-in
//! (`?backend=webgpu`): in a browser with WebGPU the session runs there instead, its steps futures
//! (WebGPU reads back asynchronously) polled once per frame.

use longalign::model::Precision;
use longalign::plan::{PlanConfig, Strategy};
use longalign::train::StepReport;
use longalign::train::TrainConfig;
use longalign::train::session::CpuSession;

use crate::AppState;
use crate::curves::curve;

/// The in-app trainer's settings and state.
pub struct InApp {
    /// A preset: `tiny` (the browser's size), `small`, `medium`.
    pub model: String,
    pub steps: usize,
    pub lr: f64,
    pub session: Option<CpuSession>,
    pub history: Vec<StepReport>,
    pub running: bool,
    pub error: Option<String>,
    /// Natively the Train tab shows this instead of the core-cli run (in the browser: always).
    pub shown: bool,
    /// `cpu`, or `webgpu` (browser, when [`InApp::webgpu`] is set).
    pub backend: longalign::backend::Backend,
    /// The page was opened with `?backend=webgpu`, has a WebGPU adapter, and Burn's device on it
    /// is set up (tested on headless Chromium's SwiftShader WebGPU only, see the README).
    pub webgpu: bool,
    /// Steps of the current run (0 before the first).
    pub total: usize,
    /// The current run took all its steps.
    pub finished: bool,
    #[cfg(target_arch = "wasm32")]
    pending: Option<webgpu::StepFuture>,
    /// In the browser, CPU training runs in a Web Worker (the page keeps drawing).
    #[cfg(target_arch = "wasm32")]
    worker: Option<crate::worker::TrainWorker>,
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
            backend: longalign::backend::Backend::Cpu,
            webgpu: false,
            total: 0,
            finished: false,
            #[cfg(target_arch = "wasm32")]
            pending: None,
            #[cfg(target_arch = "wasm32")]
            worker: None,
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
    if app.in_app.backend == longalign::backend::Backend::Webgpu {
        // As core-cli does for GPU backends: sequences padded to multiples of 64 inside
        // attention, so far fewer distinct kernel shapes are compiled (same losses).
        cfg.backend = longalign::backend::Backend::Webgpu;
        cfg.seq_bucket = cfg.backend.default_seq_bucket();
    }
    cfg.precision = app.train_precision;
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
    t.finished = false;
    t.total = 0;
    t.session = None;
    #[cfg(target_arch = "wasm32")]
    {
        t.pending = None;
        t.worker = None;
    }
    let Some(d) = &app.data else {
        t.error = Some("open a dataset first".into());
        return;
    };
    let Some(ds) = &d.dataset else {
        t.error = Some("a lengths file has no text to train on: open a dataset".into());
        return;
    };
    #[cfg(target_arch = "wasm32")]
    if t.backend == longalign::backend::Backend::Webgpu && t.webgpu {
        match longalign::train::session::webgpu_session(&cfg, ds, &d.tokenizer) {
            Ok(s) => {
                t.total = s.total();
                t.pending = Some(webgpu::next(s));
                t.running = true;
            }
            Err(e) => t.error = Some(format!("{e:#}")),
        }
        return;
    }
    #[cfg(target_arch = "wasm32")]
    match crate::worker::TrainWorker::start(&cfg, ds, longalign::train::pad_id(&d.tokenizer)) {
        Ok(w) => {
            t.worker = Some(w);
            t.running = true;
        }
        Err(e) => t.error = Some(e),
    }
    #[cfg(not(target_arch = "wasm32"))]
    match longalign::train::session::cpu_session(&cfg, ds, &d.tokenizer) {
        Ok(s) => {
            t.total = s.total();
            t.session = Some(s);
            t.running = true;
        }
        Err(e) => t.error = Some(format!("{e:#}")),
    }
}

/// Takes the next step if running (on WebGPU: polls the step in flight); returns it when one
/// finished.
pub fn tick(t: &mut InApp) -> Option<&StepReport> {
    if !t.running {
        #[cfg(target_arch = "wasm32")]
        {
            t.worker = None; // stopped: terminate it
        }
        return None;
    }
    #[cfg(target_arch = "wasm32")]
    if let Some(w) = &t.worker {
        use crate::worker::Report;
        let before = t.history.len();
        for r in w.drain() {
            match r {
                Report::Total(n) => t.total = n,
                Report::Step(s) => t.history.push(s),
                Report::Done => {
                    t.running = false;
                    t.finished = true;
                }
                Report::Error(e) => {
                    t.running = false;
                    t.error = Some(e);
                }
            }
        }
        if !t.running {
            t.worker = None;
        }
        return if t.history.len() > before { t.history.last() } else { None };
    }
    #[cfg(target_arch = "wasm32")]
    if let Some(mut f) = t.pending.take() {
        // Polled once per frame (the app repaints while a step is in flight); the browser
        // completes the readback between frames.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        return match f.as_mut().poll(&mut cx) {
            std::task::Poll::Pending => {
                t.pending = Some(f);
                None
            }
            std::task::Poll::Ready((s, Ok(Some(r)))) => {
                t.history.push(r);
                t.pending = Some(webgpu::next(s));
                t.history.last()
            }
            std::task::Poll::Ready((_, Ok(None))) => {
                t.running = false;
                t.finished = true;
                None
            }
            std::task::Poll::Ready((_, Err(e))) => {
                t.running = false;
                t.error = Some(format!("{e:#}"));
                None
            }
        };
    }
    match t.session.as_mut().and_then(|s| s.step()) {
        Some(r) => {
            t.history.push(r);
            t.history.last()
        }
        None => {
            t.running = false;
            t.finished = t.session.is_some();
            None
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod webgpu {
    use std::future::Future;
    use std::pin::Pin;

    use longalign::train::StepReport;
    use longalign::train::session::WebGpuSession;

    /// One step in flight; it hands the session back with the result.
    pub type StepFuture = Pin<Box<dyn Future<Output = (WebGpuSession, anyhow::Result<Option<StepReport>>)>>>;

    pub fn next(mut s: WebGpuSession) -> StepFuture {
        Box::pin(async move {
            let r = s.step_async().await;
            (s, r)
        })
    }
}

/// Whether the page has a WebGPU adapter (asks the browser; no adapter, no Burn device).
#[cfg(target_arch = "wasm32")]
pub async fn webgpu_adapter() -> bool {
    use eframe::wasm_bindgen::JsCast as _;
    let Some(w) = web_sys::window() else { return false };
    let Ok(gpu) = js_sys::Reflect::get(&w.navigator(), &"gpu".into()) else { return false };
    if gpu.is_undefined() || gpu.is_null() {
        return false;
    }
    let Ok(request) = js_sys::Reflect::get(&gpu, &"requestAdapter".into()) else { return false };
    let Ok(request) = request.dyn_into::<js_sys::Function>() else { return false };
    let Ok(promise) = request.call0(&gpu) else { return false };
    let Ok(promise) = promise.dyn_into::<js_sys::Promise>() else { return false };
    matches!(wasm_bindgen_futures::JsFuture::from(promise).await, Ok(a) if !a.is_null() && !a.is_undefined())
}

/// The one-line status, as tests and the page title read it.
pub fn status(t: &InApp) -> String {
    // `total` is set when a session starts (a WebGPU session is inside its step future).
    let total = t.total;
    let state = if t.running {
        "training"
    } else if t.finished || t.session.is_some() {
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

/// The compute precision, as `--precision` takes it (the CLI run and the in-app session share it).
pub fn precision_picker(ui: &mut egui::Ui, id: &str, precision: &mut Precision) {
    ui.label("precision").on_hover_text(
        "bf16 / f16: mixed precision (f32 weights and optimizer, half-precision compute); \
         bf16 on cpu and cuda, f16 on wgpu and WebGPU",
    );
    egui::ComboBox::from_id_salt(id).selected_text(precision.to_string()).show_ui(ui, |ui| {
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            ui.selectable_value(precision, p, p.to_string());
        }
    });
}

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    ui.strong("Train here (in this app; nothing leaves it)");
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
        if app.in_app.webgpu {
            ui.label("backend");
            ui.radio_value(&mut app.in_app.backend, longalign::backend::Backend::Cpu, "cpu");
            ui.radio_value(
                &mut app.in_app.backend,
                longalign::backend::Backend::Webgpu,
                "webgpu (experimental)",
            );
        }
        precision_picker(ui, "in-app precision", &mut app.train_precision);
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
    tick(&mut app.in_app);
    if app.in_app.running {
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
        curve(&mut cols[0], "loss (in app)", height, &[("loss", h, &|e| e.loss)]);
        curve(
            &mut cols[1],
            "tokens per second (in app)",
            height,
            &[("useful tok/s", h, &|e| e.useful_tok_per_s()), ("padded tok/s", h, &|e| e.padded_tok_per_s())],
        );
    });
}
