//! `core-cli`: argument parsing and printing. The work itself lives in the library modules.

pub mod bench;
pub mod build_data;
pub mod dataset;
pub mod doctor;
pub mod eval;
pub mod generate;
pub mod lora;
pub mod plan;
pub mod serve;
pub mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::data::Format;
use crate::plan::{Algorithm, LossMode, Overlong, Strategy};

#[derive(Parser, Debug)]
#[command(
    name = "core-cli",
    version,
    about = "LongAlign-rs: long-context instruction tuning with packing and loss weighting"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Let f32 matmuls run on tensor cores in TF32 (10-bit mantissas, ~1e-3 relative error) on
    /// CUDA GPUs that have it (Ampere and newer): faster f32 training and inference, as PyTorch's
    /// `allow_tf32 = True`. Default: exact f32, as PyTorch. No effect on cpu or wgpu, nor on
    /// bf16 / f16 matmuls.
    #[arg(long, global = true)]
    pub tf32: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The embedded default (what `core-cli` alone runs): train the tiny preset on the bundled
    /// sample and evaluate it before and after.
    Demo(train::DemoArgs),
    /// Fine-tune (or train a preset from scratch) with packing and LongAlign loss weighting.
    Train(train::TrainArgs),
    /// Per-example mean cross entropy over target tokens, as JSON lines.
    Score(train::ScoreArgs),
    /// Answer one prompt with a local model (KV cache; greedy or sampled), streaming the text.
    Generate(generate::GenerateArgs),
    /// Evaluations (LongBench-Chat with an LLM judge).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Serve a local model over the OpenAI chat-completions API (JSON and streaming).
    Serve(serve::ServeArgs),
    /// Export a run's last checkpoint as a Hugging Face model directory.
    Export(train::ExportArgs),
    /// Counts, token-length histogram, target share, per format and source.
    Stats(StatsArgs),
    /// Plan batches (naive / sorted / pack) and report padding, fill and attention work.
    Plan(PlanArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Build long instruction data from folders of documents with Self-Instruct (any
    /// OpenAI-compatible generator): questions of four task types, answers, resumable.
    BuildData(build_data::BuildDataArgs),
    /// What this machine offers: backends built in, CPU, memory, wgpu adapters, CUDA driver,
    /// NVRTC and GPUs (and a stub libcuda.so on LD_LIBRARY_PATH), and a smoke run per backend.
    Doctor(doctor::DoctorArgs),
}

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
    /// Training data: .jsonl or .json (messages, ShareGPT or Alpaca records), or a Hub file
    /// `hf://datasets/org/name[@revision]/path`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Hugging Face model or tokenizer directory (tokenizer.json + chat template), a Hub id
    /// `org/name[@revision]`, or `builtin`.
    #[arg(long, default_value = "builtin")]
    pub tokenizer: PathBuf,
    #[command(flatten)]
    pub records: RecordArgs,
}

/// How records are read and rendered: shared by every command that reads training data.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Use this Jinja chat template instead of the directory's.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Record format: auto (detected per record), messages, sharegpt or alpaca.
    #[arg(long, default_value = "auto", value_parser = |s: &str| Format::parse_option(s).map(FormatArg))]
    pub format: FormatArg,
    /// Skip bad records (counted and listed in the report) instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Where the chat template is not prefix-stable (Qwen3, R1 distills): `split` trains each
    /// assistant turn in its own sequence, rendered as the last turn; `last` trains only the last
    /// turn; `error` refuses the conversation. Templates with {% generation %} blocks use them.
    #[arg(long, default_value = "split")]
    pub turns: crate::data::TurnPolicy,
}

impl DataArgs {
    /// These flags as the library's data source.
    pub fn source(&self) -> crate::data::DataSource {
        crate::data::DataSource {
            data: self.data.clone(),
            tokenizer: self.tokenizer.clone(),
            chat_template: self.records.chat_template.clone(),
            format: self.records.format.0,
            skip_invalid: self.records.skip_invalid,
            turns: self.records.turns,
        }
    }
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
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Data-parallel devices (GPUs) per step.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Plan naive, sorted and pack side by side.
    #[arg(long)]
    pub compare: bool,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the plan here, one JSON line per micro-batch.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also estimate each plan's peak training memory per device for this model (a preset or a
    /// model directory; padding-free, as `train` runs it).
    #[arg(long)]
    pub model: Option<String>,
}

