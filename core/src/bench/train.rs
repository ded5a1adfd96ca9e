//! Training throughput under naive, sorted and packed batching: the same data and model, one
//! epoch (or `steps`) each, each in its own `core-cli train` process so that peak memory is each
//! strategy's own. Every strategy runs twice: padded (`--padding-free false`: each micro-batch's
//! rows computed at their row length, padding included — the paper's comparison) and padding-free
//! (the same plan computed as one stream of its sequences: what `core-cli train` does).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::backend::Backend;
use crate::train::RunSummary;
use crate::util::table::{Table, compact};

pub struct TrainBenchConfig {
    /// The `core-cli` binary that trains (the benchmark runs it once per strategy).
    pub exe: PathBuf,
    /// `tiny` or a Hugging Face model directory.
    pub model: String,
    /// Data (default: a generated long-tailed mix of `examples` examples).
    pub data: Option<PathBuf>,
    pub examples: usize,
    pub tokenizer: Option<PathBuf>,
    pub backend: Backend,
    /// Pack row capacity (and longest sequence for naive/sorted).
    pub max_tokens: u32,
    /// Sequences per micro-batch for naive and sorted.
    pub batch_size: usize,
    /// Stop each strategy after this many steps (default: one epoch).
    pub steps: Option<usize>,
    /// Keep the runs here (default: a scratch folder, removed afterwards).
    pub out: Option<PathBuf>,
    /// A line on stderr as each strategy starts.
    pub progress: bool,
    /// Train with `--tf32` (f32 matmuls as TF32 on CUDA GPUs that have it).
    pub tf32: bool,
}

/// One strategy's run.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    /// Tokens of real sequences over the training loop's wall time.
    pub useful_tok_per_s: f64,
    /// Tokens computed (padding included) over the same time.
    pub padded_tok_per_s: f64,
    pub wall_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub steps: usize,
    pub useful_tokens: u64,
    pub padded_tokens: u64,
    pub occupancy: f64,
    pub final_loss: f64,
    /// The warm-up before step 1 (JIT backends): input shapes run and its seconds, not in
    /// `wall_s` or the tok/s figures; its compiles and autotune runs are in the totals below.
    pub warm_up_shapes: usize,
    pub warm_up_s: f64,
    /// Kernel compilations and autotune runs over the run, warm-up included (JIT backends; 0 on
    /// the CPU) …
    pub compiles: u64,
    pub autotunes: u64,
    /// … and after its first [`WARMUP_STEPS`] steps, which should be none.
    pub compiles_after_warmup: u64,
    pub autotunes_after_warmup: u64,
}

/// Steps a JIT backend may spend compiling and tuning before a run is warm.
pub const WARMUP_STEPS: usize = 3;

/// The three strategies under one layout.
#[derive(Debug, Clone, Serialize)]
pub struct Strategies {
    pub naive: StrategyResult,
    pub sorted: StrategyResult,
    pub pack: StrategyResult,
}

/// The three strategies side by side, padded and padding-free (the JSON object `bench train
/// --json` prints: `naive`, `sorted`, `pack` padded as in the paper, and `padding_free.*`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchReport {
    #[serde(flatten)]
    pub padded: Strategies,
    pub padding_free: Strategies,
}

