//! `core-cli eval longbench-chat`: answers from a local model or any OpenAI-compatible endpoint,
//! rated by an LLM judge with the official few-shot prompt; cached and resumable.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::eval::longbench_chat::{
    Cache, JUDGE_SYSTEM, JudgeTemplate, Judgement, Prediction, TestCase, markdown, normalize_prediction,
    parse_rating, read_few_shots, read_test_cases, report,
};
use crate::eval::overlap;
use crate::llm::{ChatMessage, ChatRequest, Client, ClientConfig};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// LongBench-Chat: long-context questions rated 1–10 by an LLM judge against expert answers.
    LongbenchChat(LongBenchChatArgs),
    /// Needle in a haystack: exact retrieval over context lengths × depths, with a heatmap.
    Needle(NeedleArgs),
}

#[derive(Args, Debug)]
pub struct NeedleArgs {
    #[command(flatten)]
    pub answer: AnswerArgs,
    /// Tokenizer that measures context lengths (default: the model's; built-in bytes for endpoints).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Context lengths in tokens, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000")]
    pub lengths: Vec<usize>,
    /// Needle depths in percent, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,25,50,75,100")]
    pub depths: Vec<u32>,
    /// Filler text (default: the bundled datasets/haystack/haystack.txt).
    #[arg(long)]
    pub haystack: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Optionally also rate each answer 1–10 by a judge, besides exact retrieval.
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output folder: needle.jsonl (cache), grid.json, heatmap.png, heatmap.svg.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LongBenchChatArgs {
    /// test_cases.json (fields idx, prompt, query, answer).
    #[arg(long)]
    pub data: PathBuf,
    /// few_shots.json (three human-scored answers per question; default: the fetched cache).
    #[arg(long)]
    pub few_shots: Option<PathBuf>,
    /// prompt_fs.txt (the official judge template, nine {} slots; default: the fetched cache).
    #[arg(long)]
    pub judge_prompt: Option<PathBuf>,
    #[command(flatten)]
    pub answer: AnswerArgs,
    /// Without a judge, answers get the labelled ROUGE-L fallback instead.
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output folder: caches (predictions.jsonl, judgements.jsonl), report.md, report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Prompts longer than this many tokens lose their middle (official: 64000). Local model only.
    #[arg(long, default_value_t = 64000)]
    pub max_length: usize,
    /// Official: 1024 new tokens, temperature 1.0, seed 42 per question.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Judge attempts per answer when the reply has no [[rating]].
    #[arg(long, default_value_t = 5)]
    pub judge_tries: u32,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object on stdout (mean_score, scored, failed, items, …).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::LongbenchChat(a) => longbench_chat(a),
        EvalCommand::Needle(a) => needle(a),
    }
}

/// Who answers: a local model or an OpenAI-compatible endpoint.
#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// Answer with this local model directory …
    #[arg(long, conflicts_with = "endpoint")]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// … or with this OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, requires = "endpoint_model")]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub endpoint_model: Option<String>,
    /// Environment variable holding the answering endpoint's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub endpoint_api_key_env: String,
}

impl AnswerArgs {
    /// What reports call the answerer: the model directory or the endpoint's model name.
    pub fn title(&self, otherwise: &str) -> String {
        self.model
            .as_ref()
            .map(|m| m.display().to_string())
            .or_else(|| self.endpoint_model.clone())
            .unwrap_or_else(|| otherwise.into())
    }
}

/// The LLM judge.
#[derive(Args, Debug)]
pub struct JudgeArgs {
    /// Judge base URL (OpenAI-compatible).
    #[arg(long, requires = "judge_model")]
    pub judge_url: Option<String>,
    #[arg(long)]
    pub judge_model: Option<String>,
    /// Environment variable holding the judge's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
}

/// How hard the HTTP client tries (every endpoint of an evaluation).
#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Requests in flight at once (each endpoint).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// HTTP retries per request (429, 5xx, timeouts), with exponential backoff and jitter.
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
    /// First backoff in seconds (doubles per retry).
    #[arg(long, default_value_t = 1.0)]
    pub backoff_s: f64,
}