/// How sequences become micro-batches and steps: the planner's flags, shared by `plan` and `train`.
#[derive(Args, Debug, Clone)]
pub struct BatchArgs {
    /// naive (padded batches), sorted (by length) or pack (bin-packed rows).
    #[arg(long, default_value = "pack")]
    pub strategy: Strategy,
    /// Packing algorithm: next-fit (LongAlign's), ffd or bfd.
    #[arg(long, default_value = "ffd")]
    pub algorithm: Algorithm,
    /// Pack: row capacity; naive/sorted: longest sequence kept (`plan`: default 65536 for pack,
    /// no limit otherwise; `train`: 2048 for presets, 65536 otherwise).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Rows per micro-batch (default: 8 for naive/sorted, 1 for pack).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Sorted only: cap each micro-batch at this many padded tokens (rows × longest) instead of a
    /// fixed batch size.
    #[arg(long)]
    pub token_budget: Option<u32>,
    /// Gradient accumulation: micro-batches per device per step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Loss weighting: sequence (LongAlign: every sequence counts equally) or token (token-mean).
    #[arg(long, default_value = "sequence")]
    pub loss: LossMode,
    /// Seed of the data order (and of a preset's initial weights in `train`).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Sequences over the limit: truncate, drop or error.
    #[arg(long, default_value = "truncate")]
    pub overlong: Overlong,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
}

impl BatchArgs {
    /// These flags as the planner's options for `devices` data-parallel ranks.
    pub fn options(&self, devices: usize) -> crate::plan::PlanOptions {
        crate::plan::PlanOptions {
            algorithm: self.algorithm,
            max_tokens: self.max_tokens,
            batch_size: self.batch_size,
            token_budget: self.token_budget,
            devices,
            accum: self.accum,
            loss: self.loss,
            seed: self.seed,
            overlong: self.overlong,
            epochs: self.epochs,
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any GPU work: the first matmul that autotunes fixes it for the process.
    crate::jit::set_tf32(cli.tf32)?;
    match cli.command {
        Some(Command::Demo(a)) => train::embedded_default(&a.options()),
        Some(Command::Train(a)) => train::run(&a, cli.tf32),
        Some(Command::Score(a)) => train::score(&a),
        Some(Command::Export(a)) => train::export(&a),
        Some(Command::Stats(a)) => stats(&a),
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Plan(a)) => plan::run(&a),
        Some(Command::Data(DataCommand::Synth(a))) => dataset::synth(&a),
        Some(Command::Data(DataCommand::Lengths(a))) => dataset::lengths(&a),
        Some(Command::Data(DataCommand::Fetch(a))) => dataset::fetch(&a),
        Some(Command::Data(DataCommand::Mix(a))) => dataset::mix(&a),
        Some(Command::Data(DataCommand::Dedupe(a))) => dataset::dedupe(&a),
        Some(Command::Data(DataCommand::SynthCustom(a))) => dataset::synth_custom(&a),
        Some(Command::Generate(a)) => generate::run(&a),
        Some(Command::Serve(a)) => serve::run(&a),
        Some(Command::Eval(c)) => eval::run(&c),
        Some(Command::BuildData(a)) => build_data::run(&a),
        Some(Command::Doctor(a)) => doctor::run(&a),
        None => train::embedded_default(&Default::default()),
    }
}

/// `core-cli stats`: [`crate::data::stats`] of a dataset, as text or JSON.
fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let (ds, tok_name) = args.data.source().load()?;
    let s = crate::data::stats::compute(&ds, &tok_name);
    match args.json {
        true => println!("{}", serde_json::to_string(&s)?),
        false => print!("{}", s.render()),
    }
    Ok(())
}
