//! `core-cli data synth`: regenerate the bundled sample dataset.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::batch::mix;
use crate::data::synth;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (writes train.jsonl and eval.jsonl).
    #[arg(long, default_value = "datasets/sample")]
    pub out: PathBuf,
}

pub fn synth(args: &SynthArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (name, cfg) in [("train.jsonl", synth::TRAIN), ("eval.jsonl", synth::EVAL)] {
        let path = args.out.join(name);
        let examples = synth::generate(cfg);
        crate::util::write_atomic(&path, synth::to_jsonl(&examples).as_bytes())?;
        println!("wrote {} ({} examples)", path.display(), examples.len());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LengthsArgs {
    /// Long documents (8k–64k tokens, log-uniform).
    #[arg(long, default_value_t = 10_000)]
    pub long: usize,
    /// Short chats (64–2k tokens).
    #[arg(long, default_value_t = 10_000)]
    pub short: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file (one `total target` line per sequence).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn lengths(args: &LengthsArgs) -> anyhow::Result<()> {
    let items = mix::longalign_like(args.long, args.short, args.seed);
    crate::util::write_atomic(&args.out, mix::to_lengths_file(&items).as_bytes())?;
    println!("wrote {} ({} sequences)", args.out.display(), items.len());
    Ok(())
}
