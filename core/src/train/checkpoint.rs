//! Checkpoints: `RUN_DIR/checkpoints/step-N/` with the model, the optimizer state and `state.json`.
//!
//! Written atomically: everything goes to a hidden temporary folder, is synced to disk, and the
//! folder is renamed into place; `state.json` is written last. A crash leaves either a complete
//! checkpoint or none. The learning-rate schedule and the data order are functions of the step and
//! the seed, so the step is all the rest of the state there is.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;

use crate::model::Llama;

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::new()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        std::fs::File::open(entry?.path())?.sync_all()?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Saves step `step` under `out/checkpoints/step-{step}`.
pub fn save<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    out: &Path,
    step: usize,
    model: &Llama<B>,
    optim: &O,
) -> anyhow::Result<PathBuf> {
    let root = out.join("checkpoints");
    std::fs::create_dir_all(&root)?;
    let tmp = root.join(format!(".step-{step}.tmp"));
    let dst = root.join(format!("step-{step}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    model.clone().save_file(tmp.join("model"), &recorder()).context("saving model checkpoint")?;
    recorder().record(optim.to_record(), tmp.join("optimizer")).context("saving optimizer checkpoint")?;
    std::fs::write(tmp.join("state.json"), serde_json::json!({ "step": step }).to_string())?;
    sync_dir(&tmp)?;
    if dst.exists() {
        std::fs::remove_dir_all(&dst)?;
    }
    std::fs::rename(&tmp, &dst)?;
    std::fs::File::open(&root)?.sync_all()?;
    Ok(dst)
}

/// The checkpoint with the highest step in `out`, if any.
pub fn latest(out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let root = out.join("checkpoints");
    if !root.exists() {
        return Ok(None);
    }
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in std::fs::read_dir(&root)? {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(step) = step
            && path.join("state.json").exists()
            && best.as_ref().is_none_or(|(b, _)| step > *b)
        {
            best = Some((step, path));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Restores model and optimizer from a checkpoint; returns them with the step reached.
pub fn load<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    ck: &Path,
    model: Llama<B>,
    optim: O,
    device: &B::Device,
) -> anyhow::Result<(Llama<B>, O, usize)> {
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ck.join("state.json"))?)
        .with_context(|| format!("{}: bad state.json", ck.display()))?;
    let step =
        state["step"].as_u64().with_context(|| format!("{}: state.json has no step", ck.display()))? as usize;
    let model = model
        .load_file(ck.join("model"), &recorder(), device)
        .with_context(|| format!("{}: loading model", ck.display()))?;
    let record = recorder()
        .load(ck.join("optimizer"), device)
        .with_context(|| format!("{}: loading optimizer", ck.display()))?;
    Ok((model, optim.load_record(record), step))
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Hugging Face model directory (a LoRA run's adapters merged into the weights).
    Merged,
    /// A LoRA run's adapter as a PEFT directory.
    Peft,
}

/// Exports the last checkpoint of the run in `run` to `out` as `format` says (on the CPU backend:
/// export is a copy of weights, no compute). Returns the step it held.
pub fn export_latest(run: &super::RunDir, out: &Path, format: ExportFormat) -> anyhow::Result<usize> {
    let given = run.read_config()?;
    if format == ExportFormat::Peft && given.lora.is_none() {
        anyhow::bail!("{}: not a LoRA run, so it has no adapter to export", run.path.display());
    }
    let ck = latest(&run.path)?.with_context(|| format!("{}: no checkpoint", run.path.display()))?;
    let cfg = super::run::resolve_hub(&given)?;
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    let (mcfg, model) = super::run_model::<B>(&cfg, &device)?;
    let optim = burn::optim::AdamWConfig::new().init::<B, Llama<B>>();
    let (model, _, step) = load::<B, _>(&ck, model, optim, &device)?;
    let model = burn::module::AutodiffModule::valid(&model);
    match (format, &cfg.lora) {
        (ExportFormat::Peft, Some(l)) => {
            crate::model::peft::save_adapter(&model, &mcfg, l, &given.model, out)?
        }
        _ => super::export(&model, &mcfg, &cfg, out)?,
    }
    Ok(step)
}