impl HttpArgs {
    /// A client for `url` serving `model`, its key read from the environment variable `key_env`.
    pub fn client(&self, url: &str, model: &str, key_env: &str) -> anyhow::Result<Client> {
        let mut c = ClientConfig::new(url, model).with_key_from_env(key_env);
        c.timeout = Duration::from_secs_f64(self.timeout_s);
        c.max_retries = self.retries;
        c.backoff = Duration::from_secs_f64(self.backoff_s);
        c.concurrency = self.concurrency;
        Client::new(c)
    }
}

fn longbench_chat(a: &LongBenchChatArgs) -> anyhow::Result<()> {
    let mut cases = read_test_cases(&a.data)?;
    if let Some(n) = a.limit {
        cases.truncate(n);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let judge = match (&a.judge.judge_url, &a.judge.judge_model) {
        (Some(url), Some(model)) => {
            // Default: the files `core-cli data fetch longbench-chat` cached.
            let cached = crate::eval::fetch::default_dir();
            let fs = a.few_shots.clone().unwrap_or_else(|| cached.join("few_shots.json"));
            let tp = a.judge_prompt.clone().unwrap_or_else(|| cached.join("prompt_fs.txt"));
            for p in [&fs, &tp] {
                if !p.exists() {
                    bail!(
                        "{} not found: pass --few-shots and --judge-prompt, or run `core-cli data fetch longbench-chat`",
                        p.display()
                    );
                }
            }
            let (fs, tp) = (&fs, &tp);
            let shots = read_few_shots(fs)?;
            for c in &cases {
                if c.idx as usize > shots.len() {
                    bail!(
                        "{}: question idx {} has no few-shot answers ({} entries)",
                        fs.display(),
                        c.idx,
                        shots.len()
                    );
                }
            }
            Some((a.http.client(url, model, &a.judge.api_key_env)?, JudgeTemplate::read(tp)?, shots))
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // 1. Answers, cached per question.
    let mut preds = Cache::<Prediction>::open(&a.out.join("predictions.jsonl"), |p| p.idx)?;
    let todo: Vec<&TestCase> = cases.iter().filter(|c| !preds.entries.contains_key(&c.idx)).collect();
    if !a.json {
        eprintln!("answers: {} cached, {} to make", cases.len() - todo.len(), todo.len());
    }
    if let Some(model_dir) = &a.answer.model {
        crate::with_backend!(a.answer.backend.as_str(), |B, device| {
            let m = crate::infer::ChatModel::<<B as AutodiffBackend>::InnerBackend>::load(
                model_dir, None, None, &device,
            )?;
            for c in &todo {
                let prompt = m.middle_truncated(&c.prompt, a.max_length)?;
                let params = crate::infer::ChatParams {
                    max_new_tokens: a.max_new_tokens,
                    temperature: a.temperature,
                    top_p: 1.0,
                    seed: a.seed,
                    stop: Vec::new(),
                    max_prompt_tokens: None,
                };
                let msgs = [crate::data::Message::new(crate::data::Role::User, prompt)];
                let out = m.chat(&msgs, &params, |_| true)?;
                let p = Prediction {
                    idx: c.idx,
                    prediction: normalize_prediction(&out.text),
                    prompt_tokens: out.prompt_tokens as u64,
                    completion_tokens: out.completion_tokens as u64,
                };
                preds.put(c.idx, p)?;
                if !a.json {
                    eprintln!("answered {} ({} tokens)", c.idx, out.completion_tokens);
                }
            }
        });
    } else if let (Some(url), Some(model)) = (&a.answer.endpoint, &a.answer.endpoint_model) {
        let answerer = a.http.client(url, model, &a.answer.endpoint_api_key_env)?;
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for c in &todo {
                let (cl, idx, prompt) = (answerer.clone(), c.idx, c.prompt.clone());
                let mut req = ChatRequest::new(vec![ChatMessage::new("user", prompt)], a.temperature);
                req.max_tokens = Some(a.max_new_tokens);
                req.seed = Some(a.seed);
                tasks.spawn(async move { (idx, cl.chat(&req).await) });
            }
            while let Some(done) = tasks.join_next().await {
                let (idx, r) = done?;
                match r {
                    Ok(reply) => {
                        let p = Prediction {
                            idx,
                            prediction: normalize_prediction(&reply.content),
                            prompt_tokens: reply.prompt_tokens,
                            completion_tokens: reply.completion_tokens,
                        };
                        preds.put(idx, p)?;
                    }
                    // Not cached: a later run tries again.
                    Err(e) => eprintln!("answer {idx} failed: {e}"),
                }
            }
            anyhow::Ok(())
        })?;
    } else if !todo.is_empty() {
        bail!(
            "{} questions have no cached answer: pass --model DIR or --endpoint URL --endpoint-model NAME",
            todo.len()
        );
    }

    // 2. Judgements (or the labelled fallback).
    let Some((judge, template, shots)) = judge else {
        return overlap_fallback(a, &cases, &preds);
    };
    let mut judged = Cache::<Judgement>::open(&a.out.join("judgements.jsonl"), |j| j.idx)?;
    let pending: Vec<(u64, String)> = cases
        .iter()
        .filter(|c| judged.entries.get(&c.idx).is_none_or(|j| j.score.is_none()))
        .filter_map(|c| {
            let p = preds.entries.get(&c.idx)?;
            Some((c.idx, template.fill(&c.query, &c.answer, &shots[c.idx as usize - 1], &p.prediction)))
        })
        .collect();
    if !a.json {
        eprintln!(
            "judgements: {} cached, {} to make",
            judged.entries.values().filter(|j| j.score.is_some()).count(),
            pending.len()
        );
    }
    let tries = a.judge_tries.max(1);
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (idx, prompt) in pending {
            let cl = judge.clone();
            tasks.spawn(async move {
                let req = ChatRequest::new(
                    vec![ChatMessage::new("system", JUDGE_SYSTEM), ChatMessage::new("user", prompt)],
                    0.0,
                );
                let mut j =
                    Judgement { idx, score: None, analysis: String::new(), tries: 0, tokens: 0, error: None };
                while j.tries < tries {
                    j.tries += 1;
                    match cl.chat(&req).await {
                        Ok(reply) => {
                            j.tokens += reply.prompt_tokens + reply.completion_tokens;
                            j.score = parse_rating(&reply.content);
                            j.analysis = reply.content;
                            if j.score.is_some() {
                                j.error = None;
                                break;
                            }
                            j.error = Some("the judge's reply has no [[rating]]".into());
                        }
                        Err(e) => {
                            // Transport retries are inside the client; this is final for now.
                            j.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                j
            });
        }
        while let Some(done) = tasks.join_next().await {
            let j = done?;
            judged.put(j.idx, j)?;
        }
        anyhow::Ok(())
    })?;

    let title = a.answer.title("cached answers");
    let r = report(&cases, &preds, &judged);
    crate::util::write_atomic(&a.out.join("report.md"), markdown(&r, &title).as_bytes())?;
    crate::util::write_atomic(&a.out.join("report.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    if a.json {
        let items: Vec<_> =
            r.items.iter().map(|i| json!({"idx": i.idx, "score": i.score, "error": i.error})).collect();
        println!(
            "{}",
            json!({
                "mean_score": r.mean_score, "mean_score_en": r.mean_score_en, "mean_score_zh": r.mean_score_zh,
                "scored": r.scored, "failed": r.failed, "judge_tokens": r.judge_tokens,
                "prediction_tokens": r.prediction_tokens, "items": items,
                "report": a.out.join("report.md"),
            })
        );
    } else {
        let f = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.2}"));
        println!(
            "LongBench-Chat ({title}): mean score {} (English {}, Chinese {}), {} scored, {} failed; report: {}",
            f(r.mean_score),
            f(r.mean_score_en),
            f(r.mean_score_zh),
            r.scored,
            r.failed,
            a.out.join("report.md").display()
        );
    }
    Ok(())
}

/// No judge: ROUGE-L F1 and token F1 against the reference, clearly not the official protocol.
fn overlap_fallback(
    a: &LongBenchChatArgs,
    cases: &[TestCase],
    preds: &Cache<Prediction>,
) -> anyhow::Result<()> {
    let mut items = Vec::new();
    for c in cases {
        let Some(p) = preds.entries.get(&c.idx) else { continue };
        items.push(json!({
            "idx": c.idx,
            "rouge_l": overlap::rouge_l(&p.prediction, &c.answer),
            "token_f1": overlap::token_f1(&p.prediction, &c.answer),
        }));
    }
    let mean = |k: &str| {
        (!items.is_empty())
            .then(|| items.iter().map(|i| i[k].as_f64().unwrap_or(0.0)).sum::<f64>() / items.len() as f64)
    };
    let out = json!({
        "protocol": "reference overlap (ROUGE-L F1, token F1): NOT the LongBench-Chat judge protocol; pass --judge-url and --judge-model for that",
        "mean_rouge_l": mean("rouge_l"),
        "mean_token_f1": mean("token_f1"),
        "answered": items.len(),
        "unanswered": cases.len() - items.len(),
        "items": items,
    });
    crate::util::write_atomic(&a.out.join("overlap.json"), serde_json::to_string_pretty(&out)?.as_bytes())?;
    if a.json {
        println!("{out}");
    } else {
        println!(
            "no judge configured — reference overlap only (not the official protocol): ROUGE-L F1 {:.3}, token F1 {:.3} over {} answers",
            mean("rouge_l").unwrap_or(0.0),
            mean("token_f1").unwrap_or(0.0),
            items.len()
        );
    }
    Ok(())
}

fn needle(a: &NeedleArgs) -> anyhow::Result<()> {
    use crate::eval::needle::{Cell, heatmap, key, prompt, score};
    let haystack = match &a.haystack {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => crate::eval::needle::HAYSTACK.to_string(),
    };
    if haystack.split_whitespace().next().is_none() {
        bail!("the haystack text is empty");
    }
    if let Some(d) = a.depths.iter().find(|&&d| d > 100) {
        bail!("--depths: {d} is not a percentage (0–100)");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let tok_dir = a.tokenizer.clone().or_else(|| a.answer.model.clone());
    let tok = crate::data::tokenize::ModelTokenizer::load(tok_dir.as_deref(), None)?;
    let count = |s: &str| tok.tokenizer.encode(s, false).map(|e| e.get_ids().len()).unwrap_or(s.len());
    let id = |l: usize, d: u32| (l as u64) * 1000 + d as u64;
    let mut cache = Cache::<Cell>::open(&a.out.join("needle.jsonl"), |c| id(c.length, c.depth_pct))?;
    let mut todo = Vec::new();
    for &l in &a.lengths {
        for &d in &a.depths {
            if !cache.entries.contains_key(&id(l, d)) {
                let k = key(l, d);
                todo.push((l, d, k.clone(), prompt(&haystack, l, d, &k, &count)));
            }
        }
    }
    if !a.json {
        eprintln!(
            "needle: {} cells cached, {} to run",
            a.lengths.len() * a.depths.len() - todo.len(),
            todo.len()
        );
    }
    if let Some(model_dir) = &a.answer.model {
        crate::with_backend!(a.answer.backend.as_str(), |B, device| {
            let m = crate::infer::ChatModel::<<B as AutodiffBackend>::InnerBackend>::load(
                model_dir, None, None, &device,
            )?;
            for (l, d, k, p) in &todo {
                let params =
                    crate::infer::ChatParams { max_new_tokens: a.max_new_tokens, ..Default::default() };
                let out = m.chat(
                    &[crate::data::Message::new(crate::data::Role::User, p.clone())],
                    &params,
                    |_| true,
                )?;
                let cell = Cell {
                    length: *l,
                    depth_pct: *d,
                    key: k.clone(),
                    score: score(&out.text, k),
                    answer: out.text,
                    prompt_tokens: out.prompt_tokens as u64,
                    judge_score: None,
                };
                cache.put(id(*l, *d), cell)?;
            }
        });
    } else if let (Some(url), Some(model)) = (&a.answer.endpoint, &a.answer.endpoint_model) {
        let cl = a.http.client(url, model, &a.answer.endpoint_api_key_env)?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (l, d, k, p) in todo {
                let cl = cl.clone();
                let mut req = ChatRequest::new(vec![ChatMessage::new("user", p)], 0.0);
                req.max_tokens = Some(a.max_new_tokens);
                tasks.spawn(async move { (l, d, k, cl.chat(&req).await) });
            }
            while let Some(done) = tasks.join_next().await {
                let (l, d, k, r) = done?;
                match r {
                    Ok(reply) => {
                        let cell = Cell {
                            length: l,
                            depth_pct: d,
                            score: score(&reply.content, &k),
                            key: k,
                            answer: reply.content,
                            prompt_tokens: reply.prompt_tokens,
                            judge_score: None,
                        };
                        cache.put(id(l, d), cell)?;
                    }
                    Err(e) => eprintln!("needle length {l} depth {d}% failed: {e}"),
                }
            }
            anyhow::Ok(())
        })?;
    } else if !todo.is_empty() {
        bail!(
            "{} cells have no cached answer: pass --model DIR or --endpoint URL --endpoint-model NAME",
            todo.len()
        );
    }
    if let (Some(url), Some(model)) = (&a.judge.judge_url, &a.judge.judge_model) {
        let judge = a.http.client(url, model, &a.judge.api_key_env)?;
        let pending: Vec<Cell> =
            cache.entries.values().filter(|c| c.judge_score.is_none()).cloned().collect();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for cell in pending {
                let judge = judge.clone();
                tasks.spawn(async move {
                    let req = ChatRequest::new(
                        vec![
                            ChatMessage::new("system", JUDGE_SYSTEM),
                            ChatMessage::new(
                                "user",
                                crate::eval::needle::judge_prompt(&cell.key, &cell.answer),
                            ),
                        ],
                        0.0,
                    );
                    let mut rating = None;
                    for _ in 0..5 {
                        match judge.chat(&req).await {
                            Ok(r) => {
                                rating = parse_rating(&r.content);
                                if rating.is_some() {
                                    break;
                                }
                            }
                            Err(e) => {
                                eprintln!("judge: {e}");
                                break;
                            }
                        }
                    }
                    (cell, rating)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (mut cell, rating) = done?;
                if rating.is_some() {
                    cell.judge_score = rating;
                    cache.put(id(cell.length, cell.depth_pct), cell)?;
                }
            }
            anyhow::Ok(())
        })?;
    }
    let judge_grid: Vec<Vec<Option<f64>>> = a
        .lengths
        .iter()
        .map(|&l| {
            a.depths.iter().map(|&d| cache.entries.get(&id(l, d)).and_then(|c| c.judge_score)).collect()
        })
        .collect();
    let judged: Vec<f64> = judge_grid.iter().flatten().filter_map(|x| *x).collect();
    let judge_mean = (!judged.is_empty()).then(|| judged.iter().sum::<f64>() / judged.len() as f64);
    let grid: Vec<Vec<Option<f64>>> = a
        .lengths
        .iter()
        .map(|&l| a.depths.iter().map(|&d| cache.entries.get(&id(l, d)).map(|c| c.score)).collect())
        .collect();
    let done: Vec<f64> = grid.iter().flatten().filter_map(|x| *x).collect();
    let mean = (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64);
    let title = a.answer.title("needle");
    heatmap(&a.out, &format!("needle in a haystack: {title}"), &a.lengths, &a.depths, &grid)?;
    let cells: Vec<&Cell> = cache.entries.values().collect();
    let out = json!({
        "lengths": a.lengths, "depths": a.depths, "scores": grid, "mean": mean,
        "judge_scores": judge_grid, "judge_mean": judge_mean,
        "scored": done.len(), "missing": a.lengths.len() * a.depths.len() - done.len(),
        "cells": cells, "heatmap_png": a.out.join("heatmap.png"), "heatmap_svg": a.out.join("heatmap.svg"),
    });
    crate::util::write_atomic(&a.out.join("grid.json"), serde_json::to_string_pretty(&out)?.as_bytes())?;
    if a.json {
        println!("{out}");
    } else {
        println!("needle in a haystack ({title}): exact retrieval, rows = context length, columns = depth %");
        let mut t = super::table::Table::new(
            std::iter::once("length".to_string()).chain(a.depths.iter().map(|d| format!("{d}%"))).collect(),
        );
        for (l, row) in a.lengths.iter().zip(&grid) {
            t.row(
                std::iter::once(l.to_string())
                    .chain(row.iter().map(|v| v.map_or("–".into(), |v| format!("{v:.0}"))))
                    .collect(),
            );
        }
        print!("{}", t.render());
        if let Some(j) = judge_mean {
            println!("judge: mean rating {j:.2} (1–10) over {} cells", judged.len());
        }
        println!(
            "mean {}; heatmap: {}",
            mean.map_or("–".to_string(), |m| format!("{m:.2}")),
            a.out.join("heatmap.png").display()
        );
    }
    Ok(())
}
