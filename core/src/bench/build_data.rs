//! `build-data`'s own overhead (read, tokenize, filter, dedupe, prompt, write) against a local
//! endpoint that answers at once, on generated documents of a chosen length.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use crate::build::self_instruct::{GenSettings, Prompts};
use crate::build::{BuildConfig, TimingReport, build};
use crate::util::rng::SplitMix64;

/// What to run (also `core-cli bench build-data`'s flags).
#[derive(clap::Args, Debug, Clone)]
pub struct BuildDataBenchConfig {
    /// Documents to generate.
    #[arg(long, default_value_t = 200)]
    pub docs: usize,
    /// Tokens per document (in the chosen tokenizer).
    #[arg(long, default_value_t = 32_000)]
    pub doc_tokens: usize,
    /// HF tokenizer directory, `builtin` (bytes), or `bpe` (a byte-level BPE with 4,000 merges
    /// trained here on the benchmark's words: ~5 bytes per token, more text per token than English).
    #[arg(long, default_value = "bpe")]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildDataBenchReport {
    pub docs: usize,
    /// Mean tokens per document, as measured.
    pub doc_tokens: u64,
    /// Megabytes of document text.
    pub mb: f64,
    pub tokenizer: PathBuf,
    pub concurrency: usize,
    pub written: usize,
    pub documents_per_s: f64,
    pub mb_per_s: f64,
    pub timing: TimingReport,
    pub threads: usize,
}

impl BuildDataBenchReport {
    /// What `core-cli bench build-data` prints.
    pub fn render(&self) -> String {
        let (r, tm) = (self, &self.timing);
        format!(
            "build-data overhead: {} documents of {} tokens ({:.1} MB, {} tokenizer), instant local endpoint, {} in flight\n\
             \x20 read {:.2} s · tokenize {:.2} s · dedupe {:.2} s · prompt+send+tokenize+write {:.2} s · total {:.2} s\n\
             \x20 {:.1} documents/s ({:.1} MB/s) end to end on {} threads; {} examples written\n",
            r.docs,
            r.doc_tokens,
            r.mb,
            r.tokenizer.display(),
            r.concurrency,
            tm.read_s,
            tm.tokenize_s,
            tm.dedupe_s,
            tm.generate_s,
            tm.total_s,
            r.documents_per_s,
            r.mb_per_s,
            r.threads,
            r.written
        )
    }
}

pub fn run(a: &BuildDataBenchConfig) -> anyhow::Result<BuildDataBenchReport> {
    let dir = super::scratch_dir()?;
    let result = run_in(a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(a: &BuildDataBenchConfig, dir: &std::path::Path) -> anyhow::Result<BuildDataBenchReport> {
    let vocab: Vec<&str> = crate::eval::needle::HAYSTACK.split_whitespace().collect();
    let tokenizer = if a.tokenizer.as_os_str() == "bpe" {
        let tok_dir = dir.join("bpe");
        train_bpe(&vocab, &tok_dir)?;
        crate::data::ModelTokenizer::from_dir(&tok_dir, None)?
    } else {
        crate::data::ModelTokenizer::load(Some(&a.tokenizer), None)?
    };
    // Documents of random words drawn from the bundled haystack prose (natural word lengths, no
    // shared 5-grams, so deduplication keeps them all), cut to `doc_tokens` in the tokenizer.
    let probe: String = {
        let mut g = SplitMix64::new(0);
        (0..2000).map(|_| vocab[g.below(vocab.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
    };
    let words_per_token = 2000.0 / tokenizer.count(&probe)? as f64;
    let mut words = (a.doc_tokens as f64 * words_per_token).ceil() as usize;
    // One correction from a document of the real length (joins change the count a little).
    let trial: String = {
        let mut g = SplitMix64::new(1);
        (0..words).map(|_| vocab[g.below(vocab.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
    };
    words = (words as f64 * a.doc_tokens as f64 / tokenizer.count(&trial)?.max(1) as f64).ceil() as usize;
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs)?;
    let mut bytes = 0usize;
    for k in 0..a.docs {
        let mut g = SplitMix64::new(k as u64 + 1);
        let text: String =
            (0..words).map(|_| vocab[g.below(vocab.len() as u64) as usize]).collect::<Vec<_>>().join(" ");
        bytes += text.len();
        std::fs::write(docs.join(format!("{k:05}.txt")), text)?;
    }
    let (url, _server) = instant_endpoint()?;
    let mut c = crate::llm::ClientConfig::new(&url, "instant");
    c.concurrency = a.concurrency;
    let client = crate::llm::Client::new(c)?;
    let cfg = BuildConfig {
        inputs: vec![crate::build::documents::Input { source: "bench".into(), path: docs.clone() }],
        out: dir.join("out.jsonl"),
        min_tokens: a.doc_tokens / 2,
        max_tokens: a.doc_tokens * 2,
        examples: None,
        upsample: 0.0,
        dedupe: Some(crate::data::dedupe::DedupeConfig::default()),
        prompts: Prompts::builtin(),
        generation: GenSettings {
            temperature: 0.7,
            max_question_tokens: 1024,
            max_answer_tokens: 4096,
            tries: 1,
            seed: 1,
        },
        concurrency: a.concurrency,
        resume: false,
        overwrite: true,
        dry_run: false,
        progress: false,
    };
    let r = build(&cfg, &tokenizer, Some(&client))?;
    let mb = bytes as f64 / 1e6;
    Ok(BuildDataBenchReport {
        docs: a.docs,
        doc_tokens: r.document_tokens / a.docs.max(1) as u64,
        mb,
        tokenizer: a.tokenizer.clone(),
        concurrency: a.concurrency,
        written: r.written,
        documents_per_s: r.documents_per_s,
        mb_per_s: mb / r.timing.total_s.max(1e-9),
        timing: r.timing,
        threads: rayon::current_num_threads(),
    })
}

/// An OpenAI-compatible endpoint that answers at once: a numbered list of five questions for
/// question requests, one sentence otherwise. It runs in this process (on its own runtime), so its
/// JSON parsing of every 100+ kB request is counted against the builder: the figure is a floor.
fn instant_endpoint() -> anyhow::Result<(String, tokio::runtime::Runtime)> {
    async fn answer(axum::Json(req): axum::Json<Value>) -> axum::Json<Value> {
        let text = req["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let content = if text.contains("numbered list") {
            (1..=5)
                .map(|i| format!("{i}. What does section {i} of the text say about its subject?"))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            "The text says so in its second section.".to_string()
        };
        axum::Json(json!({
            "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        }))
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(answer))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/v1"), rt))
}

/// A GPT-2-style byte-level BPE (4,000 tokens, ChatML specials and template) trained on random
/// text over `vocab`, written as a Hugging Face tokenizer directory: a real BPE for the benchmark
/// without a download.
fn train_bpe(vocab: &[&str], dir: &std::path::Path) -> anyhow::Result<()> {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    let mut g = SplitMix64::new(7);
    let texts: Vec<String> = (0..500)
        .map(|_| (0..200).map(|_| vocab[g.below(vocab.len() as u64) as usize]).collect::<Vec<_>>().join(" "))
        .collect();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let specials = ["<|im_start|>", "<|im_end|>"].map(|t| AddedToken::from(t, true)).to_vec();
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(4000)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    tok.train(&mut trainer, texts.iter()).map_err(|e| anyhow::anyhow!("training the benchmark BPE: {e}"))?;
    std::fs::create_dir_all(dir)?;
    tok.save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("saving the benchmark BPE: {e}"))?;
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"chat_template": template, "eos_token": "<|im_end|>"}).to_string(),
    )?;
    Ok(())
}
