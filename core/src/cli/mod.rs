//! `core-cli`: argument parsing and printing. The work itself lives in the library modules.

#[cfg(feature = "native")]
pub mod bench;
#[cfg(feature = "native")]
pub mod build_data;
#[cfg(feature = "native")]
pub mod dataset;
#[cfg(feature = "native")]
pub mod eval;
#[cfg(feature = "native")]
pub mod generate;
pub mod plan;
#[cfg(feature = "native")]
pub mod serve;
pub mod stats;
pub mod table;
#[cfg(feature = "native")]
pub mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::batch::{Algorithm, LossMode, Overlong, Strategy};
use crate::data::Format;

#[derive(Parser, Debug)]
#[command(
    name = "core-cli",
    version,
    about = "LongAlign-rs: long-context instruction tuning with packing and loss weighting"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    #[cfg(feature = "native")]
    /// The embedded default (what `core-cli` alone runs): train the tiny preset on the bundled
    /// sample and evaluate it before and after.
    Demo(train::DemoArgs),
    #[cfg(feature = "native")]
    /// Fine-tune (or train a preset from scratch) with packing and LongAlign loss weighting.
    Train(train::TrainArgs),
    #[cfg(feature = "native")]
    /// Per-example mean cross entropy over target tokens, as JSON lines.
    Score(train::ScoreArgs),
    #[cfg(feature = "native")]
    /// Answer one prompt with a local model (KV cache; greedy or sampled), streaming the text.
    Generate(generate::GenerateArgs),
    #[cfg(feature = "native")]
    /// Evaluations (LongBench-Chat with an LLM judge).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    #[cfg(feature = "native")]
    /// Serve a local model over the OpenAI chat-completions API (JSON and streaming).
    Serve(serve::ServeArgs),
    #[cfg(feature = "native")]
    /// Export a run's last checkpoint as a Hugging Face model directory.
    Export(train::ExportArgs),
    /// Counts, token-length histogram, target share, per format and source.
    Stats(StatsArgs),
    /// Plan batches (naive / sorted / pack) and report padding, fill and attention work.
    Plan(PlanArgs),
    #[cfg(feature = "native")]
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[cfg(feature = "native")]
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
    #[cfg(feature = "native")]
    /// Build long instruction data from folders of documents with Self-Instruct (any
    /// OpenAI-compatible generator): questions of four task types, answers, resumable.
    BuildData(build_data::BuildDataArgs),
}

#[cfg(feature = "native")]
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Regenerate the bundled sample dataset (passkey, key-value retrieval, short chats).
    Synth(dataset::SynthArgs),
    /// Write a sample-like dataset with chosen document lengths (passkey, key-value, chats).
    SynthCustom(dataset::SynthCustomArgs),
    /// Mix datasets with per-source weights (LongAlign's long + general mix) into one messages file.
    Mix(dataset::MixArgs),
    /// Drop exact and near-duplicate records (MinHash over word 5-grams).
    Dedupe(dataset::DedupeArgs),
    /// Download public evaluation data into a verified cache (`longbench-chat`).
    Fetch(dataset::FetchArgs),
    /// Write a LongAlign-like lengths file (long documents 8k–64k + short chats) for `plan --lengths`.
    Lengths(dataset::LengthsArgs),
}

/// Where the training data comes from and how it is tokenized.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Training data: .jsonl or .json (messages, ShareGPT or Alpaca records).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Hugging Face model or tokenizer directory (tokenizer.json + chat template), or `builtin`.
    #[arg(long, default_value = "builtin")]
    pub tokenizer: PathBuf,
    /// Use this Jinja chat template instead of the directory's.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Record format: auto (detected per record), messages, sharegpt or alpaca.
    #[arg(long, default_value = "auto", value_parser = |s: &str| Format::parse_option(s).map(FormatArg))]
    pub format: FormatArg,
    /// Skip bad records (counted and listed in the report) instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
}

/// `--format`: a format, or `auto` (None) to detect per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatArg(pub Option<Format>);

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Plan from lengths instead of data: one line per sequence, `total_len` or `total_len target_len`.
    #[arg(long, conflicts_with = "data")]
    pub lengths: Option<PathBuf>,
    #[arg(long, default_value = "pack")]
    pub strategy: Strategy,
    /// Packing algorithm.
    #[arg(long, default_value = "ffd")]
    pub algorithm: Algorithm,
    /// Pack: row capacity. Naive/sorted: longest sequence allowed (default: no limit).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Rows per micro-batch (default: 8 for naive/sorted, 1 for pack).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Sorted only: cap each micro-batch at this many padded tokens (rows × longest) instead of a
    /// fixed batch size.
    #[arg(long)]
    pub token_budget: Option<u32>,
    /// Data-parallel devices (GPUs) per step.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Gradient accumulation: micro-batches per device per step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Loss weighting: sequence (LongAlign: every sequence counts equally) or token (token-mean).
    #[arg(long, default_value = "sequence")]
    pub loss: LossMode,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sequences over the limit: truncate, drop or error.
    #[arg(long, default_value = "truncate")]
    pub overlong: Overlong,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Plan naive, sorted and pack side by side.
    #[arg(long)]
    pub compare: bool,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the plan here, one JSON line per micro-batch.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "native")]
        Some(Command::Demo(a)) => train::embedded_default(&a),
        #[cfg(feature = "native")]
        Some(Command::Train(a)) => train::run(&a),
        #[cfg(feature = "native")]
        Some(Command::Score(a)) => train::score(&a),
        #[cfg(feature = "native")]
        Some(Command::Export(a)) => train::export(&a),
        Some(Command::Stats(a)) => stats::run(&a),
        #[cfg(feature = "native")]
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Plan(a)) => plan::run(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::Synth(a))) => dataset::synth(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::Lengths(a))) => dataset::lengths(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::Fetch(a))) => dataset::fetch(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::Mix(a))) => dataset::mix(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::Dedupe(a))) => dataset::dedupe(&a),
        #[cfg(feature = "native")]
        Some(Command::Data(DataCommand::SynthCustom(a))) => dataset::synth_custom(&a),
        #[cfg(feature = "native")]
        Some(Command::Generate(a)) => generate::run(&a),
        #[cfg(feature = "native")]
        Some(Command::Serve(a)) => serve::run(&a),
        #[cfg(feature = "native")]
        Some(Command::Eval(c)) => eval::run(&c),
        #[cfg(feature = "native")]
        Some(Command::BuildData(a)) => build_data::run(&a),
        #[cfg(feature = "native")]
        None => train::embedded_default(&train::DemoArgs {
            epochs: train::EMBEDDED_EPOCHS,
            data: None,
            steps: None,
            lr: None,
            out: None,
            seed: 42,
        }),
        #[cfg(not(feature = "native"))]
        None => anyhow::bail!("this build has only `stats` and `plan` (built without the `native` feature)"),
    }
}
