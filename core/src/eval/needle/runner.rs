//! A needle-in-a-haystack run end to end: the grid of context lengths × depths, answered (cached
//! per cell), optionally rated by a judge, summarised in `grid.json` and drawn as a heatmap.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Serialize;

use super::{Cell, HAYSTACK, heatmap, judge_prompt, key, prompt, score};
use crate::eval::answer::{Answerer, Question, rate_all};
use crate::eval::cache::Cache;
use crate::eval::longbench_chat::JUDGE_SYSTEM;
use crate::llm::Client;
use crate::util::table::Table;

/// Everything a run needs.
pub struct NeedleConfig {
    /// `None`: only cached cells are reported (an error if some are missing).
    pub answerer: Option<Answerer>,
    /// What the heatmap's title calls the answerer.
    pub title: String,
    /// Tokenizer directory that measures context lengths (`None`: the built-in bytes).
    pub tokenizer: Option<PathBuf>,
    /// Context lengths in tokens.
    pub lengths: Vec<usize>,
    /// Needle depths in percent (0–100).
    pub depths: Vec<u32>,
    /// Filler text (default: the bundled haystack).
    pub haystack: Option<PathBuf>,
    pub max_new_tokens: usize,
    /// Also rate each answer 1–10, besides exact retrieval.
    pub judge: Option<Client>,
    /// Output folder: needle.jsonl (cache), grid.json, heatmap.png, heatmap.svg.
    pub out: PathBuf,
    /// No progress lines on stderr (failures are still reported there).
    pub quiet: bool,
}

/// `grid.json`: scores as rows = lengths, columns = depths (`None` = no result).
#[derive(Debug, Clone, Serialize)]
pub struct NeedleReport {
    pub lengths: Vec<usize>,
    pub depths: Vec<u32>,
    pub scores: Vec<Vec<Option<f64>>>,
    pub mean: Option<f64>,
    pub judge_scores: Vec<Vec<Option<f64>>>,
    pub judge_mean: Option<f64>,
    /// Cells with a judge rating.
    pub judged: usize,
    pub scored: usize,
    pub missing: usize,
    pub cells: Vec<Cell>,
    pub heatmap_png: PathBuf,
    pub heatmap_svg: PathBuf,
}

impl NeedleReport {
    /// The grid as text (rows = lengths, columns = depths), the judge's mean, the heatmap's path.
    pub fn render(&self, title: &str) -> String {
        let mut s = format!(
            "needle in a haystack ({title}): exact retrieval, rows = context length, columns = depth %\n"
        );
        let mut t = Table::new(
            std::iter::once("length".to_string())
                .chain(self.depths.iter().map(|d| format!("{d}%")))
                .collect(),
        );
        for (l, row) in self.lengths.iter().zip(&self.scores) {
            t.row(
                std::iter::once(l.to_string())
                    .chain(row.iter().map(|v| v.map_or("–".into(), |v| format!("{v:.0}"))))
                    .collect(),
            );
        }
        s += &t.render();
        if let Some(j) = self.judge_mean {
            s += &format!("judge: mean rating {j:.2} (1–10) over {} cells\n", self.judged);
        }
        s += &format!(
            "mean {}; heatmap: {}\n",
            self.mean.map_or("–".to_string(), |m| format!("{m:.2}")),
            self.heatmap_png.display()
        );
        s
    }
}

/// A cell's cache key.
fn id(length: usize, depth: u32) -> u64 {
    (length as u64) * 1000 + depth as u64
}

