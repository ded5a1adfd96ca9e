//! `core-cli bench train`: the same data and model under naive, sorted and packed batching, one
//! epoch each, in separate processes (so peak memory is each strategy's own), side by side.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::table::{Table, compact};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput of naive vs sorted vs packed batching.
    Train(BenchTrainArgs),
    /// Varlen attention kernel vs the dense block-diagonal mask on one packed row (cpu, wgpu, cuda).
    Attention(BenchAttentionArgs),
    /// The fused weighted cross entropy vs the plain chunked one: time and memory, forward + backward.
    Loss(BenchLossArgs),
    /// `build-data`'s own overhead (read, tokenize, filter, dedupe, prompt, write) against a local
    /// endpoint that answers instantly.
    BuildData(BenchBuildDataArgs),
}

#[derive(Args, Debug)]
pub struct BenchBuildDataArgs {
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
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchAttentionArgs {
    /// cpu (the host kernel), wgpu or cuda (the CubeCL kernel).
    #[arg(long, default_value = "wgpu")]
    pub backend: String,
    /// Row lengths (tokens per packed row), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8192")]
    pub rows: Vec<usize>,
    /// Length of each packed sequence (the row holds row/seq-len of them; the last may be shorter).
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    #[arg(long, default_value_t = 8)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Timed repetitions (after one untimed warm-up that compiles the kernels).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Skip the dense path where its scores (heads × row² × 4 bytes, kept for the backward) would
    /// exceed this many bytes (default 256 MiB, wgpu's default largest buffer; past it wgpu
    /// aborts the process).
    #[arg(long, default_value_t = 256 << 20)]
    pub dense_max_bytes: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchLossArgs {
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Target tokens (rows of the hidden states that carry a label).
    #[arg(long, default_value_t = 4096)]
    pub targets: usize,
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 32_000)]
    pub vocab: usize,
    /// Tokens per chunk (both paths chunk the same way).
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// `tiny` or a Hugging Face model directory.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Data (default: a generated long-tailed mix, see `--examples`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Without `--data`: examples in the generated mix (30% short chats, 70% passkey/key-value
    /// documents with log-uniform lengths from 128 tokens up to `--max-tokens`, seed 1).
    #[arg(long, default_value_t = 600)]
    pub examples: usize,
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Pack row capacity (and longest sequence for naive/sorted).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: u32,
    /// Sequences per micro-batch for naive and sorted.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Stop each strategy after this many steps (default: one epoch).
    #[arg(long)]
    pub steps: Option<usize>,
    /// One JSON object on stdout, keyed by strategy.
    #[arg(long)]
    pub json: bool,
    /// Keep the runs here (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Train(a) => train(a),
        BenchCommand::Attention(a) => {
            crate::with_backend!(a.backend.as_str(), |B, device| attention::<B>(a, &device))
        }
        BenchCommand::BuildData(a) => build_data(a),
        BenchCommand::Loss(a) => crate::with_backend!(a.backend.as_str(), |B, device| loss::<B>(a, &device)),
    }
}

