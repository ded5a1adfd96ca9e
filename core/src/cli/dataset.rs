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
    #[arg(long, value_parser = parse_checksum)]
    pub checksum: Vec<(String, String)>,
    /// Never download: fail unless every file is already cached and verified.
    #[arg(long)]
    pub offline: bool,
}

fn parse_checksum(s: &str) -> Result<(String, String), String> {
    let (n, h) = s.split_once('=').ok_or("expected NAME=SHA1")?;
    if h.len() != 40 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{h:?} is not a 40-digit hex SHA-1"));
    }
    Ok((n.to_string(), h.to_ascii_lowercase()))
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

/// How many copies of each of `n` records a weight asks for: ⌊w⌋ of each, plus a seeded random
/// ⌊(w − ⌊w⌋)·n⌉ of them once more.
fn mix_counts(n: usize, weight: f64, g: &mut crate::batch::rng::SplitMix64) -> Vec<usize> {
    let whole = weight.floor() as usize;
    let mut counts = vec![whole; n];
    let extra = ((weight - weight.floor()) * n as f64).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    g.shuffle(&mut order);
    for &i in order.iter().take(extra) {
        counts[i] += 1;
    }
    counts
}

pub fn mix(a: &MixArgs) -> anyhow::Result<()> {
    use crate::data::Example;
    let mut g = crate::batch::rng::SplitMix64::new(a.seed);
    let mut out: Vec<Example> = Vec::new();
    let mut report = Vec::new();
    for spec in &a.inputs {
        let (path, weight) = match spec.rsplit_once(':') {
            Some((p, w)) => match w.parse::<f64>() {
                Ok(w) if w >= 0.0 && w.is_finite() => (PathBuf::from(p), w),
                _ => anyhow::bail!("{spec}: the weight after ':' must be a number ≥ 0"),
            },
            None => (PathBuf::from(spec), 1.0),
        };
        let r = crate::data::read_file(&path, None, a.skip_invalid)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let counts = mix_counts(r.examples.len(), weight, &mut g);
        let mut taken = 0;
        for ((_, ex), &c) in r.examples.iter().zip(&counts) {
            for _ in 0..c {
                let mut ex = ex.clone();
                ex.source = ex.source.or_else(|| Some(stem.clone()));
                out.push(ex);
                taken += 1;
            }
        }
        report.push(serde_json::json!({
            "input": path, "weight": weight, "records": r.examples.len(),
            "skipped": r.skipped.len(), "taken": taken,
        }));
    }
    g.shuffle(&mut out);
    crate::util::write_atomic(&a.out, crate::data::synth::to_jsonl(&out).as_bytes())?;
    let summary = serde_json::json!({"out": a.out, "examples": out.len(), "seed": a.seed, "inputs": report});
    if a.json {
        println!("{summary}");
    } else {
        let mut t = super::table::Table::new(
            ["input", "weight", "records", "skipped", "taken"].map(String::from).to_vec(),
        );
        for r in &report {
            t.row(vec![
                r["input"].as_str().unwrap_or("").to_string(),
                r["weight"].to_string(),
                r["records"].to_string(),
                r["skipped"].to_string(),
                r["taken"].to_string(),
            ]);
        }
        print!("{}", t.render());
        println!("wrote {} examples (shuffled, seed {}) to {}", out.len(), a.seed, a.out.display());
    }
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
    use crate::data::dedupe::{DedupeConfig, find_duplicates};
    if !(0.0..=1.0).contains(&a.threshold) {
        anyhow::bail!("--threshold must be within 0–1");
    }
    let r = crate::data::read_file(&a.data, None, a.skip_invalid)?;
    let texts: Vec<String> = r
        .examples
        .iter()
        .map(|(_, e)| e.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dups = find_duplicates(&refs, &DedupeConfig { threshold: a.threshold, ..DedupeConfig::default() });
    let dropped: std::collections::HashSet<usize> = dups.iter().map(|d| d.index).collect();
    let kept: Vec<crate::data::Example> = r
        .examples
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, (_, e))| e.clone())
        .collect();
    crate::util::write_atomic(&a.out, crate::data::synth::to_jsonl(&kept).as_bytes())?;
    let line_of = |i: usize| r.examples[i].0;
    let report = serde_json::json!({
        "records": r.examples.len(),
        "kept": kept.len(),
        "exact_duplicates": dups.iter().filter(|d| d.exact).count(),
        "near_duplicates": dups.iter().filter(|d| !d.exact).count(),
        "skipped_invalid": r.skipped.len(),
        "dropped": dups.iter().map(|d| serde_json::json!({
            "line": line_of(d.index), "duplicate_of_line": line_of(d.of),
            "similarity": d.similarity, "exact": d.exact,
        })).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "{} records: kept {}, dropped {} exact and {} near duplicates (threshold {}) → {}",
            r.examples.len(),
            kept.len(),
            report["exact_duplicates"],
            report["near_duplicates"],
            a.threshold,
            a.out.display()
        );
        for d in &dups {
            println!(
                "  line {} duplicates line {} ({})",
                line_of(d.index),
                line_of(d.of),
                if d.exact { "exact".to_string() } else { format!("similarity {:.2}", d.similarity) }
            );
        }
    }
    Ok(())
}
