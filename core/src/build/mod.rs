//! `build-data`: the whole Self-Instruct pipeline, from folders of documents to a training file
//! (LongAlign §3.1). `documents` reads the inputs, `self_instruct` turns one document into one
//! example through an OpenAI-compatible generator; this module runs the jobs and reports.
//!
//! ```text
//! inputs ─read─▶ documents ─tokenize─▶ length filter ─MinHash─▶ dedupe ─▶ plan jobs (upsampling)
//!        ─▶ skip finished jobs (resume) ─▶ run jobs concurrently ─▶ append each example + fsync
//!        ─▶ report (per source × task type, length histogram, skips by reason, tokens spent)
//! ```
//!
//! Output files, for `--out long.jsonl`: `long.jsonl` (one example per line, appended as each one
//! finishes, so a killed run loses at most the examples in flight), `long.report.json`, and
//! `long.prompts.toml` (the exact prompts used).

pub mod documents;
pub mod questions;
pub mod report;
pub mod self_instruct;

pub use report::{
    BuildReport, DuplicateReport, HistogramBin, OutputReport, SkippedJob, SourceReport, TimingReport,
};

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use rayon::prelude::*;

use crate::data::dedupe::{DedupeConfig, find_duplicates};
use crate::data::{Example, Message, ModelTokenizer, Role};
use crate::llm::Client;
use documents::{Input, read_inputs};
use report::{output_report, read_output};
use self_instruct::{GenSettings, Outcome, Prompts, run_job};

/// Everything `build-data` needs besides the tokenizer and the endpoint.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub inputs: Vec<Input>,
    pub out: PathBuf,
    /// Documents outside `min_tokens..=max_tokens` (target tokenizer) are left out.
    pub min_tokens: usize,
    pub max_tokens: usize,
    /// Examples to plan (default: one per kept document).
    pub examples: Option<usize>,
    /// Longer documents get more examples: expected count ∝ tokens^upsample (0 = uniform).
    pub upsample: f64,
    /// None: no deduplication.
    pub dedupe: Option<DedupeConfig>,
    pub prompts: Prompts,
    pub generation: GenSettings,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// Continue an existing output file, skipping finished jobs.
    pub resume: bool,
    /// Replace an existing output file.
    pub overwrite: bool,
    /// Plan and report, send nothing.
    pub dry_run: bool,
    pub progress: bool,
}

/// One planned example: a document and which of its copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub doc: usize,
}

/// Expected examples per document ∝ (tokens / shortest)^alpha, rounded by largest remainder so
/// the total is exactly `n` and the plan is deterministic (no random draw to reproduce).
pub fn plan_counts(tokens: &[usize], n: usize, alpha: f64) -> Vec<usize> {
    if tokens.is_empty() {
        return Vec::new();
    }
    let min = *tokens.iter().min().expect("non-empty").max(&1) as f64;
    let w: Vec<f64> = tokens.iter().map(|&t| (t.max(1) as f64 / min).powf(alpha)).collect();
    let total: f64 = w.iter().sum();
    let exact: Vec<f64> = w.iter().map(|x| x / total * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    // Largest remainder first; ties to the longer document, then the earlier one.
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(tokens[b].cmp(&tokens[a])).then(a.cmp(&b))
    });
    let short = n - counts.iter().sum::<usize>();
    for &i in order.iter().take(short) {
        counts[i] += 1;
    }
    counts
}

/// Per-source counts of the input stage.
/// `long.jsonl` → `long.<suffix>`.
pub fn sidecar(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}.{suffix}"))
}