/// Times forward + backward of the fused and the plain weighted cross entropy on the same random
/// inputs and reads memory after each: the process's peak RSS on the CPU (the fused path runs
/// first, so a higher peak after the plain one is the plain one's), the device pool on wgpu/cuda.
fn loss<B: burn::tensor::backend::AutodiffBackend>(
    a: &BenchLossArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    use burn::tensor::{Distribution, ElementConversion, Tensor};
    use longalign_kernels::{CeTargets, pool_bytes, reference_weighted_ce, try_weighted_ce};
    if a.targets == 0 || a.hidden == 0 || a.vocab == 0 || a.chunk == 0 || a.reps == 0 {
        bail!("--targets, --hidden, --vocab, --chunk and --reps must be positive");
    }
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    let h = Tensor::<B, 2>::random([a.targets, a.hidden], Distribution::Normal(0.0, 1.0), device);
    let w = Tensor::<B, 2>::random([a.hidden, a.vocab], Distribution::Normal(0.0, 0.05), device);
    let t = CeTargets {
        labels: (0..a.targets).map(|i| ((i * 7919) % a.vocab) as u32).collect(),
        weights: vec![1.0 / a.targets as f32; a.targets],
        chunk: a.chunk,
        pad_to: 1,
    };
    let mut out = Vec::new();
    for path in ["fused", "plain"] {
        let run = || -> anyhow::Result<f32> {
            let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
            let l = match path {
                "fused" => {
                    try_weighted_ce(h, w, &t).map_err(|_| anyhow::anyhow!("no fused loss on this backend"))?
                }
                _ => reference_weighted_ce(h, w, &t),
            };
            let value = l.clone().into_scalar().elem::<f32>();
            let _ = l.backward();
            sync()?;
            Ok(value)
        };
        let value = run()?; // warm-up (compiles on JIT backends)
        let _ = pool_bytes(device, true);
        let t0 = web_time::Instant::now();
        for _ in 0..a.reps {
            run()?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / a.reps as f64;
        out.push(json!({
            "path": path, "fwd_bwd_ms": ms, "loss": value,
            "pool_bytes_after": pool_bytes(device, false),
            "peak_rss_bytes_after": crate::train::peak_rss_bytes(),
        }));
    }
    if a.json {
        println!("{}", Value::Array(out));
        return Ok(());
    }
    println!(
        "weighted cross entropy, {} targets × hidden {} × vocab {}, chunks of {}, backend {}; forward + backward, \
         mean of {} after a warm-up; the plain path keeps {}B of logits and probabilities for its backward\n",
        a.targets,
        a.hidden,
        a.vocab,
        a.chunk,
        a.backend,
        a.reps,
        compact((2 * a.targets * a.vocab * 4) as f64)
    );
    let mut tb =
        Table::new(["path", "fwd+bwd ms", "loss", "peak RSS after", "pool after"].map(String::from).to_vec());
    for r in &out {
        let bytes = |k: &str| r[k].as_f64().map_or("—".into(), |b| format!("{}B", compact(b)));
        tb.row(vec![
            r["path"].as_str().unwrap_or("").into(),
            format!("{:.1}", r["fwd_bwd_ms"].as_f64().unwrap_or(0.0)),
            format!("{:.6}", r["loss"].as_f64().unwrap_or(0.0)),
            bytes("peak_rss_bytes_after"),
            bytes("pool_bytes_after"),
        ]);
    }
    print!("{}", tb.render());
    Ok(())
}

/// Times forward and forward+backward of both attention paths on the same random q, k, v and
/// reads the device memory pool (reserved bytes after a cleanup and one timed pass).
fn attention<B: burn::tensor::backend::AutodiffBackend>(
    a: &BenchAttentionArgs,
    device: &B::Device,
) -> anyhow::Result<()> {
    use burn::tensor::{Distribution, Tensor};
    use longalign_kernels::{VarlenLayout, pool_bytes, reference_attention, try_varlen_attention};
    if !longalign_kernels::supported::<B>() {
        bail!("backend {:?} has no varlen kernel: pass --backend cpu, wgpu or cuda", a.backend);
    }
    if a.seq_len == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) || a.reps == 0 {
        bail!("--seq-len and --reps must be positive and --heads a multiple of --kv-heads");
    }
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    let mut out = Vec::new();
    for &l in &a.rows {
        let mut cu = vec![0u32];
        while (*cu.last().unwrap() as usize) < l {
            cu.push((*cu.last().unwrap() as usize + a.seq_len).min(l) as u32);
        }
        let layout = VarlenLayout::from_cu_seqlens(l, &[cu], None);
        let (h, kv, hd) = (a.heads, a.kv_heads, a.head_dim);
        let rand =
            |heads: usize| Tensor::<B, 4>::random([1, heads, l, hd], Distribution::Normal(0.0, 1.0), device);
        let (q, k, v) = (rand(h), rand(kv), rand(kv));
        for path in ["varlen", "dense"] {
            let scores = (h * l * l * 4) as u64;
            if path == "dense" && scores > a.dense_max_bytes {
                out.push(json!({"row_len": l, "path": path, "skipped": format!(
                    "scores need {}B > --dense-max-bytes", compact(scores as f64))}));
                continue;
            }
            let run = |grad: bool| -> anyhow::Result<()> {
                let (q, k, v) = if grad {
                    (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad())
                } else {
                    (q.clone(), k.clone(), v.clone())
                };
                let o = match path {
                    "varlen" => match try_varlen_attention(q, k, v, &layout) {
                        Ok(o) => o?,
                        Err(_) => bail!("no kernel on this backend"),
                    },
                    _ => reference_attention(q, k, v, &layout)?,
                };
                if grad {
                    let _ = o.sum().backward();
                }
                sync()
            };
            run(true)?; // compile and autotune, untimed
            let before = pool_bytes(device, true);
            let time = |grad: bool| -> anyhow::Result<f64> {
                let t = web_time::Instant::now();
                for _ in 0..a.reps {
                    run(grad)?;
                }
                Ok(t.elapsed().as_secs_f64() * 1e3 / a.reps as f64)
            };
            let fwd_ms = time(false)?;
            let fwd_bwd_ms = time(true)?;
            let pool = pool_bytes(device, false);
            let pairs = if path == "varlen" { layout.pairs() } else { (l * l) as u64 };
            out.push(json!({
                "row_len": l, "path": path, "sequences": layout.segments[0].len(),
                "fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms,
                "score_pairs_per_head": pairs,
                "pool_bytes_before": before, "pool_bytes_after": pool,
            }));
        }
    }
    if a.json {
        println!("{}", Value::Array(out));
        return Ok(());
    }
    println!(
        "attention over one packed row of {}-token sequences, {} heads ({} kv), head dim {}, backend {}; \
         mean of {} runs after a warm-up; pool = device memory the allocator holds after the runs \
         (wgpu, cuda)\n",
        a.seq_len, a.heads, a.kv_heads, a.head_dim, a.backend, a.reps
    );
    let mut t = Table::new(
        ["row", "path", "fwd ms", "fwd+bwd ms", "vs dense (fwd+bwd)", "pool"].map(String::from).to_vec(),
    );
    for r in &out {
        let l = r["row_len"].as_u64().unwrap_or(0);
        if let Some(why) = r["skipped"].as_str() {
            t.row(vec![
                l.to_string(),
                r["path"].as_str().unwrap_or("").into(),
                "—".into(),
                "—".into(),
                why.into(),
                "".into(),
            ]);
            continue;
        }
        let dense = out.iter().find(|d| d["row_len"] == r["row_len"] && d["path"] == "dense");
        let ratio = dense
            .and_then(|d| d["fwd_bwd_ms"].as_f64())
            .map_or("—".into(), |d| format!("{:.3}×", r["fwd_bwd_ms"].as_f64().unwrap_or(0.0) / d));
        t.row(vec![
            l.to_string(),
            r["path"].as_str().unwrap_or("").into(),
            format!("{:.1}", r["fwd_ms"].as_f64().unwrap_or(0.0)),
            format!("{:.1}", r["fwd_bwd_ms"].as_f64().unwrap_or(0.0)),
            ratio,
            r["pool_bytes_after"].as_f64().map_or("—".into(), |b| format!("{}B", compact(b))),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn train(a: &BenchTrainArgs) -> anyhow::Result<()> {
    let tmp = tempfile_dir()?;
    let root = a.out.clone().unwrap_or_else(|| tmp.clone());
    let exe = std::env::current_exe().context("locating core-cli")?;
    let mut results = serde_json::Map::new();
    // The default data is a long tail up to the row capacity, like LongAlign's mix of long
    // documents and short chats: the shape where batching strategy matters.
    let data = match &a.data {
        Some(d) => d.clone(),
        None => {
            let p = root.join("bench-data.jsonl");
            let cfg = crate::data::synth::SynthConfig {
                examples: a.examples,
                seed: 1,
                min_len: 128,
                max_len: a.max_tokens as usize,
                mix: crate::data::synth::MIX,
            };
            std::fs::create_dir_all(&root)?;
            std::fs::write(&p, crate::data::synth::to_jsonl(&crate::data::synth::generate(cfg)))?;
            p
        }
    };
    for (name, strategy, loss) in
        [("naive", "naive", "sequence"), ("sorted", "sorted", "sequence"), ("pack", "pack", "sequence")]
    {
        let run = root.join(name);
        let summary = root.join(format!("{name}.summary.json"));
        let _ = std::fs::remove_dir_all(&run);
        let mut cmd = Command::new(&exe);
        cmd.args([
            "train",
            "--quiet",
            "--model",
            &a.model,
            "--backend",
            &a.backend,
            "--strategy",
            strategy,
            "--loss",
            loss,
        ]);
        cmd.args(["--max-tokens", &a.max_tokens.to_string(), "--epochs", "1"]);
        if strategy != "pack" {
            cmd.args(["--batch-size", &a.batch_size.to_string()]);
        }
        cmd.arg("--data").arg(&data);
        if let Some(t) = &a.tokenizer {
            cmd.arg("--tokenizer").arg(t);
        }
        if let Some(s) = a.steps {
            cmd.args(["--steps", &s.to_string()]);
        }
        cmd.arg("--out").arg(&run).arg("--summary-json").arg(&summary);
        if !a.json {
            match a.steps {
                Some(s) => eprintln!("bench: training {s} steps with {name} batching …"),
                None => eprintln!("bench: training one epoch with {name} batching …"),
            }
        }
        let status = cmd.status().with_context(|| format!("running {}", exe.display()))?;
        if !status.success() {
            bail!("the {name} run failed ({status})");
        }
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
        let wall = s["wall_s"].as_f64().unwrap_or(f64::NAN);
        let useful = s["useful_tokens"].as_f64().unwrap_or(0.0);
        let padded = s["padded_tokens"].as_f64().unwrap_or(0.0);
        results.insert(
            name.to_string(),
            json!({
                "useful_tok_per_s": useful / wall,
                "padded_tok_per_s": padded / wall,
                "wall_s": wall,
                "peak_rss_bytes": s["peak_rss_bytes"],
                "steps": s["steps"],
                "useful_tokens": useful,
                "padded_tokens": padded,
                "occupancy": useful / padded.max(1.0),
                "final_loss": s["last_loss"],
            }),
        );
    }
    if a.out.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if a.json {
        println!("{}", Value::Object(results));
        return Ok(());
    }
    let mut t = Table::new(["", "naive", "sorted", "pack"].map(String::from).to_vec());
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&Value) -> String| {
        let mut r = vec![label.to_string()];
        r.extend(["naive", "sorted", "pack"].iter().map(|k| f(&results[*k])));
        t.row(r);
    };
    row(&mut t, "useful tok/s", &|v| format!("{:.0}", v["useful_tok_per_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "padded tok/s", &|v| format!("{:.0}", v["padded_tok_per_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "occupancy %", &|v| format!("{:.1}", 100.0 * v["occupancy"].as_f64().unwrap_or(0.0)));
    row(&mut t, "steps", &|v| v["steps"].to_string());
    row(&mut t, "wall s", &|v| format!("{:.1}", v["wall_s"].as_f64().unwrap_or(0.0)));
    row(&mut t, "peak RSS", &|v| {
        v["peak_rss_bytes"].as_f64().map_or("?".into(), |b| format!("{}B", compact(b)))
    });
    row(&mut t, "vs naive (useful tok/s)", &|v| {
        format!(
            "{:.2}×",
            v["useful_tok_per_s"].as_f64().unwrap_or(0.0)
                / results["naive"]["useful_tok_per_s"].as_f64().unwrap_or(1.0)
        )
    });
    let data_label = match &a.data {
        Some(d) => d.display().to_string(),
        None => format!("generated long-tailed mix, {} examples, 128–{} tokens", a.examples, a.max_tokens),
    };
    println!(
        "one epoch each, model {}, backend {}, data: {data_label}; \
         tok/s = tokens / training-loop wall time\n",
        a.model, a.backend
    );
    print!("{}", t.render());
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("longalign-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
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

fn build_data(a: &BenchBuildDataArgs) -> anyhow::Result<()> {
    use crate::batch::rng::SplitMix64;
    use crate::data::build::{BuildConfig, build};
    use crate::data::self_instruct::{GenSettings, Prompts};

    let dir = tempfile_dir()?;
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
        inputs: vec![crate::data::documents::Input { source: "bench".into(), path: docs.clone() }],
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
    let r = build(&cfg, &tokenizer, Some(&client));
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    let mb = bytes as f64 / 1e6;
    let out = json!({
        "docs": a.docs, "doc_tokens": r.document_tokens / a.docs.max(1) as u64, "mb": mb,
        "tokenizer": a.tokenizer, "concurrency": a.concurrency, "written": r.written,
        "documents_per_s": r.documents_per_s, "mb_per_s": mb / r.timing.total_s.max(1e-9),
        "timing": r.timing,
        "threads": rayon::current_num_threads(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "build-data overhead: {} documents of {} tokens ({:.1} MB, {} tokenizer), instant local endpoint, {} in flight",
            a.docs,
            out["doc_tokens"],
            mb,
            a.tokenizer.display(),
            a.concurrency
        );
        println!(
            "  read {:.2} s · tokenize {:.2} s · dedupe {:.2} s · prompt+send+tokenize+write {:.2} s · total {:.2} s",
            r.timing.read_s, r.timing.tokenize_s, r.timing.dedupe_s, r.timing.generate_s, r.timing.total_s
        );
        println!(
            "  {:.1} documents/s ({:.1} MB/s) end to end on {} threads; {} examples written",
            r.documents_per_s,
            mb / r.timing.total_s.max(1e-9),
            rayon::current_num_threads(),
            r.written
        );
    }
    Ok(())
}

/// A GPT-2-style byte-level BPE (4,000 tokens, ChatML specials and template) trained on random
/// text over `vocab`, written as a Hugging Face tokenizer directory: a real BPE for the benchmark
/// without a download.
fn train_bpe(vocab: &[&str], dir: &std::path::Path) -> anyhow::Result<()> {
    use crate::batch::rng::SplitMix64;
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
