//! LongAlign-rs desktop app: open a dataset, see it, and see what naive, sorted and packed
//! batching do to it — side by side, row by row — and what LongAlign's loss weighting does to
//! one step's loss.
//!
//! The app holds no planning or data logic of its own: datasets load through `longalign::data`,
//! and every plan is made by the library's planner from the options the `core-cli plan` command
//! shown under it stands for, so the figures on screen are the CLI's (tests/app_ui.rs checks them
//! against the real command line). The app uses the library only, never `longalign::cli`.
//!
//! [`AppState::ui`] draws everything into a `Ui`: the native window (`main.rs`) and the headless
//! UI tests (`tests/app_ui.rs`, egui_kittest) drive the same function.

mod curves;
pub mod data;
pub mod in_app;
pub mod plans;
#[cfg(not(target_arch = "wasm32"))]
pub mod runs;
mod view_data;
pub mod view_eval;
mod view_plan;
#[cfg(not(target_arch = "wasm32"))]
pub mod view_train;
#[cfg(target_arch = "wasm32")]
pub mod worker;

use std::path::PathBuf;
use web_time::Instant;

use data::Loaded;
use longalign::plan::Strategy;
use plans::{Planned, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Data,
    Plan,
    Train,
    Eval,
}

/// Which plans the visualiser shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    SideBySide,
    One(Strategy),
    /// Packing under next-fit, FFD and BFD side by side.
    Packers,
}

/// Frame-time readout: the UI's own build time and the interval between frames.
#[derive(Default)]
pub struct FrameTimes {
    last_frame: Option<Instant>,
    intervals: std::collections::VecDeque<f64>,
    builds: std::collections::VecDeque<f64>,
}

impl FrameTimes {
    fn push(q: &mut std::collections::VecDeque<f64>, v: f64) {
        if q.len() == 120 {
            q.pop_front();
        }
        q.push_back(v);
    }

    fn mean(q: &std::collections::VecDeque<f64>) -> f64 {
        if q.is_empty() { 0.0 } else { q.iter().sum::<f64>() / q.len() as f64 }
    }

    /// Mean UI build time (ms) and mean frame interval (ms) over the last 120 frames.
    pub fn summary(&self) -> (f64, f64) {
        (Self::mean(&self.builds) * 1e3, Self::mean(&self.intervals) * 1e3)
    }
}

/// A file's name and bytes, handed from the browser's file picker (an async task) to the UI.
pub type PickedFile = std::sync::Arc<std::sync::Mutex<Option<(String, Vec<u8>)>>>;

pub struct AppState {
    pub data: Option<Loaded>,
    pub settings: Settings,
    pub plans: Vec<Planned>,
    /// Packing under each algorithm (made when the packers view is shown).
    pub packers: Vec<Planned>,
    pub tab: Tab,
    pub focus: Focus,
    pub error: Option<String>,
    /// The path field of the top bar.
    pub path_input: String,
    /// Tokenizer directory for data files (empty = built-in).
    pub tokenizer_input: String,
    /// Example shown in the Data view's inspector.
    pub inspect: usize,
    /// Step shown in the loss-weight view.
    pub weight_step: usize,
    /// Repaint continuously (to measure frame rate).
    pub continuous: bool,
    /// Show the frame-time readout (snapshot tests turn it off: timings differ run to run).
    pub timing_readout: bool,
    pub frames: FrameTimes,
    planned_for: Option<Settings>,
    /// Train view: what to start, the run folder, the watched run.
    #[cfg(not(target_arch = "wasm32"))]
    pub launch: runs::Launch,
    pub train_strategy: Strategy,
    /// Compute precision of training (a `core-cli train` run and the in-app session alike).
    pub train_precision: longalign::model::Precision,
    pub run_dir_input: String,
    #[cfg(not(target_arch = "wasm32"))]
    pub run: Option<runs::Run>,
    /// Eval view: the result path field, the open result, the selected item.
    pub eval_input: String,
    pub eval: Option<view_eval::EvalResult>,
    pub eval_item: usize,
    /// A file the browser's picker has read, waiting to be loaded.
    pub picked: PickedFile,
    /// Train view: training inside the app (also in the browser).
    pub in_app: in_app::InApp,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            data: None,
            settings: Settings::default(),
            plans: Vec::new(),
            packers: Vec::new(),
            tab: Tab::Plan,
            focus: Focus::SideBySide,
            error: None,
            path_input: String::new(),
            tokenizer_input: String::new(),
            inspect: 0,
            weight_step: 0,
            continuous: false,
            timing_readout: true,
            frames: FrameTimes::default(),
            planned_for: None,
            #[cfg(not(target_arch = "wasm32"))]
            launch: runs::Launch::default(),
            train_strategy: Strategy::Pack,
            train_precision: Default::default(),
            run_dir_input: "runs/app".into(),
            #[cfg(not(target_arch = "wasm32"))]
            run: None,
            eval_input: String::new(),
            eval: None,
            eval_item: 0,
            picked: Default::default(),
            in_app: Default::default(),
        }
    }
}

