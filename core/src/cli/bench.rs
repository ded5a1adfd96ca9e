//! `core-cli bench train`: the same data and model under naive, sorted and packed batching, one
//! epoch each, in separate processes (so peak memory is each strategy's own), side by side.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::table::{Table, compact};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput of naive vs sorted vs packed batching.
    Train(BenchTrainArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// `tiny` or a Hugging Face model directory.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Data (default: a generated long-tailed mix, see `--examples`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Without `--data`: examples in the generated mix (30% short chats, 70% passkey/key-value
    /// documents with log-uniform lengths from 128 tokens up to `--max-tokens`, seed 1).
    #[arg(long, default_value_t = 600)]
    pub examples: usize,
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Pack row capacity (and longest sequence for naive/sorted).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: u32,
    /// Sequences per micro-batch for naive and sorted.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Stop each strategy after this many steps (default: one epoch).
    #[arg(long)]
    pub steps: Option<usize>,
    /// One JSON object on stdout, keyed by strategy.
    #[arg(long)]
    pub json: bool,
    /// Keep the runs here (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Train(a) => train(a),
    }
}

fn train(a: &BenchTrainArgs) -> anyhow::Result<()> {
    let tmp = tempfile_dir()?;
    let root = a.out.clone().unwrap_or_else(|| tmp.clone());
    let exe = std::env::current_exe().context("locating core-cli")?;
    let mut results = serde_json::Map::new();
    // The default data is a long tail up to the row capacity, like LongAlign's mix of long
    // documents and short chats: the shape where batching strategy matters.
    let data = match &a.data {
        Some(d) => d.clone(),
        None => {
            let p = root.join("bench-data.jsonl");
            let cfg = crate::data::synth::SynthConfig {
                examples: a.examples,
                seed: 1,
                min_len: 128,
                max_len: a.max_tokens as usize,
            };
            std::fs::create_dir_all(&root)?;
            std::fs::write(&p, crate::data::synth::to_jsonl(&crate::data::synth::generate(cfg)))?;
            p
        }
    };
    for (name, strategy, loss) in
        [("naive", "naive", "sequence"), ("sorted", "sorted", "sequence"), ("pack", "pack", "sequence")]
    {
        let run = root.join(name);
        let summary = root.join(format!("{name}.summary.json"));
        let _ = std::fs::remove_dir_all(&run);
        let mut cmd = Command::new(&exe);
        cmd.args([
            "train",
            "--quiet",
            "--model",
            &a.model,
            "--backend",
            &a.backend,
            "--strategy",
            strategy,
            "--loss",
            loss,
        ]);
        cmd.args(["--max-tokens", &a.max_tokens.to_string(), "--epochs", "1"]);
        if strategy != "pack" {
            cmd.args(["--batch-size", &a.batch_size.to_string()]);
        }
        cmd.arg("--data").arg(&data);
        if let Some(t) = &a.tokenizer {
            cmd.arg("--tokenizer").arg(t);
        }
        if let Some(s) = a.steps {
            cmd.args(["--steps", &s.to_string()]);
        }
        cmd.arg("--out").arg(&run).arg("--summary-json").arg(&summary);
        if !a.json {
            match a.steps {
                Some(s) => eprintln!("bench: training {s} steps with {name} batching …"),
                None => eprintln!("bench: training one epoch with {name} batching …"),
            }
        }
        let status = cmd.status().with_context(|| format!("running {}", exe.display()))?;
        if !status.success() {
            bail!("the {name} run failed ({status})");
        }
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
        let wall = s["wall_s"].as_f64().unwrap_or(f64::NAN);
        let useful = s["useful_tokens"].as_f64().unwrap_or(0.0);
        let padded = s["padded_tokens"].as_f64().unwrap_or(0.0);
        results.insert(
            name.to_string(),
            json!({
                "useful_tok_per_s": useful / wall,
                "padded_tok_per_s": padded / wall,
                "wall_s": wall,
                "peak_rss_bytes": s["peak_rss_bytes"],
                "steps": s["steps"],
                "useful_tokens": useful,
                "padded_tokens": padded,
                "occupancy": useful / padded.max(1.0),
                "final_loss": s["last_loss"],
            }),
        );
    }
    if a.out.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if a.json {
        println!("{}", Value::Object(results));
        return Ok(());
    }
    let mut t = Table::new(["", "naive", "sorted", "pack"].map(String::from).to_vec());
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&Value) -> String| {
        let mut r = vec![label.to_string()];
        r.extend(["naive", "sorted", "pack"].iter().map(|k| f(&results[*k])));
        t.row(r);
    };
    row(&mut t, "useful tok/s", &|v| format!("{:.0}", v["useful_tok_per_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "padded tok/s", &|v| format!("{:.0}", v["padded_tok_per_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "occupancy %", &|v| format!("{:.1}", 100.0 * v["occupancy"].as_f64().unwrap_or(0.0)));
    row(&mut t, "steps", &|v| v["steps"].to_string());
    row(&mut t, "wall s", &|v| format!("{:.1}", v["wall_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "peak RSS", &|v| {
        v["peak_rss_bytes"].as_f64().map_or("?".into(), |b| format!("{}B", compact(b)))
    });
    row(&mut t, "vs naive (useful tok/s)", &|v| {
        format!(
            "{:.2}×",
            v["useful_tok_per_s"].as_f64().unwrap_or(0.0)
                / results["naive"]["useful_tok_per_s"].as_f64().unwrap_or(1.0)
        )
    });
    let data_label = match &a.data {
        Some(d) => d.display().to_string(),
        None => format!("generated long-tailed mix, {} examples, 128–{} tokens", a.examples, a.max_tokens),
    };
    println!(
        "one epoch each, model {}, backend {}, data: {data_label}; \
         tok/s = tokens / training-loop wall time\n",
        a.model, a.backend
    );
    print!("{}", t.render());
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("longalign-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