/// Runs the pipeline. `client` may be None only for a dry run.
pub fn build(
    cfg: &BuildConfig,
    tokenizer: &ModelTokenizer,
    client: Option<&Client>,
) -> anyhow::Result<BuildReport> {
    let t0 = Instant::now();
    if cfg.min_tokens > cfg.max_tokens {
        bail!("--min-tokens {} is above --max-tokens {}", cfg.min_tokens, cfg.max_tokens);
    }
    if !(cfg.upsample >= 0.0 && cfg.upsample.is_finite()) {
        bail!("--upsample must be a number ≥ 0");
    }
    let out_nonempty = std::fs::metadata(&cfg.out).map(|m| m.len() > 0).unwrap_or(false);
    if out_nonempty && !cfg.resume && !cfg.overwrite && !cfg.dry_run {
        bail!(
            "{} exists: pass --resume to continue it (finished documents are skipped) or --overwrite to start again",
            cfg.out.display()
        );
    }
    let mut report = BuildReport {
        out: cfg.out.clone(),
        prompt_version: cfg.prompts.version.clone(),
        prompt_sha: cfg.prompts.sha(),
        dry_run: cfg.dry_run,
        ..Default::default()
    };

    // Read.
    let docs = read_inputs(&cfg.inputs)?;
    report.files = docs.files;
    report.ignored_files = docs.ignored.len();
    report.documents = docs.documents.len();
    report.unreadable = docs.skipped;
    let documents = docs.documents;
    report.timing.read_s = t0.elapsed().as_secs_f64();

    // Measure with the target tokenizer (all cores), then filter.
    let t = Instant::now();
    let tokens: Vec<usize> = documents
        .par_iter()
        .map(|d| tokenizer.count(&d.text))
        .collect::<Result<_, _>>()
        .context("tokenizing documents")?;
    report.document_tokens = tokens.iter().map(|&t| t as u64).sum();
    report.timing.tokenize_s = t.elapsed().as_secs_f64();
    let mut kept: Vec<usize> = Vec::new();
    for (i, d) in documents.iter().enumerate() {
        let s = report.sources.entry(d.source.clone()).or_default();
        s.documents += 1;
        if tokens[i] < cfg.min_tokens {
            s.too_short += 1;
        } else if tokens[i] > cfg.max_tokens {
            s.too_long += 1;
        } else {
            kept.push(i);
        }
    }

    // Dedupe the survivors (the first of each group stays).
    let t = Instant::now();
    if let Some(dc) = &cfg.dedupe {
        let texts: Vec<&str> = kept.iter().map(|&i| documents[i].text.as_str()).collect();
        let dups = find_duplicates(&texts, dc);
        let dropped: HashSet<usize> = dups.iter().map(|d| d.index).collect();
        for d in &dups {
            let (a, b) = (&documents[kept[d.index]], &documents[kept[d.of]]);
            report.sources.get_mut(&a.source).expect("counted").duplicates += 1;
            report.duplicates.push(DuplicateReport {
                doc_id: a.id.clone(),
                duplicate_of: b.id.clone(),
                similarity: d.similarity,
                exact: d.exact,
            });
        }
        kept = kept.into_iter().enumerate().filter(|(k, _)| !dropped.contains(k)).map(|(_, i)| i).collect();
    }
    report.timing.dedupe_s = t.elapsed().as_secs_f64();
    for &i in &kept {
        report.sources.get_mut(&documents[i].source).expect("counted").kept += 1;
    }

    // Plan: examples per document (upsampling longer ones), one job per example.
    let n = cfg.examples.unwrap_or(kept.len());
    let counts = plan_counts(&kept.iter().map(|&i| tokens[i]).collect::<Vec<_>>(), n, cfg.upsample);
    let mut jobs = Vec::new();
    for (&i, &c) in kept.iter().zip(&counts) {
        report.sources.get_mut(&documents[i].source).expect("counted").jobs += c;
        for k in 0..c {
            jobs.push(Job { id: format!("{}#{k}", documents[i].id), doc: i });
        }
    }
    report.jobs_planned = jobs.len();

    if cfg.dry_run {
        report.output = output_report(&read_output(&cfg.out).unwrap_or_default());
        report.timing.total_s = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    let client = client.context("an endpoint is needed (or pass --dry-run)")?;

    // Resume: finished jobs are skipped; anything else starts over.
    if cfg.overwrite && !cfg.resume {
        std::fs::write(&cfg.out, b"").with_context(|| format!("truncating {}", cfg.out.display()))?;
    }
    crate::util::cut_torn_tail(&cfg.out)?;
    let done: HashSet<String> =
        read_output(&cfg.out)?.iter().filter_map(|v| v["meta"]["job"].as_str().map(String::from)).collect();
    let todo: Vec<&Job> = jobs.iter().filter(|j| !done.contains(&j.id)).collect();
    report.jobs_already_done = jobs.len() - todo.len();
    report.jobs_run = todo.len();
    if let Some(dir) = cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::util::write_atomic(
        &sidecar(&cfg.out, "prompts.toml"),
        toml::to_string(&cfg.prompts).expect("prompts serialize").as_bytes(),
    )?;

    // Generate.
    let t = Instant::now();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.out)
        .with_context(|| format!("opening {}", cfg.out.display()))?;
    let mut file = file;
    let bar = if cfg.progress {
        indicatif::ProgressBar::new(todo.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} jobs · {msg} · {elapsed} (ETA {eta})")
            .expect("valid template"),
    );
    let rep = &mut report;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result: anyhow::Result<()> = rt.block_on(async {
        let mut stream = futures_util::stream::iter(todo.iter().map(|job| {
            let d = &documents[job.doc];
            async move {
                let outcome =
                    run_job(client, &cfg.prompts, &cfg.generation, &job.id, &d.id, &d.source, &d.text)
                        .await?;
                anyhow::Ok((job, outcome))
            }
        }))
        .buffer_unordered(cfg.concurrency.max(1));
        while let Some(r) = stream.next().await {
            let (job, outcome) = r?;
            match outcome {
                Outcome::Built(mut b) => {
                    rep.requests += b.requests as u64;
                    rep.prompt_tokens += b.prompt_tokens;
                    rep.completion_tokens += b.completion_tokens;
                    let user = b.record["messages"][0]["content"].as_str().unwrap_or("").to_string();
                    let answer = b.record["messages"][1]["content"].as_str().unwrap_or("").to_string();
                    let question = b.record["meta"]["question"].as_str().unwrap_or("").to_string();
                    // The example must render with the target chat template (what `train` does
                    // first). Token counts reuse the document's: the question and answer are
                    // counted on their own, so no 100k-token text is tokenized twice.
                    let example = Example {
                        messages: vec![Message::new(Role::User, user), Message::new(Role::Assistant, answer)],
                        source: None,
                    };
                    let counted = tokio::task::block_in_place(|| -> Result<(usize, usize), String> {
                        tokenizer.render(&example.messages, false).map_err(|e| e.to_string())?;
                        let q = tokenizer.count(&question).map_err(|e| e.to_string())?;
                        let a = tokenizer.count(&example.messages[1].content).map_err(|e| e.to_string())?;
                        Ok((q, a))
                    });
                    let (q_tokens, a_tokens) = match counted {
                        Ok(c) => c,
                        Err(detail) => {
                            *rep.skipped.entry("template_error".into()).or_default() += 1;
                            rep.skipped_jobs.push(SkippedJob {
                                job: job.id.clone(),
                                reason: "template_error",
                                detail,
                            });
                            bar.inc(1);
                            continue;
                        }
                    };
                    let m = &mut b.record["meta"];
                    m["doc_tokens"] = tokens[job.doc].into();
                    m["answer_tokens"] = a_tokens.into();
                    m["tokens"] = (tokens[job.doc] + q_tokens + a_tokens).into();
                    let mut line = serde_json::to_string(&b.record).expect("record serializes");
                    line.push('\n');
                    file.write_all(line.as_bytes())
                        .with_context(|| format!("writing {}", cfg.out.display()))?;
                    file.sync_data()?;
                    rep.written += 1;
                }
                Outcome::Skipped(skip, pt, ct) => {
                    rep.prompt_tokens += pt;
                    rep.completion_tokens += ct;
                    *rep.skipped.entry(skip.reason.into()).or_default() += 1;
                    rep.skipped_jobs.push(SkippedJob {
                        job: job.id.clone(),
                        reason: skip.reason,
                        detail: skip.detail,
                    });
                }
            }
            bar.inc(1);
            bar.set_message(format!(
                "{} written, {} skipped · {} prompt + {} completion tokens",
                rep.written,
                rep.skipped_jobs.len(),
                rep.prompt_tokens,
                rep.completion_tokens
            ));
        }
        Ok(())
    });
    bar.finish_and_clear();
    result?;
    report.timing.generate_s = t.elapsed().as_secs_f64();
    let finished = report.written + report.skipped_jobs.len();
    report.jobs_per_s = finished as f64 / report.timing.generate_s.max(1e-9);
    report.output = output_report(&read_output(&cfg.out)?);
    report.timing.total_s = t0.elapsed().as_secs_f64();
    report.documents_per_s = finished as f64 / report.timing.total_s.max(1e-9);
    crate::util::write_atomic(
        &sidecar(&cfg.out, "report.json"),
        serde_json::to_string_pretty(&report).expect("report serializes").as_bytes(),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_are_exact_deterministic_and_upsample_long_documents() {
        let tokens = [8_000, 16_000, 32_000, 64_000];
        assert_eq!(plan_counts(&tokens, 4, 0.0), [1, 1, 1, 1]);
        // ∝ length: 1 : 2 : 4 : 8 of 15.
        assert_eq!(plan_counts(&tokens, 15, 1.0), [1, 2, 4, 8]);
        let c = plan_counts(&tokens, 10, 1.0);
        assert_eq!(c.iter().sum::<usize>(), 10);
        assert_eq!(c, plan_counts(&tokens, 10, 1.0));
        assert!(c.windows(2).all(|w| w[0] <= w[1]), "{c:?}");
        // Fewer examples than documents: the longest get them.
        assert_eq!(plan_counts(&tokens, 2, 1.0), [0, 0, 1, 1]);
        assert!(plan_counts(&[], 5, 1.0).is_empty());
    }

    #[test]
    fn sidecars_and_torn_tails() {
        assert_eq!(sidecar(Path::new("d/long.jsonl"), "report.json"), Path::new("d/long.report.json"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("o.jsonl");
        std::fs::write(&p, "{\"meta\":{\"job\":\"a#0\"}}\n{\"meta\":{\"jo").unwrap();
        crate::util::cut_torn_tail(&p).unwrap();
        assert_eq!(read_output(&p).unwrap().len(), 1);
        std::fs::write(&p, "{\"messages\":[]}\n").unwrap();
        assert!(read_output(&p).unwrap_err().to_string().contains("o.jsonl:1: field meta.job missing"));
    }

    proptest::proptest! {
        /// The plan always has exactly `n` jobs, and with upsampling a longer document never gets
        /// fewer examples than a shorter one.
        #[test]
        fn plans_are_exact_and_monotone(
            tokens in proptest::collection::vec(1usize..100_000, 1..60),
            n in 0usize..300,
            alpha in 0.0f64..2.0,
        ) {
            let c = plan_counts(&tokens, n, alpha);
            proptest::prop_assert_eq!(c.iter().sum::<usize>(), n);
            for i in 0..tokens.len() {
                for j in 0..tokens.len() {
                    if tokens[i] > tokens[j] {
                        proptest::prop_assert!(c[i] >= c[j], "{:?} {:?}", tokens, c);
                    }
                }
            }
        }
    }
}
