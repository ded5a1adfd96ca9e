//! `core-cli eval longbench-chat` and `eval needle`: flags → [`crate::eval`] run configs → print.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::eval::answer::Answerer;
use crate::eval::longbench_chat::{self, LongBenchChatConfig, Outcome};
use crate::eval::needle::{self, NeedleConfig};
use crate::llm::{Client, Http};

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
        EvalCommand::LongbenchChat(a) => run_longbench_chat(a),
        EvalCommand::Needle(a) => run_needle(a),
    }
}

/// Who answers: a local model or an OpenAI-compatible endpoint.
#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// Answer with this local model directory …
    #[arg(long, conflicts_with = "endpoint")]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (or Hub id) to apply to the local model.
    #[arg(long, requires = "model")]
    pub adapter: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub backend: crate::backend::Backend,
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
    /// The answerer these flags name (`None`: neither a model nor an endpoint).
    fn answerer(&self, http: &HttpArgs) -> anyhow::Result<Option<Answerer>> {
        Ok(match (&self.model, &self.endpoint, &self.endpoint_model) {
            (Some(model), _, _) => Some(Answerer::Local {
                model: model.clone(),
                adapter: self.adapter.clone(),
                backend: self.backend,
            }),
            (None, Some(url), Some(name)) => {
                Some(Answerer::Endpoint(http.options().client(url, name, &self.endpoint_api_key_env)?))
            }
            _ => None,
        })
    }

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
    fn options(&self) -> Http {
        Http {
            concurrency: self.concurrency,
            retries: self.retries,
            timeout: Duration::from_secs_f64(self.timeout_s),
            backoff: Duration::from_secs_f64(self.backoff_s),
        }
    }
}

impl JudgeArgs {
    fn client(&self, http: &HttpArgs) -> anyhow::Result<Option<Client>> {
        match (&self.judge_url, &self.judge_model) {
            (Some(url), Some(model)) => Ok(Some(http.options().client(url, model, &self.api_key_env)?)),
            _ => Ok(None),
        }
    }
}

fn run_longbench_chat(a: &LongBenchChatArgs) -> anyhow::Result<()> {
    let cfg = LongBenchChatConfig {
        data: a.data.clone(),
        few_shots: a.few_shots.clone(),
        judge_prompt: a.judge_prompt.clone(),
        answerer: a.answer.answerer(&a.http)?,
        title: a.answer.title("cached answers"),
        judge: a.judge.client(&a.http)?,
        out: a.out.clone(),
        max_length: a.max_length,
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        seed: a.seed,
        judge_tries: a.judge_tries,
        limit: a.limit,
        quiet: a.json,
    };
    match longbench_chat::run(&cfg)? {
        Outcome::Judged(r) if a.json => {
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
        }
        Outcome::Judged(r) => {
            let f = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.2}"));
            println!(
                "LongBench-Chat ({}): mean score {} (English {}, Chinese {}), {} scored, {} failed; report: {}",
                cfg.title,
                f(r.mean_score),
                f(r.mean_score_en),
                f(r.mean_score_zh),
                r.scored,
                r.failed,
                a.out.join("report.md").display()
            );
        }
        Outcome::Overlap(r) if a.json => println!("{}", serde_json::to_string(&r)?),
        Outcome::Overlap(r) => println!(
            "no judge configured — reference overlap only (not the official protocol): ROUGE-L F1 {:.3}, token F1 {:.3} over {} answers",
            r.mean_rouge_l.unwrap_or(0.0),
            r.mean_token_f1.unwrap_or(0.0),
            r.answered
        ),
    }
    Ok(())
}

fn run_needle(a: &NeedleArgs) -> anyhow::Result<()> {
    let cfg = NeedleConfig {
        answerer: a.answer.answerer(&a.http)?,
        title: a.answer.title("needle"),
        tokenizer: a.tokenizer.clone().or_else(|| a.answer.model.clone()),
        lengths: a.lengths.clone(),
        depths: a.depths.clone(),
        haystack: a.haystack.clone(),
        max_new_tokens: a.max_new_tokens,
        judge: a.judge.client(&a.http)?,
        out: a.out.clone(),
        quiet: a.json,
    };
    let r = needle::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    print!("{}", r.render(&cfg.title));
    Ok(())
}
