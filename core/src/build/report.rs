//! What a `build-data` run reports (`OUT.report.json`, `--json`, the printed summary), and the
//! statistics of the output file it is computed from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use super::documents::Skipped;
use super::sidecar;
use crate::util::table::Table;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    pub documents: usize,
    pub too_short: usize,
    pub too_long: usize,
    pub duplicates: usize,
    pub kept: usize,
    pub jobs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateReport {
    pub doc_id: String,
    pub duplicate_of: String,
    pub similarity: f64,
    pub exact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedJob {
    pub job: String,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramBin {
    pub from: usize,
    pub to: Option<usize>,
    pub examples: usize,
}

/// What the output file holds (all of it, including examples from earlier runs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputReport {
    pub examples: usize,
    /// source → task type → examples.
    pub by_source_task: BTreeMap<String, BTreeMap<String, usize>>,
    /// Example lengths: `meta.tokens` = document + question + answer tokens (the chat template adds
    /// a handful more).
    pub length_histogram: Vec<HistogramBin>,
    pub mean_tokens: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TimingReport {
    pub read_s: f64,
    pub tokenize_s: f64,
    pub dedupe_s: f64,
    pub generate_s: f64,
    pub total_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub prompt_version: String,
    pub prompt_sha: String,
    pub files: usize,
    pub ignored_files: usize,
    pub documents: usize,
    pub document_tokens: u64,
    pub unreadable: Vec<Skipped>,
    pub sources: BTreeMap<String, SourceReport>,
    pub duplicates: Vec<DuplicateReport>,
    pub jobs_planned: usize,
    pub jobs_already_done: usize,
    pub jobs_run: usize,
    pub written: usize,
    pub skipped: BTreeMap<String, usize>,
    pub skipped_jobs: Vec<SkippedJob>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Jobs finished (written or skipped) per second of the generation stage.
    pub jobs_per_s: f64,
    /// Documents through the whole run (read → write) per second.
    pub documents_per_s: f64,
    pub timing: TimingReport,
    pub output: OutputReport,
    pub dry_run: bool,
}

/// The finished records of an output file (torn last line already cut).
pub(super) fn read_output(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!("{}:{}: invalid JSON in the output being resumed", path.display(), i + 1)
        })?;
        if v["meta"]["job"].as_str().is_none() {
            bail!(
                "{}:{}: field meta.job missing: not a build-data output (choose another --out)",
                path.display(),
                i + 1
            );
        }
        out.push(v);
    }
    Ok(out)
}

pub(super) fn output_report(records: &[serde_json::Value]) -> OutputReport {
    const EDGES: [usize; 8] = [0, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000];
    let mut r = OutputReport {
        examples: records.len(),
        length_histogram: EDGES
            .iter()
            .enumerate()
            .map(|(i, &from)| HistogramBin { from, to: EDGES.get(i + 1).copied(), examples: 0 })
            .collect(),
        ..Default::default()
    };
    let mut sum = 0.0;
    for v in records {
        let m = &v["meta"];
        let source = m["source"].as_str().unwrap_or("?").to_string();
        let task = m["task_type"].as_str().unwrap_or("?").to_string();
        *r.by_source_task.entry(source).or_default().entry(task).or_default() += 1;
        let t = m["tokens"].as_u64().unwrap_or(0) as usize;
        sum += t as f64;
        let bin = EDGES.iter().rposition(|&e| t >= e).unwrap_or(0);
        r.length_histogram[bin].examples += 1;
    }
    r.mean_tokens = if records.is_empty() { 0.0 } else { sum / records.len() as f64 };
    r
}

impl BuildReport {
    /// The human-readable summary `core-cli build-data` prints.
    pub fn summary(&self) -> String {
        let r = self;
        let mut s = String::new();
        s += &format!(
            "read {} documents ({} tokens) from {} files; {} unreadable records, {} other files ignored\n",
            r.documents,
            r.document_tokens,
            r.files,
            r.unreadable.len(),
            r.ignored_files
        );
        for u in r.unreadable.iter().take(10) {
            s += &format!("  skipped {}: {}\n", u.location, u.reason);
        }
        if r.unreadable.len() > 10 {
            s += &format!("  … and {} more (see the report)\n", r.unreadable.len() - 10);
        }
        let mut t = Table::new(
            ["source", "documents", "too short", "too long", "duplicates", "kept", "jobs"]
                .map(String::from)
                .to_vec(),
        );
        for (name, x) in &r.sources {
            t.row(vec![
                name.clone(),
                x.documents.to_string(),
                x.too_short.to_string(),
                x.too_long.to_string(),
                x.duplicates.to_string(),
                x.kept.to_string(),
                x.jobs.to_string(),
            ]);
        }
        s += &t.render();
        for d in r.duplicates.iter().take(10) {
            let how = if d.exact { "exact".to_string() } else { format!("similarity {:.2}", d.similarity) };
            s += &format!("  duplicate: {} of {} ({how})\n", d.doc_id, d.duplicate_of);
        }
        if r.dry_run {
            s += &format!("dry run: {} jobs planned, nothing sent\n", r.jobs_planned);
            return s;
        }
        s += &format!(
            "jobs: {} planned, {} already done, {} run → {} written, {} skipped{}\n",
            r.jobs_planned,
            r.jobs_already_done,
            r.jobs_run,
            r.written,
            r.skipped_jobs.len(),
            if r.skipped.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    r.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
                )
            }
        );
        s += &format!(
            "spent {} requests, {} prompt + {} completion tokens; {:.1} jobs/s; {:.1} s in all\n",
            r.requests, r.prompt_tokens, r.completion_tokens, r.jobs_per_s, r.timing.total_s
        );
        let o = &r.output;
        let tasks: std::collections::BTreeSet<&String> =
            o.by_source_task.values().flat_map(|m| m.keys()).collect();
        let mut header = vec!["source".to_string()];
        header.extend(tasks.iter().map(|t| t.to_string()));
        header.push("total".into());
        let mut t = Table::new(header);
        for (src, m) in &o.by_source_task {
            let mut row = vec![src.clone()];
            row.extend(tasks.iter().map(|t| m.get(*t).copied().unwrap_or(0).to_string()));
            row.push(m.values().sum::<usize>().to_string());
            t.row(row);
        }
        s += &format!(
            "{} now holds {} examples (mean {:.0} tokens):\n",
            r.out.display(),
            o.examples,
            o.mean_tokens
        );
        s += &t.render();
        let max = o.length_histogram.iter().map(|b| b.examples).max().unwrap_or(0).max(1);
        for b in &o.length_histogram {
            let range = match b.to {
                Some(to) => format!("{}k–{}k", b.from / 1000, to / 1000),
                None => format!("{}k+", b.from / 1000),
            };
            s += &format!("  {range:>9} {:>6} {}\n", b.examples, "█".repeat((b.examples * 40).div_ceil(max)));
        }
        s += &format!("report: {}\n", sidecar(&r.out, "report.json").display());
        s
    }
}
