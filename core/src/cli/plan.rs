//! `core-cli plan`: batch plans and what they cost, one strategy or all three side by side.

use std::collections::BTreeMap;
use std::path::Path;
use web_time::Instant;

use anyhow::{Context, bail};

use super::table::{Table, compact, thousands};
use super::{DataArgs, PlanArgs};
use crate::batch::{self, Item, Plan, PlanConfig, PlanStats, Strategy};
use crate::data::formats::read_str;
use crate::data::{ModelTokenizer, TokenizedDataset, synth};

/// Loads `--data` (or the embedded sample when absent) with `--tokenizer`.
pub fn load_data(args: &DataArgs) -> anyhow::Result<(TokenizedDataset, String)> {
    let tok = ModelTokenizer::load(Some(&args.tokenizer), args.chat_template.as_deref())?;
    let ds = match &args.data {
        Some(path) => TokenizedDataset::load(path, args.format.0, args.skip_invalid, &tok)?,
        None => {
            let report = read_str("<embedded sample>", synth::TRAIN_JSONL, args.format.0, args.skip_invalid)?;
            TokenizedDataset::from_report("<embedded sample>", report, args.skip_invalid, &tok)?
        }
    };
    Ok((ds, tok.name.clone()))
}

/// Reads a lengths file: one sequence per line, `total_len` or `total_len target_len` (target
/// defaults to total: every token carries loss). Item id = 0-based line number.
pub fn read_lengths(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_lengths(&path.display().to_string(), &text)
}

/// [`read_lengths`] of text already read; `name` labels errors (`name:line: …`).
pub fn parse_lengths(name: &str, text: &str) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{name}:{}", i + 1);
        let mut fields = line.split_whitespace();
        let parse = |f: Option<&str>, field: &str| -> anyhow::Result<Option<u32>> {
            f.map(|s| {
                s.parse::<u32>()
                    .with_context(|| format!("{}: {field}: {s:?} is not a non-negative integer", at()))
            })
            .transpose()
        };
        let total = parse(fields.next(), "total_len")?
            .with_context(|| format!("{}: empty line (expected `total_len [target_len]`)", at()))?;
        let target = parse(fields.next(), "target_len")?.unwrap_or(total);
        if fields.next().is_some() {
            bail!("{}: too many fields (expected `total_len [target_len]`)", at());
        }
        if total == 0 {
            bail!("{}: total_len: must be at least 1", at());
        }
        if target > total {
            bail!("{}: target_len: {target} exceeds total_len {total}", at());
        }
        items.push(Item { id: i, total, target });
    }
    Ok(items)
}

/// The plan config `core-cli plan` uses for `strategy` under `args` (also the app's reference).
pub fn config(args: &PlanArgs, strategy: Strategy) -> PlanConfig {
    PlanConfig {
        strategy,
        algorithm: args.algorithm,
        max_tokens: match strategy {
            Strategy::Pack => Some(args.max_tokens.unwrap_or(65536)),
            _ => args.max_tokens,
        },
        batch_size: args.batch_size.unwrap_or(if strategy == Strategy::Pack { 1 } else { 8 }),
        token_budget: if strategy == Strategy::Sorted { args.token_budget } else { None },
        devices: args.devices,
        accum: args.accum,
        loss: args.loss,
        seed: args.seed,
        overlong: args.overlong,
        epochs: args.epochs,
    }
}

/// A plan's summary plus how long planning took.
pub struct Planned {
    pub plan: Plan,
    pub stats: PlanStats,
    pub seconds: f64,
}

/// Plans `items` under `cfg`; `pre_truncated` sequences were already cut by the data path.
pub fn plan_items(items: &[Item], cfg: &PlanConfig, pre_truncated: usize) -> anyhow::Result<Planned> {
    let t0 = Instant::now();
    let plan = batch::plan(items, cfg)?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut stats = plan.stats();
    stats.truncated += pre_truncated;
    Ok(Planned { plan, stats, seconds })
}

/// Metrics as rows, strategies as columns.
pub fn render_table(results: &[(String, &PlanStats)]) -> String {
    let mut header = vec!["".to_string()];
    header.extend(results.iter().map(|(name, _)| name.clone()));
    let mut t = Table::new(header);
    let metric = |t: &mut Table, name: &str, f: &dyn Fn(&PlanStats) -> String| {
        let mut row = vec![name.to_string()];
        row.extend(results.iter().map(|(_, s)| f(s)));
        t.row(row);
    };
    metric(&mut t, "steps", &|s| thousands(s.steps as u64));
    metric(&mut t, "micro-batches", &|s| thousands(s.micro_batches as u64));
    metric(&mut t, "rows", &|s| thousands(s.rows as u64));
    metric(&mut t, "sequences", &|s| thousands(s.sequences as u64));
    metric(&mut t, "useful tokens", &|s| compact(s.useful_tokens as f64));
    metric(&mut t, "capacity tokens", &|s| compact(s.capacity_tokens as f64));
    metric(&mut t, "fill %", &|s| format!("{:.2}", 100.0 * s.fill));
    metric(&mut t, "padding %", &|s| format!("{:.2}", 100.0 * s.padding_fraction));
    metric(&mut t, "seqs/row mean", &|s| format!("{:.2}", s.mean_seqs_per_row));
    metric(&mut t, "seqs/row max", &|s| s.max_seqs_per_row.to_string());
    metric(&mut t, "attn work Σn²", &|s| compact(s.attn_work as f64));
    metric(&mut t, "attn dense Σrow²", &|s| compact(s.attn_work_dense as f64));
    metric(&mut t, "dense/varlen", &|s| {
        format!("{:.2}×", s.attn_work_dense as f64 / s.attn_work.max(1) as f64)
    });
    metric(&mut t, "target tokens", &|s| compact(s.target_tokens as f64));
    metric(&mut t, "no-target seqs", &|s| s.no_target_sequences.to_string());
    metric(&mut t, "truncated", &|s| s.truncated.to_string());
    metric(&mut t, "dropped", &|s| s.dropped.to_string());
    metric(&mut t, "device max/mean", &|s| {
        format!("{:.3} (worst {:.3})", s.device_balance_mean, s.device_balance_max)
    });
    t.render()
}

