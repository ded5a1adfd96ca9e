//! A LongBench-Chat run end to end: answers (cached per question), then the judge's ratings
//! (cached per answer), then the report — or, without a judge, the labelled overlap fallback.
//!
//! ```text
//! test_cases.json ─▶ answers (local model | endpoint) ─▶ predictions.jsonl
//!                 ─▶ judge prompt (template + 3 human-scored shots) ─▶ ratings ─▶ judgements.jsonl
//!                 ─▶ report.md + report.json          (no judge: overlap.json, not the protocol)
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Serialize;

use super::{
    Cache, JUDGE_SYSTEM, JudgeTemplate, Judgement, Prediction, Report, TestCase, markdown,
    normalize_prediction, read_few_shots, read_test_cases, report,
};
use crate::eval::answer::{Answerer, Question, rate_all};
use crate::eval::overlap;
use crate::llm::Client;

/// Everything a run needs.
pub struct LongBenchChatConfig {
    /// `test_cases.json` (fields idx, prompt, query, answer).
    pub data: PathBuf,
    /// `few_shots.json`; default: the cache `core-cli data fetch longbench-chat` fills.
    pub few_shots: Option<PathBuf>,
    /// `prompt_fs.txt` (the official judge template); default: the fetched cache.
    pub judge_prompt: Option<PathBuf>,
    /// `None`: only cached answers are judged (an error if some are missing).
    pub answerer: Option<Answerer>,
    /// What the report calls the answerer.
    pub title: String,
    /// `None`: the overlap fallback instead of ratings.
    pub judge: Option<Client>,
    /// Output folder: caches, report.md, report.json (or overlap.json).
    pub out: PathBuf,
    /// Local models: prompts over this many tokens lose their middle (official: 64,000).
    pub max_length: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub seed: u64,
    /// Judge attempts per answer when the reply has no `[[rating]]`.
    pub judge_tries: u32,
    /// Only the first N questions.
    pub limit: Option<usize>,
    /// No progress lines on stderr (failures are still reported there).
    pub quiet: bool,
}

/// What a run produced.
pub enum Outcome {
    /// Rated by the judge: the official protocol.
    Judged(Report),
    /// No judge: reference overlap only.
    Overlap(OverlapReport),
}

