//! `core-cli build-data`: long instruction data from folders of documents with Self-Instruct.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::build::documents::Input;
use crate::build::self_instruct::{GenSettings, Prompts};
use crate::build::{BuildConfig, build};
use crate::data::dedupe::DedupeConfig;
use crate::llm::Http;

#[derive(Args, Debug)]
pub struct BuildDataArgs {
    /// Documents: a folder or file (.txt, .md, .jsonl with `text`, .json array), as SOURCE=PATH or
    /// PATH (source = its name). Repeat for several sources.
    #[arg(long = "input", required_unless_present = "print_prompts", value_parser = |s: &str| Input::parse(s))]
    pub inputs: Vec<Input>,
    /// Output .jsonl (messages + meta), appended as examples finish; report and prompts beside it.
    #[arg(long, required_unless_present = "print_prompts")]
    pub out: Option<PathBuf>,
    /// OpenAI-compatible base URL of the generator LLM (e.g. http://127.0.0.1:8000/v1).
    #[arg(long, required_unless_present_any = ["dry_run", "print_prompts"])]
    pub endpoint: Option<String>,
    /// The generator's model name.
    #[arg(long, required_unless_present_any = ["dry_run", "print_prompts"])]
    pub model: Option<String>,
    /// Environment variable holding the API key (never printed or written).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Tokenizer of the model you will train (HF directory or `builtin`): lengths are measured in it.
    #[arg(long, default_value = "builtin")]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 8000)]
    pub min_tokens: usize,
    #[arg(long, default_value_t = 64000)]
    pub max_tokens: usize,
    /// Examples to build (default: one per document that passes the filters).
    #[arg(long)]
    pub examples: Option<usize>,
    /// Upsampling of longer documents: each document's expected share of the examples ∝
    /// tokens^UPSAMPLE (0 = every document alike; 1 = proportional to length).
    #[arg(long, default_value_t = 1.0)]
    pub upsample: f64,
    /// Prompt file (TOML, same shape as the built-in one, which `--print-prompts` shows).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Task type weights, e.g. `general=2,summary=1,reasoning=1,extraction=1`.
    #[arg(long)]
    pub task_weights: Option<String>,
    /// Near-duplicate threshold (estimated Jaccard of word 5-grams).
    #[arg(long, default_value_t = 0.8)]
    pub dedupe_threshold: f64,
    #[arg(long)]
    pub no_dedupe: bool,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1024)]
    pub max_question_tokens: usize,
    /// Answers cut off at this limit (finish_reason "length") are skipped and counted.
    #[arg(long, default_value_t = 4096)]
    pub max_answer_tokens: usize,
    /// Requests per step when the reply is unusable (no question list, empty answer).
    #[arg(long, default_value_t = 3)]
    pub tries: u32,
    /// Jobs (documents) in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// HTTP retries per request (429, 5xx, timeouts), with exponential backoff.
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// First backoff in seconds (doubles per retry, with jitter).
    #[arg(long, default_value_t = 1.0)]
    pub backoff: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue an existing output: finished documents are skipped, the rest run.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start an existing output again from empty.
    #[arg(long)]
    pub overwrite: bool,
    /// Read, filter, dedupe and plan; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the built-in prompt file and exit.
    #[arg(long, exclusive = true)]
    pub print_prompts: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &BuildDataArgs) -> anyhow::Result<()> {
    if a.print_prompts {
        print!("{}", crate::build::self_instruct::BUILTIN_PROMPTS);
        return Ok(());
    }
    let prompts = Prompts::load(a.prompts.as_deref(), a.task_weights.as_deref())?;
    if !(0.0..=1.0).contains(&a.dedupe_threshold) {
        anyhow::bail!("--dedupe-threshold must be within 0–1");
    }
    let tokenizer = crate::data::ModelTokenizer::load(Some(&a.tokenizer), None)?;
    let cfg = BuildConfig {
        inputs: a.inputs.clone(),
        out: a.out.clone().context("--out is required")?,
        min_tokens: a.min_tokens,
        max_tokens: a.max_tokens,
        examples: a.examples,
        upsample: a.upsample,
        dedupe: (!a.no_dedupe)
            .then(|| DedupeConfig { threshold: a.dedupe_threshold, ..DedupeConfig::default() }),
        prompts,
        generation: GenSettings {
            temperature: a.temperature,
            max_question_tokens: a.max_question_tokens,
            max_answer_tokens: a.max_answer_tokens,
            tries: a.tries,
            seed: a.seed,
        },
        concurrency: a.concurrency,
        resume: a.resume,
        overwrite: a.overwrite,
        dry_run: a.dry_run,
        progress: !a.quiet && !a.json,
    };
    let client = match (&a.endpoint, &a.model) {
        (Some(url), Some(model)) => {
            let http = Http {
                concurrency: a.concurrency,
                retries: a.retries,
                timeout: Duration::from_secs(a.timeout),
                backoff: Duration::from_secs_f64(a.backoff.max(0.0)),
            };
            Some(http.client(url, model, &a.api_key_env)?)
        }
        _ => None,
    };
    let r = build(&cfg, &tokenizer, client.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.summary());
    }
    Ok(())
}