fn describe(cfg: &PlanConfig) -> String {
    let shape = match cfg.strategy {
        Strategy::Pack => format!("pack/{} rows of {} tokens", cfg.algorithm, cfg.max_tokens.unwrap_or(0)),
        Strategy::Sorted => match cfg.token_budget {
            Some(b) => format!("sorted, ≤{b} padded tokens per micro-batch"),
            None => "sorted".into(),
        },
        Strategy::Naive => "naive".into(),
    };
    format!(
        "{shape}; micro-batch {} row(s); {} device(s) × {} accumulation; loss {}; seed {}",
        cfg.batch_size, cfg.devices, cfg.accum, cfg.loss, cfg.seed
    )
}

/// Plans every strategy `args` asks for: the input's description and (config, plan) pairs.
fn plan_all(args: &PlanArgs) -> anyhow::Result<(String, Vec<(PlanConfig, Planned)>)> {
    let strategies = if args.compare {
        vec![Strategy::Naive, Strategy::Sorted, Strategy::Pack]
    } else {
        vec![args.strategy]
    };
    let (source, per_strategy_items): (String, Vec<(Vec<Item>, usize)>) = match &args.lengths {
        Some(path) => {
            let items = read_lengths(path)?;
            (
                format!("{} ({} sequences)", path.display(), thousands(items.len() as u64)),
                strategies.iter().map(|_| (items.clone(), 0)).collect(),
            )
        }
        None => {
            let (ds, tok) = load_data(&args.data)?;
            let src = format!(
                "{} ({} examples, {} skipped; tokenizer {tok})",
                ds.file,
                thousands(ds.len() as u64),
                ds.skipped.len()
            );
            let per =
                strategies.iter().map(|&s| ds.items(config(args, s).length_limit(), args.overlong)).collect();
            (src, per)
        }
    };
    let mut results = Vec::new();
    for (&strategy, (items, pre_truncated)) in strategies.iter().zip(&per_strategy_items) {
        let cfg = config(args, strategy);
        results.push((cfg.clone(), plan_items(items, &cfg, *pre_truncated)?));
    }
    Ok((source, results))
}

/// The `--json` output: one strategy's stats, or all three keyed by name with `--compare`.
fn json_of(args: &PlanArgs, results: &[(PlanConfig, Planned)]) -> anyhow::Result<serde_json::Value> {
    let mut objs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (cfg, r) in results {
        let mut v = serde_json::to_value(&r.stats)?;
        v["plan_seconds"] = serde_json::json!(r.seconds);
        objs.insert(cfg.strategy.to_string(), v);
    }
    Ok(if args.compare {
        serde_json::to_value(objs)?
    } else {
        objs.into_values().next().expect("one strategy")
    })
}

/// What `core-cli plan … --json` prints, as a value (the app's tests compare against it).
pub fn json(args: &PlanArgs) -> anyhow::Result<serde_json::Value> {
    let (_, results) = plan_all(args)?;
    json_of(args, &results)
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    if args.compare && args.out.is_some() {
        bail!("--out writes one plan: use it without --compare");
    }
    let (source, results) = plan_all(args)?;
    if let Some(out) = &args.out {
        let mut buf = Vec::new();
        results[0].1.plan.write_jsonl(&mut buf)?;
        crate::util::write_atomic(out, &buf)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&json_of(args, &results)?)?);
        return Ok(());
    }
    println!("input: {source}");
    for (cfg, r) in &results {
        println!("{:>6}: {} — planned in {:.3}s", cfg.strategy.to_string(), describe(cfg), r.seconds);
    }
    println!();
    let named: Vec<(String, &PlanStats)> =
        results.iter().map(|(c, r)| (c.strategy.to_string(), &r.stats)).collect();
    print!("{}", render_table(&named));
    if let Some(out) = &args.out {
        println!(
            "\nwrote {} ({} micro-batches)",
            out.display(),
            thousands(results[0].1.stats.micro_batches as u64)
        );
    }
    Ok(())
}
