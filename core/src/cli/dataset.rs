//! `core-cli data …`: synth, lengths, fetch, mix, dedupe — flags → the library call → print.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::data::mix::MixInput;
use crate::data::synth;
use crate::plan::mix;

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

#[derive(Args, Debug)]
pub struct SynthCustomArgs {
    #[arg(long, default_value_t = 400)]
    pub examples: usize,
    #[arg(long, default_value_t = 5)]
    pub seed: u64,
    /// Shortest document (tokens of the built-in tokenizer).
    #[arg(long, default_value_t = 512)]
    pub min_len: usize,
    /// Longest document.
    #[arg(long, default_value_t = 2048)]
    pub max_len: usize,
    #[arg(long)]
    pub out: PathBuf,
}

/// A sample-like dataset with other lengths (e.g. a heavier long tail for benchmarks).
pub fn synth_custom(a: &SynthCustomArgs) -> anyhow::Result<()> {
    let cfg = synth::SynthConfig {
        examples: a.examples,
        seed: a.seed,
        min_len: a.min_len,
        max_len: a.max_len,
        mix: synth::MIX,
    };
    let ex = synth::generate(cfg);
    crate::util::write_atomic(&a.out, synth::to_jsonl(&ex).as_bytes())?;
    println!("wrote {} ({} examples)", a.out.display(), ex.len());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// What to fetch: `longbench-chat` (test_cases.json, few_shots.json, prompt_fs.txt).
    pub what: String,
    /// Cache folder (default: $LONGALIGN_CACHE or ~/.cache/longalign, then longbench-chat/).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Download from this base URL instead (a mirror).
    #[arg(long, default_value = crate::eval::fetch::BASE_URL)]
    pub base_url: String,
    /// Expect this git blob SHA-1 for a file instead of the pinned one: NAME=SHA1 (repeatable).
    #[arg(long, value_parser = crate::eval::fetch::parse_checksum)]
    pub checksum: Vec<(String, String)>,
    /// Never download: fail unless every file is already cached and verified.
    #[arg(long)]
    pub offline: bool,
}

pub fn fetch(a: &FetchArgs) -> anyhow::Result<()> {
    if a.what != "longbench-chat" {
        anyhow::bail!("unknown dataset {:?} (expected longbench-chat)", a.what);
    }
    let dir = a.dir.clone().unwrap_or_else(crate::eval::fetch::default_dir);
    for f in crate::eval::fetch::fetch(&dir, &a.base_url, &a.checksum, a.offline)? {
        match f {
            crate::eval::fetch::Fetched::Cached(p) => println!("cached, verified: {}", p.display()),
            crate::eval::fetch::Fetched::Downloaded(p) => println!("downloaded, verified: {}", p.display()),
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct MixArgs {
    /// Inputs as PATH:WEIGHT (weight 1 = every record once, 0.5 = a random half, 2.5 = every
    /// record twice plus a random half); any supported format (messages, ShareGPT, Alpaca).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output .jsonl in the messages format, with `meta.source` (the input's own, else its file stem).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Skip (and count) bad records instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn mix(a: &MixArgs) -> anyhow::Result<()> {
    let inputs = a.inputs.iter().map(|s| MixInput::parse(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let r = crate::data::mix::mix(&inputs, &a.out, a.seed, a.skip_invalid)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    print!("{}", r.render());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct DedupeArgs {
    /// Input data (any supported format).
    #[arg(long)]
    pub data: PathBuf,
    /// Output .jsonl (messages format) with the first of each duplicate group kept.
    #[arg(long)]
    pub out: PathBuf,
    /// Estimated Jaccard similarity (word 5-gram MinHash) at or above which records are duplicates.
    #[arg(long, default_value_t = 0.8)]
    pub threshold: f64,
    #[arg(long)]
    pub skip_invalid: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Drops exact and near-duplicate records (compared on all their message text).
pub fn dedupe(a: &DedupeArgs) -> anyhow::Result<()> {
    let r = crate::data::dedupe::dedupe_file(&a.data, &a.out, a.threshold, a.skip_invalid)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    print!("{}", r.render(a.threshold, &a.out));
    Ok(())
}