impl AppState {
    /// The app with the bundled sample loaded.
    pub fn with_sample() -> Self {
        let mut s = Self::default();
        s.load_sample();
        s
    }

    pub fn load_sample(&mut self) {
        self.set_data(Loaded::sample());
    }

    /// Opens a data file (or lengths file) with the tokenizer in the tokenizer field.
    pub fn open(&mut self, path: PathBuf) {
        let tok =
            (!self.tokenizer_input.trim().is_empty()).then(|| PathBuf::from(self.tokenizer_input.trim()));
        self.path_input = path.display().to_string();
        self.set_data(Loaded::open(&path, tok.as_deref()));
    }

    fn set_data(&mut self, r: anyhow::Result<Loaded>) {
        match r {
            Ok(d) => {
                self.data = Some(d);
                self.error = None;
                self.inspect = 0;
                self.weight_step = 0;
                self.planned_for = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    /// The system's file dialog (natively: blocks until chosen; in the browser: the page's file
    /// picker, read asynchronously and picked up on a later frame).
    /// In the Eval tab the file is an evaluation result, elsewhere a dataset.
    pub fn pick_file(&mut self) {
        let dialog = if self.tab == Tab::Eval {
            rfd::AsyncFileDialog::new().add_filter("evaluation result", &["json"])
        } else {
            rfd::AsyncFileDialog::new().add_filter("data", &["jsonl", "json", "txt", "lengths"])
        };
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(f) = pollster::block_on(dialog.pick_file()) {
            self.open_path(f.path().to_path_buf());
        }
        #[cfg(target_arch = "wasm32")]
        {
            let slot = self.picked.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(f) = dialog.pick_file().await {
                    let bytes = f.read().await;
                    *slot.lock().expect("not poisoned") = Some((f.file_name(), bytes));
                }
            });
        }
    }

    /// A file chosen or dropped natively: a result in the Eval tab, else a dataset.
    fn open_path(&mut self, path: PathBuf) {
        if self.tab == Tab::Eval {
            self.eval_input = path.display().to_string();
            self.set_eval(view_eval::EvalResult::open(&path));
        } else {
            self.open(path);
        }
    }

    /// A file's bytes (the browser's picker or a drop): a result in the Eval tab, else a dataset.
    pub fn open_bytes(&mut self, name: &str, bytes: &[u8]) {
        if self.tab == Tab::Eval {
            let r = std::str::from_utf8(bytes)
                .map_err(|e| anyhow::anyhow!("{name}: not UTF-8 ({e})"))
                .and_then(|t| view_eval::EvalResult::from_json(PathBuf::from(name), t));
            self.set_eval(r);
        } else {
            self.set_data(Loaded::from_bytes(name, bytes));
        }
    }

    pub fn set_eval(&mut self, r: anyhow::Result<view_eval::EvalResult>) {
        match r {
            Ok(r) => {
                self.eval = Some(r);
                self.eval_item = 0;
                self.error = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    /// Re-plans when the settings or the data changed.
    pub fn replan(&mut self) {
        let Some(d) = &self.data else { return };
        let packers_missing = self.focus == Focus::Packers && self.packers.is_empty();
        if self.planned_for.as_ref() == Some(&self.settings) && !packers_missing {
            return;
        }
        let planned = plans::plan_all(d, &self.settings).and_then(|p| {
            let packers = if self.focus == Focus::Packers {
                plans::plan_packers(d, &self.settings)?
            } else {
                Vec::new()
            };
            Ok((p, packers))
        });
        match planned {
            Ok((p, k)) => {
                self.plans = p;
                self.packers = k;
                self.error = None;
            }
            Err(e) => {
                self.plans.clear();
                self.packers.clear();
                self.error = Some(format!("{e:#}"));
            }
        }
        self.planned_for = Some(self.settings.clone());
    }

    /// Draws the whole app.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        let now = Instant::now();
        if let Some(last) = self.frames.last_frame.replace(now) {
            FrameTimes::push(&mut self.frames.intervals, (now - last).as_secs_f64());
        }
        let picked = self.picked.lock().expect("not poisoned").take();
        if let Some((name, bytes)) = picked {
            self.open_bytes(&name, &bytes);
        }
        // Dropped files: a path natively, the bytes in the browser.
        let dropped = ui.ctx().input(|i| i.raw.dropped_files.first().cloned());
        if let Some(f) = dropped {
            match (f.path, f.bytes) {
                (Some(p), _) => self.open_path(p),
                (None, Some(b)) => self.open_bytes(&f.name, &b),
                _ => {}
            }
        }
        self.replan();

        egui::Panel::top("top").show(ui, |ui| self.top_bar(ui));
        egui::CentralPanel::default_margins().show(ui, |ui| {
            if let Some(e) = &self.error {
                ui.colored_label(egui::Color32::from_rgb(200, 60, 60), e);
            }
            if self.tab == Tab::Eval {
                view_eval::show(self, ui);
                return;
            }
            #[cfg(not(target_arch = "wasm32"))]
            if self.tab == Tab::Train && self.run.is_some() && self.data.is_none() {
                view_train::show(self, ui);
                return;
            }
            if self.data.is_none() {
                ui.label("Open a dataset (messages / ShareGPT / Alpaca .jsonl or .json, or a lengths .txt), drop one here, or use the bundled sample.");
                return;
            }
            match self.tab {
                Tab::Data => view_data::show(self, ui),
                Tab::Plan => view_plan::show(self, ui),
                Tab::Train => {
                    // Natively: a core-cli process (any backend, files, resumable) or a session
                    // inside the app; in the browser only the latter.
                    #[cfg(not(target_arch = "wasm32"))]
                    {
                        ui.horizontal(|ui| {
                            ui.selectable_value(&mut self.in_app.shown, false, "core-cli run");
                            ui.selectable_value(&mut self.in_app.shown, true, "train in this app");
                        });
                        if !self.in_app.shown {
                            view_train::show(self, ui);
                            return;
                        }
                    }
                    in_app::show(self, ui);
                }
                _ => {}
            }
        });
        FrameTimes::push(&mut self.frames.builds, t0.elapsed().as_secs_f64());
        if self.continuous {
            ui.ctx().request_repaint();
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.strong("LongAlign-rs");
            ui.separator();
            ui.selectable_value(&mut self.tab, Tab::Data, "Data");
            ui.selectable_value(&mut self.tab, Tab::Plan, "Plan");
            // In the browser the Train tab trains inside the page (no processes, no files).
            ui.selectable_value(&mut self.tab, Tab::Train, "Train");
            ui.selectable_value(&mut self.tab, Tab::Eval, "Eval");
            ui.separator();
            if ui.button("Sample").on_hover_text("the bundled sample dataset").clicked() {
                self.load_sample();
            }
            if ui.button("Open file…").on_hover_text("records (.jsonl, .json) or a lengths .txt").clicked() {
                self.pick_file();
            }
            if cfg!(target_arch = "wasm32") {
                ui.label("or drop one here (it stays in this browser)");
            } else {
                ui.add(egui::TextEdit::singleline(&mut self.path_input).hint_text("path to .jsonl / .json / lengths .txt").desired_width(260.0));
                ui.add(egui::TextEdit::singleline(&mut self.tokenizer_input).hint_text("tokenizer dir (built-in)").desired_width(150.0));
                if ui.button("Open").clicked() && !self.path_input.trim().is_empty() {
                    let p = PathBuf::from(self.path_input.trim());
                    self.open(p);
                }
            }
            if !self.timing_readout {
                return;
            }
            ui.separator();
            ui.checkbox(&mut self.continuous, "measure fps");
            let (build, interval) = self.frames.summary();
            let fps = if interval > 0.0 { 1000.0 / interval } else { 0.0 };
            ui.label(format!("ui {build:.1} ms · frame {interval:.1} ms ({fps:.0} fps)"))
                .on_hover_text("mean over the last 120 frames: time to build this UI, and time between frames (tick 'measure fps' to repaint continuously)");
        });
    }
}

/// The window (native, or the browser's canvas): the same [`AppState`] inside eframe.
pub struct NativeApp {
    pub state: AppState,
    /// Save a screenshot here after `screenshot_after` frames, then close.
    pub screenshot: Option<(PathBuf, u32)>,
    frame: u32,
    #[cfg(target_arch = "wasm32")]
    titled_training: bool,
}

impl NativeApp {
    pub fn new(state: AppState, screenshot: Option<(PathBuf, u32)>) -> Self {
        Self {
            state,
            screenshot,
            frame: 0,
            #[cfg(target_arch = "wasm32")]
            titled_training: false,
        }
    }
}

impl eframe::App for NativeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.state.ui(ui);
        self.frame += 1;
        // The page's title says when the app has drawn (the headless browser test waits for it).
        #[cfg(target_arch = "wasm32")]
        if self.frame == 3
            && let Some(doc) = web_sys::window().and_then(|w| w.document())
        {
            let fill = self.state.plans.iter().map(|p| format!("{} {:.2}", p.name, 100.0 * p.stats.fill));
            doc.set_title(&format!("LongAlign-rs ready · fill % {}", fill.collect::<Vec<_>>().join(" · ")));
        }
        // While training in the page: its progress, or why it stopped.
        #[cfg(target_arch = "wasm32")]
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            let t = &self.state.in_app;
            if t.running {
                doc.set_title(&format!("LongAlign-rs training · {}", in_app::status(t)));
            } else if let Some(e) = &t.error
                && !self.titled_training
            {
                web_sys::console::error_1(&format!("in-app training failed: {e}").into());
                doc.set_title(&format!("LongAlign-rs training failed: {e}"));
                self.titled_training = true;
            }
        }
        // And when a training started from the URL (`?train=N`) is done, with its losses.
        #[cfg(target_arch = "wasm32")]
        if !self.state.in_app.running
            && !self.titled_training
            && self.state.in_app.finished
            && let Some(doc) = web_sys::window().and_then(|w| w.document())
        {
            let losses: Vec<String> =
                self.state.in_app.history.iter().map(|e| format!("{:.5}", e.loss)).collect();
            doc.set_title(&format!(
                "LongAlign-rs trained · {} steps on {} · losses {}",
                losses.len(),
                self.state.in_app.backend,
                losses.join(" ")
            ));
            self.titled_training = true;
        }
        if let Some((path, after)) = &self.screenshot {
            let shot = ui.ctx().input(|i| {
                i.events.iter().find_map(|e| match e {
                    egui::Event::Screenshot { image, .. } => Some(image.clone()),
                    _ => None,
                })
            });
            if let Some(image) = shot {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                #[cfg(not(target_arch = "wasm32"))]
                if let Some(buf) = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
                    && let Err(e) = buf.save(path)
                {
                    eprintln!("saving {}: {e}", path.display());
                }
                #[cfg(target_arch = "wasm32")]
                let _ = (w, h, rgba, path);
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            } else if self.frame == *after {
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Screenshot(egui::UserData::default()));
            }
            ui.ctx().request_repaint();
        }
    }
}
