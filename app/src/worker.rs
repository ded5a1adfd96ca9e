//! In-page training on the CPU backend runs in a Web Worker, so the page keeps drawing while a step
//! runs (each takes seconds in wasm; on the page's own thread the page froze for as long).
//!
//! ```text
//!   page (egui)                                   worker (web/worker.js → train_worker)
//!   start: config JSON, pad id, token ids ───────▶ Trainer::preset, then step after step
//!   tick: drain the inbox into history   ◀──────── {"total": N}, {"step": …}…, {"done": true}
//!   stop: terminate the worker                     (or {"error": "…"})
//! ```
//!
//! Both sides run this crate's wasm: the worker imports the same `longalign_app.js` (whose start
//! function sees no window there and returns), then calls [`train_worker`] with the first message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use eframe::wasm_bindgen::JsCast as _;
use eframe::wasm_bindgen::prelude::*;
use longalign::data::{Tokenized, TokenizedDataset};
use longalign::train::StepReport;
use longalign::train::TrainConfig;
use longalign::train::session::CpuSession;
use serde::{Deserialize, Serialize};

/// What the worker tells the page, one JSON message each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report {
    /// Steps the session will take.
    Total(usize),
    Step(StepReport),
    Done,
    Error(String),
}

/// The page's handle on a training worker; dropping it terminates the worker.
pub struct TrainWorker {
    worker: web_sys::Worker,
    inbox: Rc<RefCell<VecDeque<String>>>,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::ErrorEvent)>,
}

impl TrainWorker {
    /// Starts `web/worker.js` and hands it the run: the configuration, the padding id and the
    /// dataset's token ids and target masks (flat, with one length per example).
    pub fn start(cfg: &TrainConfig, ds: &TokenizedDataset, pad_id: u32) -> Result<Self, String> {
        let opts = web_sys::WorkerOptions::new();
        opts.set_type(web_sys::WorkerType::Module);
        let worker = web_sys::Worker::new_with_options("./worker.js", &opts)
            .map_err(|e| format!("could not start the training worker: {e:?}"))?;
        let inbox = Rc::new(RefCell::new(VecDeque::new()));
        let sink = inbox.clone();
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            if let Some(s) = e.data().as_string() {
                sink.borrow_mut().push_back(s);
            }
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let sink = inbox.clone();
        let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
            let r = Report::Error(format!("training worker: {}", e.message()));
            sink.borrow_mut().push_back(serde_json::to_string(&r).unwrap_or_default());
        });
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));

        let (mut ids, mut targets, mut lens) = (Vec::new(), Vec::new(), Vec::new());
        for t in &ds.tokens {
            ids.extend_from_slice(&t.ids);
            targets.extend(t.targets.iter().map(|&m| m as u8));
            lens.push(t.ids.len() as u32);
        }
        let msg = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&msg, &k.into(), v).map(|_| ());
        let config = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
        set("config", &config.into())
            .and_then(|_| set("file", &ds.file.clone().into()))
            .and_then(|_| set("pad_id", &pad_id.into()))
            .and_then(|_| set("ids", &js_sys::Uint32Array::from(&ids[..]).into()))
            .and_then(|_| set("targets", &js_sys::Uint8Array::from(&targets[..]).into()))
            .and_then(|_| set("lens", &js_sys::Uint32Array::from(&lens[..]).into()))
            .and_then(|_| worker.post_message(&msg))
            .map_err(|e| format!("could not message the training worker: {e:?}"))?;
        Ok(Self { worker, inbox, _on_message: on_message, _on_error: on_error })
    }

    /// The reports that arrived since the last call.
    pub fn drain(&self) -> Vec<Report> {
        self.inbox
            .borrow_mut()
            .drain(..)
            .map(|s| {
                serde_json::from_str(&s).unwrap_or_else(|e| Report::Error(format!("bad report {s:?}: {e}")))
            })
            .collect()
    }
}

impl Drop for TrainWorker {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// The worker's side (called by `web/worker.js` with the page's first message): builds the session
/// and takes every step, reporting each.
#[wasm_bindgen]
pub fn train_worker(msg: JsValue) {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let post = |r: &Report| {
        let _ = scope.post_message(&serde_json::to_string(r).unwrap_or_default().into());
    };
    match session(&msg) {
        Ok(mut s) => {
            post(&Report::Total(s.total()));
            while let Some(step) = s.step() {
                post(&Report::Step(step));
            }
            post(&Report::Done);
        }
        Err(e) => post(&Report::Error(e)),
    }
}

fn session(msg: &JsValue) -> Result<CpuSession, String> {
    let get = |k: &str| js_sys::Reflect::get(msg, &k.into()).map_err(|e| format!("message field {k}: {e:?}"));
    let cfg: TrainConfig = serde_json::from_str(&get("config")?.as_string().ok_or("config: not a string")?)
        .map_err(|e| format!("config: {e}"))?;
    let file = get("file")?.as_string().unwrap_or_default();
    let pad_id = get("pad_id")?.as_f64().ok_or("pad_id: not a number")? as u32;
    let ids = js_sys::Uint32Array::new(&get("ids")?).to_vec();
    let targets = js_sys::Uint8Array::new(&get("targets")?).to_vec();
    let lens = js_sys::Uint32Array::new(&get("lens")?).to_vec();
    if ids.len() != targets.len() || lens.iter().map(|&n| n as usize).sum::<usize>() != ids.len() {
        return Err("the page sent inconsistent token arrays".into());
    }
    let mut at = 0;
    let tokens = lens
        .iter()
        .map(|&n| {
            let (a, b) = (at, at + n as usize);
            at = b;
            Tokenized { ids: ids[a..b].to_vec(), targets: targets[a..b].iter().map(|&m| m != 0).collect() }
        })
        .collect();
    let ds = TokenizedDataset {
        file,
        examples: Vec::new(),
        lines: Vec::new(),
        by_policy: Default::default(),
        tokens,
        formats: Default::default(),
        skipped: Vec::new(),
    };
    CpuSession::preset(&cfg, &ds, pad_id, &Default::default()).map_err(|e| format!("{e:#}"))
}