/// ROUGE-L F1 and token F1 against the reference: clearly labelled as not the official protocol.
#[derive(Debug, Clone, Serialize)]
pub struct OverlapReport {
    pub protocol: &'static str,
    pub mean_rouge_l: Option<f64>,
    pub mean_token_f1: Option<f64>,
    pub answered: usize,
    pub unanswered: usize,
    pub items: Vec<OverlapItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverlapItem {
    pub idx: u64,
    pub rouge_l: f64,
    pub token_f1: f64,
}

/// Runs LongBench-Chat as `cfg` says, writing caches and reports into `cfg.out`.
pub fn run(cfg: &LongBenchChatConfig) -> anyhow::Result<Outcome> {
    let mut cases = read_test_cases(&cfg.data)?;
    if let Some(n) = cfg.limit {
        cases.truncate(n);
    }
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    // The judge's files are checked before any answer is paid for.
    let judge = match &cfg.judge {
        Some(client) => Some((client, judge_files(cfg, &cases)?)),
        None => None,
    };

    // 1. Answers, cached per question.
    let mut preds = Cache::<Prediction>::open(&cfg.out.join("predictions.jsonl"), |p| p.idx)?;
    let todo: Vec<&TestCase> = cases.iter().filter(|c| !preds.entries.contains_key(&c.idx)).collect();
    if !cfg.quiet {
        eprintln!("answers: {} cached, {} to make", cases.len() - todo.len(), todo.len());
    }
    match &cfg.answerer {
        Some(answerer) => {
            let questions = todo
                .iter()
                .map(|c| Question {
                    id: c.idx,
                    prompt: c.prompt.clone(),
                    max_new_tokens: cfg.max_new_tokens,
                    temperature: cfg.temperature,
                    seed: Some(cfg.seed),
                    truncate_to: Some(cfg.max_length),
                })
                .collect();
            answerer.answer_all(questions, |idx, answer| {
                match answer {
                    Ok(a) => {
                        let p = Prediction {
                            idx,
                            prediction: normalize_prediction(&a.text),
                            prompt_tokens: a.prompt_tokens,
                            completion_tokens: a.completion_tokens,
                        };
                        preds.put(idx, p)?;
                        if !cfg.quiet {
                            eprintln!("answered {idx} ({} tokens)", a.completion_tokens);
                        }
                    }
                    // Not cached: a later run tries again.
                    Err(e) => eprintln!("answer {idx} failed: {e}"),
                }
                Ok(())
            })?;
        }
        None if !todo.is_empty() => bail!(
            "{} questions have no cached answer: pass --model DIR or --endpoint URL --endpoint-model NAME",
            todo.len()
        ),
        None => {}
    }

    // 2. Judgements (or the labelled fallback).
    let Some((judge, (template, shots))) = judge else {
        return overlap_fallback(cfg, &cases, &preds).map(Outcome::Overlap);
    };
    let mut judged = Cache::<Judgement>::open(&cfg.out.join("judgements.jsonl"), |j| j.idx)?;
    let pending: Vec<(u64, String)> = cases
        .iter()
        .filter(|c| judged.entries.get(&c.idx).is_none_or(|j| j.score.is_none()))
        .filter_map(|c| {
            let p = preds.entries.get(&c.idx)?;
            Some((c.idx, template.fill(&c.query, &c.answer, &shots[c.idx as usize - 1], &p.prediction)))
        })
        .collect();
    if !cfg.quiet {
        eprintln!(
            "judgements: {} cached, {} to make",
            judged.entries.values().filter(|j| j.score.is_some()).count(),
            pending.len()
        );
    }
    for (idx, r) in rate_all(judge, JUDGE_SYSTEM, pending, cfg.judge_tries)? {
        let j = Judgement {
            idx,
            score: r.score,
            analysis: r.reply,
            tries: r.tries,
            tokens: r.tokens,
            error: r.error,
        };
        judged.put(idx, j)?;
    }

    let r = report(&cases, &preds, &judged);
    crate::util::write_atomic(&cfg.out.join("report.md"), markdown(&r, &cfg.title).as_bytes())?;
    crate::util::write_atomic(&cfg.out.join("report.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    Ok(Outcome::Judged(r))
}

/// The judge template and the few-shot answers, checked against the questions.
fn judge_files(
    cfg: &LongBenchChatConfig,
    cases: &[TestCase],
) -> anyhow::Result<(JudgeTemplate, Vec<Vec<super::FewShot>>)> {
    let cached = crate::eval::fetch::default_dir();
    let fs = cfg.few_shots.clone().unwrap_or_else(|| cached.join("few_shots.json"));
    let tp = cfg.judge_prompt.clone().unwrap_or_else(|| cached.join("prompt_fs.txt"));
    for p in [&fs, &tp] {
        if !p.exists() {
            bail!(
                "{} not found: pass --few-shots and --judge-prompt, or run `core-cli data fetch longbench-chat`",
                p.display()
            );
        }
    }
    let shots = read_few_shots(&fs)?;
    for c in cases {
        if c.idx as usize > shots.len() {
            bail!(
                "{}: question idx {} has no few-shot answers ({} entries)",
                fs.display(),
                c.idx,
                shots.len()
            );
        }
    }
    Ok((JudgeTemplate::read(&tp)?, shots))
}

/// No judge: ROUGE-L F1 and token F1 against the reference, written to `overlap.json`.
fn overlap_fallback(
    cfg: &LongBenchChatConfig,
    cases: &[TestCase],
    preds: &Cache<Prediction>,
) -> anyhow::Result<OverlapReport> {
    let items: Vec<OverlapItem> = cases
        .iter()
        .filter_map(|c| {
            let p = preds.entries.get(&c.idx)?;
            Some(OverlapItem {
                idx: c.idx,
                rouge_l: overlap::rouge_l(&p.prediction, &c.answer),
                token_f1: overlap::token_f1(&p.prediction, &c.answer),
            })
        })
        .collect();
    let mean = |f: fn(&OverlapItem) -> f64| {
        (!items.is_empty()).then(|| items.iter().map(f).sum::<f64>() / items.len() as f64)
    };
    let r = OverlapReport {
        protocol: "reference overlap (ROUGE-L F1, token F1): NOT the LongBench-Chat judge protocol; pass --judge-url and --judge-model for that",
        mean_rouge_l: mean(|i| i.rouge_l),
        mean_token_f1: mean(|i| i.token_f1),
        answered: items.len(),
        unanswered: cases.len() - items.len(),
        items,
    };
    crate::util::write_atomic(&cfg.out.join("overlap.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    Ok(r)
}
