//! A data file read, validated and tokenized: what `stats`, `plan` and (later) `train` consume.

use std::collections::BTreeMap;
use std::path::Path;

use super::formats::{self, DataError, Format};
use super::{Example, ModelTokenizer, Tokenized};
use crate::plan::{Item, Overlong};

/// Conversations not prefix-stable under their template: the sequences the [`super::TurnPolicy`]
/// made of them, and the tokens those add to the conversations' own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyCount {
    pub conversations: usize,
    pub sequences: usize,
    pub extra_tokens: u64,
}

/// Examples of one file with their tokens. Example `i` is planner item `i`: one training
/// sequence. A conversation the template cannot render prefix-stably is, under
/// [`super::TurnPolicy::Split`], several (its prefixes ending at each assistant turn), all with
/// the conversation's line.
#[derive(Debug)]
pub struct TokenizedDataset {
    pub file: String,
    pub examples: Vec<Example>,
    /// 1-based line of each example in the file.
    pub lines: Vec<usize>,
    /// Conversations the template could not render prefix-stably, and what the policy made of them.
    pub by_policy: PolicyCount,
    pub tokens: Vec<Tokenized>,
    pub formats: BTreeMap<Format, usize>,
    /// Records skipped under `skip_invalid`: bad JSON/fields, or a template that refused them.
    pub skipped: Vec<DataError>,
}

impl TokenizedDataset {
    /// Reads and tokenizes `path`. Without `skip_invalid`, the first bad record is the error.
    pub fn load(
        path: &Path,
        format: Option<Format>,
        skip_invalid: bool,
        tok: &ModelTokenizer,
    ) -> Result<Self, DataError> {
        let report = formats::read_file(path, format, skip_invalid)?;
        Self::from_report(&path.display().to_string(), report, skip_invalid, tok)
    }

    /// Reads and tokenizes `path`, or the bundled sample (`datasets/sample/train.jsonl`, embedded in
    /// the binary) when there is none: what every command does without `--data`.
    pub fn load_or_sample(
        path: Option<&Path>,
        format: Option<Format>,
        skip_invalid: bool,
        tok: &ModelTokenizer,
    ) -> Result<Self, DataError> {
        match path {
            Some(p) => Self::load(p, format, skip_invalid, tok),
            None => Self::embedded("<embedded sample>", super::synth::TRAIN_JSONL, format, skip_invalid, tok),
        }
    }

    /// Reads and tokenizes JSON-lines text held in memory (the embedded sample and eval split),
    /// `name` labelling it in errors and reports.
    pub fn embedded(
        name: &str,
        text: &str,
        format: Option<Format>,
        skip_invalid: bool,
        tok: &ModelTokenizer,
    ) -> Result<Self, DataError> {
        let report = formats::read_str(name, text, format, skip_invalid)?;
        Self::from_report(name, report, skip_invalid, tok)
    }

    /// Tokenizes records already read (e.g. the embedded sample).
    pub fn from_report(
        file: &str,
        report: formats::ReadReport,
        skip_invalid: bool,
        tok: &ModelTokenizer,
    ) -> Result<Self, DataError> {
        let (lines, examples): (Vec<usize>, Vec<Example>) = report.examples.into_iter().unzip();
        let results = tok.sequences_all(&examples);
        let mut out = Self {
            file: file.to_string(),
            examples: Vec::with_capacity(examples.len()),
            lines: Vec::with_capacity(examples.len()),
            by_policy: PolicyCount::default(),
            tokens: Vec::with_capacity(examples.len()),
            formats: report.formats,
            skipped: report.skipped,
        };
        for ((line, _), res) in lines.into_iter().zip(examples).zip(results) {
            match res {
                Ok(s) => {
                    if s.by_policy {
                        let c = &mut out.by_policy;
                        c.conversations += 1;
                        c.sequences += s.seqs.len();
                        // Under `split` every sequence but the last repeats part of the last.
                        let total: u64 = s.seqs.iter().map(|(_, t)| t.len() as u64).sum();
                        c.extra_tokens += total - s.seqs.last().map_or(0, |(_, t)| t.len() as u64);
                    }
                    for (ex, t) in s.seqs {
                        out.lines.push(line);
                        out.examples.push(ex);
                        out.tokens.push(t);
                    }
                }
                Err(e) => {
                    let err = DataError {
                        file: file.to_string(),
                        line,
                        field: "messages".into(),
                        message: e.to_string(),
                    };
                    if !skip_invalid {
                        return Err(err);
                    }
                    out.skipped.push(err);
                }
            }
        }
        out.skipped.sort_by_key(|e| e.line);
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Planner items. Under `Truncate`, over-long sequences are cut here with their exact target
    /// mask (the planner alone could only guess where targets sit); the count is returned.
    pub fn items(&self, limit: Option<u32>, overlong: Overlong) -> (Vec<Item>, usize) {
        let mut truncated = 0;
        let items = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| match limit {
                Some(l) if t.len() > l as usize && overlong == Overlong::Truncate => {
                    truncated += 1;
                    let target = t.targets[..l as usize].iter().filter(|&&m| m).count() as u32;
                    Item { id, total: l, target }
                }
                _ => Item { id, total: t.len() as u32, target: t.target_count() as u32 },
            })
            .collect();
        (items, truncated)
    }
}
