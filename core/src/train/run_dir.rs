//! A run's folder: the one place that knows its layout and reads its configuration.
//!
//! ```text
//! RUN_DIR/
//! ├── config.toml          the TrainConfig the run was started with (resume and export read it)
//! ├── events.jsonl         one StepEvent per optimizer step (events.rs)
//! ├── checkpoints/step-N/  model, optimizer state, state.json (checkpoint.rs)
//! ├── export/              the trained model as a Hugging Face directory (LoRA: merged)
//! └── adapter/             a LoRA run's adapter as a PEFT directory
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::TrainConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `runs/<YYYYmmdd-HHMMSS>` (UTC, now): where a run goes without `--out`.
    pub fn timestamped() -> Self {
        Self::new(Path::new("runs").join(crate::util::time::stamp(crate::util::time::unix_now())))
    }

    pub fn config(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    pub fn events(&self) -> PathBuf {
        self.path.join("events.jsonl")
    }

    pub fn export(&self) -> PathBuf {
        self.path.join("export")
    }

    /// A LoRA run's adapter, as PEFT saves one.
    pub fn adapter(&self) -> PathBuf {
        self.path.join("adapter")
    }

    /// Whether a run was already started here (it has logged steps).
    pub fn has_run(&self) -> bool {
        self.events().exists()
    }

    /// The configuration the run was started with.
    pub fn read_config(&self) -> anyhow::Result<TrainConfig> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: not a run config", path.display()))
    }

    /// Creates the folder and writes `cfg` as its `config.toml` (atomically).
    pub fn write_config(&self, cfg: &TrainConfig) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.path).with_context(|| format!("creating {}", self.path.display()))?;
        crate::util::write_atomic(&self.config(), toml::to_string(cfg)?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_bad_files_name_the_path() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::new(d.path().join("r"));
        assert!(!run.has_run());
        let cfg = TrainConfig::embedded_default();
        run.write_config(&cfg).unwrap();
        assert_eq!(run.read_config().unwrap(), cfg);
        std::fs::write(run.config(), "lr = \"fast\"").unwrap();
        let e = format!("{:#}", run.read_config().unwrap_err());
        assert!(e.contains("config.toml: not a run config"), "{e}");
        let e = format!("{:#}", RunDir::new(d.path().join("none")).read_config().unwrap_err());
        assert!(e.contains("reading") && e.contains("none"), "{e}");
        assert!(RunDir::timestamped().path.starts_with("runs"));
    }
}