impl TrainBenchReport {
    /// `(name, result)`: naive, sorted, pack padded, then the same padding-free.
    pub fn strategies(&self) -> [(&'static str, &StrategyResult); 6] {
        let (p, f) = (&self.padded, &self.padding_free);
        [
            ("naive", &p.naive),
            ("sorted", &p.sorted),
            ("pack", &p.pack),
            ("naive", &f.naive),
            ("sorted", &f.sorted),
            ("pack", &f.pack),
        ]
    }

    /// The strategies side by side, as `core-cli bench train` prints them.
    pub fn render(&self, cfg: &TrainBenchConfig) -> String {
        let mut header = vec![String::new()];
        header.extend(self.strategies().iter().map(|(n, _)| n.to_string()));
        let mut t = Table::new(header);
        let mut layout = vec!["layout".to_string()];
        layout.extend(["padded"; 3].iter().chain(&["padding-free"; 3]).map(|s| s.to_string()));
        t.row(layout);
        let row = |t: &mut Table, label: &str, f: &dyn Fn(&StrategyResult) -> String| {
            let mut cells = vec![label.to_string()];
            cells.extend(self.strategies().iter().map(|(_, s)| f(s)));
            t.row(cells);
        };
        row(&mut t, "useful tok/s", &|s| format!("{:.0}", s.useful_tok_per_s));
        row(&mut t, "padded tok/s", &|s| format!("{:.0}", s.padded_tok_per_s));
        row(&mut t, "occupancy %", &|s| format!("{:.1}", 100.0 * s.occupancy));
        row(&mut t, "steps", &|s| s.steps.to_string());
        row(&mut t, &format!("compiles (after step {WARMUP_STEPS})"), &|s| {
            format!("{} ({})", s.compiles, s.compiles_after_warmup)
        });
        row(&mut t, &format!("autotunes (after step {WARMUP_STEPS})"), &|s| {
            format!("{} ({})", s.autotunes, s.autotunes_after_warmup)
        });
        row(&mut t, "wall s (+ warm-up s)", &|s| format!("{:.1} (+{:.1})", s.wall_s, s.warm_up_s));
        row(&mut t, "peak RSS", &|s| {
            s.peak_rss_bytes.map_or("?".into(), |b| format!("{}B", compact(b as f64)))
        });
        row(&mut t, "vs padded naive (useful tok/s)", &|s| {
            format!("{:.2}×", s.useful_tok_per_s / self.padded.naive.useful_tok_per_s)
        });
        let data = match &cfg.data {
            Some(d) => d.display().to_string(),
            None => {
                format!("generated long-tailed mix, {} examples, 128–{} tokens", cfg.examples, cfg.max_tokens)
            }
        };
        format!(
            "one epoch each, model {}, backend {}{}, data: {data}; tok/s = tokens / training-loop wall time; \
             padded tok/s counts what was computed (padded: rows × row length; padding-free: the stream)\n\n{}\n",
            cfg.model,
            cfg.backend,
            if cfg.tf32 { " (TF32 allowed)" } else { "" },
            t.render()
        )
    }
}

pub fn run(cfg: &TrainBenchConfig) -> anyhow::Result<TrainBenchReport> {
    let scratch = super::scratch_dir()?;
    let root = cfg.out.clone().unwrap_or_else(|| scratch.clone());
    let result = run_in(cfg, &root);
    if cfg.out.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

fn run_in(cfg: &TrainBenchConfig, root: &Path) -> anyhow::Result<TrainBenchReport> {
    // The default data is a long tail up to the row capacity, like LongAlign's mix of long
    // documents and short chats: the shape where batching strategy matters.
    let data = match &cfg.data {
        Some(d) => d.clone(),
        None => {
            let p = root.join("bench-data.jsonl");
            let synth = crate::data::synth::SynthConfig {
                examples: cfg.examples,
                seed: 1,
                min_len: 128,
                max_len: cfg.max_tokens as usize,
                mix: crate::data::synth::MIX,
            };
            std::fs::create_dir_all(root)?;
            std::fs::write(&p, crate::data::synth::to_jsonl(&crate::data::synth::generate(synth)))?;
            p
        }
    };
    let one = |strategy: &str, padding_free: bool| -> anyhow::Result<StrategyResult> {
        let name = format!("{strategy}{}", if padding_free { "-padding-free" } else { "" });
        let run = root.join(&name);
        let summary = root.join(format!("{name}.summary.json"));
        let _ = std::fs::remove_dir_all(&run);
        let mut cmd = Command::new(&cfg.exe);
        cmd.args(["train", "--quiet", "--model", &cfg.model, "--backend", cfg.backend.as_str()]);
        cmd.args(["--strategy", strategy, "--loss", "sequence"]);
        cmd.args(["--max-tokens", &cfg.max_tokens.to_string(), "--epochs", "1"]);
        cmd.args(["--padding-free", &padding_free.to_string()]);
        if strategy != "pack" {
            cmd.args(["--batch-size", &cfg.batch_size.to_string()]);
        }
        cmd.arg("--data").arg(&data);
        if let Some(t) = &cfg.tokenizer {
            cmd.arg("--tokenizer").arg(t);
        }
        if let Some(s) = cfg.steps {
            cmd.args(["--steps", &s.to_string()]);
        }
        cmd.arg("--out").arg(&run).arg("--summary-json").arg(&summary);
        if cfg.tf32 {
            cmd.arg("--tf32");
        }
        if cfg.progress {
            match cfg.steps {
                Some(s) => eprintln!("bench: training {s} steps with {name} batching …"),
                None => eprintln!("bench: training one epoch with {name} batching …"),
            }
        }
        let status = cmd.status().with_context(|| format!("running {}", cfg.exe.display()))?;
        if !status.success() {
            bail!("the {name} run failed ({status})");
        }
        let text =
            std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
        let s: RunSummary = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run summary", summary.display()))?;
        let (useful, padded) = (s.useful_tokens as f64, s.padded_tokens as f64);
        let events = crate::train::events::read_events(&crate::train::RunDir::new(&run).events())?;
        let total = |f: &dyn Fn(&crate::train::events::StepEvent) -> u64, from: usize| -> u64 {
            events.iter().filter(|e| e.step > from).map(f).sum()
        };
        let w = s.warm_up.unwrap_or_default();
        Ok(StrategyResult {
            warm_up_shapes: w.shapes,
            warm_up_s: w.seconds,
            compiles: w.jit.compiles + total(&|e| e.compiles, 0),
            autotunes: w.jit.autotunes + total(&|e| e.autotunes, 0),
            compiles_after_warmup: total(&|e| e.compiles, WARMUP_STEPS),
            autotunes_after_warmup: total(&|e| e.autotunes, WARMUP_STEPS),
            useful_tok_per_s: useful / s.wall_s,
            padded_tok_per_s: padded / s.wall_s,
            wall_s: s.wall_s,
            peak_rss_bytes: s.peak_rss_bytes,
            steps: s.steps,
            useful_tokens: s.useful_tokens,
            padded_tokens: s.padded_tokens,
            occupancy: useful / padded.max(1.0),
            final_loss: s.last_loss,
        })
    };
    let all = |pf: bool| -> anyhow::Result<Strategies> {
        Ok(Strategies { naive: one("naive", pf)?, sorted: one("sorted", pf)?, pack: one("pack", pf)? })
    };
    Ok(TrainBenchReport { padded: all(false)?, padding_free: all(true)? })
}