/// Runs the grid as `cfg` says, writing the cache, `grid.json` and the heatmaps into `cfg.out`.
pub fn run(cfg: &NeedleConfig) -> anyhow::Result<NeedleReport> {
    let haystack = match &cfg.haystack {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => HAYSTACK.to_string(),
    };
    if haystack.split_whitespace().next().is_none() {
        bail!("the haystack text is empty");
    }
    if let Some(d) = cfg.depths.iter().find(|&&d| d > 100) {
        bail!("--depths: {d} is not a percentage (0–100)");
    }
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let tok = crate::data::tokenize::ModelTokenizer::load(cfg.tokenizer.as_deref(), None)?;
    let count = |s: &str| tok.tokenizer.encode(s, false).map(|e| e.get_ids().len()).unwrap_or(s.len());
    let mut cache = Cache::<Cell>::open(&cfg.out.join("needle.jsonl"), |c| id(c.length, c.depth_pct))?;
    let mut todo = Vec::new();
    for &l in &cfg.lengths {
        for &d in &cfg.depths {
            if !cache.entries.contains_key(&id(l, d)) {
                let k = key(l, d);
                let p = prompt(&haystack, l, d, &k, &count);
                todo.push((l, d, k, p));
            }
        }
    }
    if !cfg.quiet {
        eprintln!(
            "needle: {} cells cached, {} to run",
            cfg.lengths.len() * cfg.depths.len() - todo.len(),
            todo.len()
        );
    }
    match &cfg.answerer {
        Some(answerer) => {
            let questions = todo
                .iter()
                .map(|(l, d, _, p)| Question {
                    id: id(*l, *d),
                    prompt: p.clone(),
                    max_new_tokens: cfg.max_new_tokens,
                    temperature: 0.0,
                    seed: None,
                    truncate_to: None,
                })
                .collect();
            answerer.answer_all(questions, |cell_id, answer| {
                let (l, d, k, _) = todo.iter().find(|t| id(t.0, t.1) == cell_id).expect("a cell of the grid");
                match answer {
                    Ok(a) => {
                        let cell = Cell {
                            length: *l,
                            depth_pct: *d,
                            key: k.clone(),
                            score: score(&a.text, k),
                            answer: a.text,
                            prompt_tokens: a.prompt_tokens,
                            judge_score: None,
                        };
                        cache.put(cell_id, cell)?;
                    }
                    Err(e) => eprintln!("needle length {l} depth {d}% failed: {e}"),
                }
                Ok(())
            })?;
        }
        None if !todo.is_empty() => bail!(
            "{} cells have no cached answer: pass --model DIR or --endpoint URL --endpoint-model NAME",
            todo.len()
        ),
        None => {}
    }
    if let Some(judge) = &cfg.judge {
        let pending: Vec<(u64, String)> = cache
            .entries
            .iter()
            .filter(|(_, c)| c.judge_score.is_none())
            .map(|(&i, c)| (i, judge_prompt(&c.key, &c.answer)))
            .collect();
        for (i, r) in rate_all(judge, JUDGE_SYSTEM, pending, 5)? {
            match r.score {
                Some(s) => {
                    let mut cell = cache.entries[&i].clone();
                    cell.judge_score = Some(s);
                    cache.put(i, cell)?;
                }
                None => eprintln!("judge: {}", r.error.unwrap_or_default()),
            }
        }
    }
    let grid_of = |f: &dyn Fn(&Cell) -> Option<f64>| -> Vec<Vec<Option<f64>>> {
        cfg.lengths
            .iter()
            .map(|&l| cfg.depths.iter().map(|&d| cache.entries.get(&id(l, d)).and_then(f)).collect())
            .collect()
    };
    let scores = grid_of(&|c| Some(c.score));
    let judge_scores = grid_of(&|c| c.judge_score);
    let mean_of = |g: &[Vec<Option<f64>>]| {
        let v: Vec<f64> = g.iter().flatten().filter_map(|x| *x).collect();
        ((!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64), v.len())
    };
    let (mean, scored) = mean_of(&scores);
    let (judge_mean, judged) = mean_of(&judge_scores);
    heatmap(&cfg.out, &format!("needle in a haystack: {}", cfg.title), &cfg.lengths, &cfg.depths, &scores)?;
    let r = NeedleReport {
        lengths: cfg.lengths.clone(),
        depths: cfg.depths.clone(),
        mean,
        judge_mean,
        judged,
        scored,
        missing: cfg.lengths.len() * cfg.depths.len() - scored,
        scores,
        judge_scores,
        cells: cache.entries.values().cloned().collect(),
        heatmap_png: cfg.out.join("heatmap.png"),
        heatmap_svg: cfg.out.join("heatmap.svg"),
    };
    crate::util::write_atomic(&cfg.out.join("grid.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    Ok(r)
}
