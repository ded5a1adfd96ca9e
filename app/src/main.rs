//! `longalign-app`: the native window, or (built for wasm32) the browser app on a canvas.

#[cfg(not(target_arch = "wasm32"))]
use std::path::PathBuf;

#[cfg(not(target_arch = "wasm32"))]
use clap::Parser;
#[cfg(not(target_arch = "wasm32"))]
use longalign_app::{AppState, Focus, NativeApp, Tab};

#[cfg(not(target_arch = "wasm32"))]
#[derive(Parser, Debug)]
#[command(name = "longalign-app", about = "LongAlign-rs: see your data and what batching does to it")]
struct Args {
    /// Dataset to open (.jsonl / .json records, or a lengths .txt); default: the bundled sample.
    data: Option<PathBuf>,
    /// Tokenizer directory for data files (default: built-in).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Attach the Train view to this run folder (its events.jsonl).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Open this evaluation result (an `eval` output folder) in the Eval view.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Start on this tab: data, plan, train or eval.
    #[arg(long, default_value = "plan")]
    tab: String,
    /// Show one strategy (naive, sorted, pack) instead of all three.
    #[arg(long)]
    only: Option<String>,
    /// Pack row capacity / longest sequence.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Repaint continuously (the top bar then reads out the frame rate).
    #[arg(long)]
    measure: bool,
    /// Save a PNG of the window after `--frames` frames, then quit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    frames: u32,
    #[arg(long, default_value_t = 1400.0)]
    width: f32,
    #[arg(long, default_value_t = 900.0)]
    height: f32,
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    // As core-cli does: on a headless machine (screenshots under Xvfb) Mesa's Vulkan
    // device-select layer would print an alarming `XDG_RUNTIME_DIR` error for eframe's wgpu.
    // SAFETY: first thing in `main`, before any other thread exists.
    unsafe { longalign::jit::quiet_headless_vulkan() };
    let a = Args::parse();
    let mut state = AppState::default();
    if let Some(t) = &a.tokenizer {
        state.tokenizer_input = t.display().to_string();
    }
    match &a.data {
        Some(p) => state.open(p.clone()),
        None => state.load_sample(),
    }
    if let Some(e) = &state.error {
        anyhow::bail!("{e}");
    }
    state.tab = match a.tab.as_str() {
        "data" => Tab::Data,
        "train" => Tab::Train,
        "eval" => Tab::Eval,
        _ => Tab::Plan,
    };
    if let Some(r) = &a.run {
        state.run_dir_input = r.display().to_string();
        state.run = Some(longalign_app::runs::Run::attach(r.clone()));
    }
    if let Some(e) = &a.eval {
        state.eval_input = e.display().to_string();
        state.eval = Some(longalign_app::view_eval::EvalResult::open(e)?);
    }
    if let Some(s) = &a.only {
        state.focus = Focus::One(s.parse().map_err(|e: String| anyhow::anyhow!("--only: {e}"))?);
    }
    if let Some(m) = a.max_tokens {
        state.settings.max_tokens = m;
    }
    state.continuous = a.measure;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([a.width, a.height])
            .with_title("LongAlign-rs"),
        ..Default::default()
    };
    let shot = a.screenshot.map(|p| (p, a.frames.max(2)));
    eframe::run_native(
        "LongAlign-rs",
        options,
        Box::new(move |_cc| Ok(Box::new(NativeApp::new(state, shot)))),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The browser: the app on `<canvas id="longalign">` (web/index.html), with the bundled sample.
/// Files dropped on the page are read in the browser; nothing is sent anywhere.
#[cfg(target_arch = "wasm32")]
fn main() {
    use eframe::wasm_bindgen::JsCast as _;
    if web_sys::window().is_none() {
        return; // the training worker (web/worker.js) loads this module too: no app there
    }
    wasm_bindgen_futures::spawn_local(async {
        let canvas = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("longalign"))
            .and_then(|e| e.dyn_into::<web_sys::HtmlCanvasElement>().ok())
            .expect("the page has <canvas id=\"longalign\">");
        let mut state = longalign_app::AppState::with_sample();
        // `?train=N`: open the Train tab and train the tiny preset N steps in the page at once
        // (a shareable demo link; the headless browser test uses it).
        let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
        let param = |k: &str| {
            search.trim_start_matches('?').split('&').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
        };
        // `?backend=webgpu` (experimental, opt-in): where the page has an adapter, Burn's WebGPU
        // device is set up before the app starts and in-page training runs on it.
        if param("backend") == Some("webgpu") {
            if longalign_app::in_app::webgpu_adapter().await {
                longalign::train::session::init_webgpu().await;
                state.in_app.webgpu = true;
                state.in_app.backend = longalign::backend::Backend::Webgpu;
            } else {
                state.in_app.error =
                    Some("?backend=webgpu: this browser has no WebGPU adapter; training on the CPU".into());
            }
        }
        if let Some(n) = param("max_tokens").and_then(|v| v.parse::<u32>().ok()) {
            state.settings.max_tokens = n.clamp(16, 1 << 20);
        }
        if let Some(n) = param("train").and_then(|v| v.parse::<usize>().ok()) {
            state.tab = longalign_app::Tab::Train;
            state.in_app.steps = n.max(1);
            longalign_app::in_app::start(&mut state);
        }
        let mut options = eframe::WebOptions::default();
        if state.in_app.webgpu {
            // Burn computes on WebGPU; the canvas draws with WebGL. One WebGPU swap chain less
            // (headless Chromium cannot create it, and losing it destroyed every WebGPU device
            // of the page, Burn's included).
            let mut setup = eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle();
            setup.instance_descriptor.backends = eframe::wgpu::Backends::GL;
            options.wgpu_options.wgpu_setup = setup.into();
        }
        let started = eframe::WebRunner::new()
            .start(canvas, options, Box::new(|_cc| Ok(Box::new(longalign_app::NativeApp::new(state, None)))))
            .await;
        if let Err(e) = started {
            web_sys::console::error_1(&format!("LongAlign-rs failed to start: {e:?}").into());
        }
    });
}
