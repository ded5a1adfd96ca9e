//! `core-cli bench train|loss|memory|build-data`: flags → [`crate::bench`] → a table or JSON. The
//! attention kernel's micro-benchmark is `cargo bench -p longalign-kernels --bench attention`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::bench::build_data::BuildDataBenchConfig;
use crate::bench::loss::LossBenchConfig;
use crate::bench::memory::MemoryBenchConfig;
use crate::bench::train::TrainBenchConfig;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput of naive vs sorted vs packed batching.
    Train(BenchTrainArgs),
    /// The fused weighted cross entropy vs the plain chunked one: time and memory, forward + backward.
    Loss(BenchLossArgs),
    /// Peak memory and time of one training step per sequence length, each in its own process.
    Memory(BenchMemoryArgs),
    /// `build-data`'s own overhead (read, tokenize, filter, dedupe, prompt, write) against a local
    /// endpoint that answers instantly.
    BuildData(BenchBuildDataArgs),
}

#[derive(Args, Debug)]
pub struct BenchBuildDataArgs {
    #[command(flatten)]
    pub bench: BuildDataBenchConfig,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchMemoryArgs {
    #[command(flatten)]
    pub bench: MemoryBenchConfig,
    #[arg(long)]
    pub json: bool,
    /// Measure the one length in this process (what each child runs).
    #[arg(long, hide = true)]
    pub in_process: bool,
}

#[derive(Args, Debug)]
pub struct BenchLossArgs {
    #[command(flatten)]
    pub bench: LossBenchConfig,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: crate::backend::Backend,
    #[arg(long)]
    pub json: bool,
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
    pub backend: crate::backend::Backend,
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
        BenchCommand::Loss(a) => crate::with_backend!(a.backend, |B, device| loss::<B>(a, &device)),
        BenchCommand::BuildData(a) => build_data(a),
        BenchCommand::Memory(a) => memory(a),
    }
}

fn memory(a: &BenchMemoryArgs) -> anyhow::Result<()> {
    if a.in_process {
        let [n] = a.bench.lengths[..] else { anyhow::bail!("--in-process measures one length") };
        let p = crate::with_backend!(a.bench.backend, |B, device| {
            crate::bench::memory::measure::<B>(&a.bench, n, &device)?
        });
        println!("{}", serde_json::to_string(&p)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating core-cli")?;
    let r = crate::bench::memory::run(&a.bench, &exe, !a.json)?;
    match a.json {
        true => println!("{}", serde_json::to_string(&r)?),
        false => print!("{}", r.render()),
    }
    Ok(())
}

fn loss<B: burn::tensor::backend::AutodiffBackend>(
    a: &BenchLossArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    let out = crate::bench::loss::run::<B>(&a.bench, device)?;
    match a.json {
        true => println!("{}", serde_json::to_string(&out)?),
        false => print!("{}", crate::bench::loss::render(&a.bench, a.backend, &out)),
    }
    Ok(())
}

fn train(a: &BenchTrainArgs) -> anyhow::Result<()> {
    let cfg = TrainBenchConfig {
        exe: std::env::current_exe().context("locating core-cli")?,
        model: a.model.clone(),
        data: a.data.clone(),
        examples: a.examples,
        tokenizer: a.tokenizer.clone(),
        backend: a.backend,
        max_tokens: a.max_tokens,
        batch_size: a.batch_size,
        steps: a.steps,
        out: a.out.clone(),
        progress: !a.json,
        tf32: crate::jit::tf32(),
    };
    let r = crate::bench::train::run(&cfg)?;
    match a.json {
        true => println!("{}", serde_json::to_string(&r)?),
        false => print!("{}", r.render(&cfg)),
    }
    Ok(())
}

fn build_data(a: &BenchBuildDataArgs) -> anyhow::Result<()> {
    let r = crate::bench::build_data::run(&a.bench)?;
    match a.json {
        true => println!("{}", serde_json::to_string(&r)?),
        false => print!("{}", r.render()),
    }
    Ok(())
}
