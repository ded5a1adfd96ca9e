//! LongBench-Chat as THUDM/LongAlign runs it: each answer is rated 1–10 by an LLM judge given the
//! question, the expert reference answer and three human-scored example answers (the few-shot
//! prompt `prompt_fs.txt`, nine `{}` slots); the rating is the first number inside the *last*
//! `[[…]]` of the judge's reply; the score is the mean rating.
//!
//! Everything that costs money or time is cached as it arrives (`predictions.jsonl`,
//! `judgements.jsonl` in the output folder), so an interrupted run resumes without paying twice.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::cache::Cache;
pub use runner::{LongBenchChatConfig, Outcome, OverlapItem, OverlapReport, run};

mod runner;

/// One LongBench-Chat question (`test_cases.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestCase {
    pub idx: u64,
    /// The long context followed by the question: what the model is asked.
    pub prompt: String,
    /// The question alone: what the judge is shown.
    pub query: String,
    /// The expert reference answer.
    pub answer: String,
}

/// Reads `test_cases.json` (a JSON list), naming the item and field of any problem.
pub fn read_test_cases(path: &Path) -> anyhow::Result<Vec<TestCase>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let list =
        v.as_array().with_context(|| format!("{}: expected a JSON list of test cases", path.display()))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = |k: &str| -> anyhow::Result<&Value> {
            item.get(k).with_context(|| format!("{}: item {i}: field {k}: missing", path.display()))
        };
        let text_field = |k: &str| -> anyhow::Result<String> {
            field(k)?
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{}: item {i}: field {k}: expected a string", path.display()))
        };
        let idx = field("idx")?.as_u64().filter(|&n| n >= 1).with_context(|| {
            format!("{}: item {i}: field idx: expected a positive integer", path.display())
        })?;
        out.push(TestCase {
            idx,
            prompt: text_field("prompt")?,
            query: text_field("query")?,
            answer: text_field("answer")?,
        });
    }
    Ok(out)
}

/// The three human-scored example answers of one question.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FewShot {
    pub answer: String,
    pub score: i64,
}

/// Reads `few_shots.json`: a list (question `idx` at position `idx − 1`) of lists of three
/// `{"answer", "score"}`.
pub fn read_few_shots(path: &Path) -> anyhow::Result<Vec<Vec<FewShot>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Vec<Vec<FewShot>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a list of lists of {{answer, score}}", path.display()))?;
    for (i, shots) in v.iter().enumerate() {
        if shots.len() != 3 {
            bail!("{}: item {i}: expected 3 example answers, found {}", path.display(), shots.len());
        }
    }
    Ok(v)
}

/// The judge prompt template: Python `str.format` text with positional `{}` slots.
#[derive(Debug, Clone)]
pub struct JudgeTemplate {
    /// Literal pieces around the slots (`{{`/`}}` already unescaped): slots + 1 of them.
    pieces: Vec<String>,
}

impl JudgeTemplate {
    /// Parses a template the way Python's `str.format` reads it; the official one has 9 slots.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut pieces = vec![String::new()];
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('{', Some('{')) | ('}', Some('}')) => {
                    chars.next();
                    pieces.last_mut().unwrap().push(c);
                }
                ('{', Some('}')) => {
                    chars.next();
                    pieces.push(String::new());
                }
                ('{', _) => bail!("judge template: only positional {{}} slots are supported"),
                ('}', _) => bail!("judge template: single '}}' (write '}}}}' for a literal brace)"),
                _ => pieces.last_mut().unwrap().push(c),
            }
        }
        if pieces.len() != 10 {
            bail!(
                "judge template: expected 9 {{}} slots (question, reference, 3 × answer and score, answer), found {}",
                pieces.len() - 1
            );
        }
        Ok(Self { pieces })
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| path.display().to_string())
    }

    /// Fills the slots in order: question, reference, (example answer, score) × 3, answer.
    pub fn fill(&self, query: &str, reference: &str, shots: &[FewShot], prediction: &str) -> String {
        let mut values: Vec<String> = vec![query.into(), reference.into()];
        for s in shots {
            values.push(s.answer.clone());
            values.push(s.score.to_string());
        }
        values.push(prediction.into());
        let mut out = self.pieces[0].clone();
        for (v, p) in values.iter().zip(&self.pieces[1..]) {
            out.push_str(v);
            out.push_str(p);
        }
        out
    }
}

/// The judge's system prompt in the official evaluation.
pub const JUDGE_SYSTEM: &str = "You're a good assistant at evaluating the quality of texts.";

/// How the official script stores a prediction (one per line): trimmed, newlines as spaces.
pub fn normalize_prediction(text: &str) -> String {
    text.trim().replace('\n', " ").trim().to_string()
}

/// The rating in a judge reply: the first number inside the last `[[…]]` (`None` if there is none).
pub fn parse_rating(reply: &str) -> Option<f64> {
    // The official regex is \[\[([^\]]+)\]\]: "[[" then one or more non-']' then "]]".
    let b = reply.as_bytes();
    let mut last: Option<&str> = None;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'[' && b[i + 1] == b'[' {
            let start = i + 2;
            let mut j = start;
            while j < b.len() && b[j] != b']' {
                j += 1;
            }
            if j > start && j + 1 < b.len() && b[j + 1] == b']' {
                last = Some(&reply[start..j]);
                i = j + 2;
                continue;
            }
        }
        i += 1;
    }
    first_number(last?)
}

/// The first `\d+\.\d+|\d+` in `s`.
fn first_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let start = b.iter().position(u8::is_ascii_digit)?;
    let mut end = start;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    if end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
        end += 1;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
    }
    s[start..end].parse().ok()
}

/// Whether a question is Chinese (LongBench-Chat reports English and Chinese separately).
pub fn is_chinese(text: &str) -> bool {
    text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// A cached answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    pub idx: u64,
    pub prediction: String,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// A cached judgement: a score, or the reason there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judgement {
    pub idx: u64,
    pub score: Option<f64>,
    /// The judge's last reply.
    pub analysis: String,
    pub tries: u32,
    pub tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    pub idx: u64,
    pub score: Option<f64>,
    pub chinese: bool,
    pub query: String,
    pub prediction: String,
    pub analysis: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Mean rating over scored items (1–10, the paper's scale).
    pub mean_score: Option<f64>,
    pub mean_score_en: Option<f64>,
    pub mean_score_zh: Option<f64>,
    pub scored: usize,
    pub failed: usize,
    pub judge_tokens: u64,
    pub prediction_tokens: u64,
    pub items: Vec<ItemReport>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub fn report(cases: &[TestCase], preds: &Cache<Prediction>, judged: &Cache<Judgement>) -> Report {
    let items: Vec<ItemReport> = cases
        .iter()
        .map(|c| {
            let j = judged.entries.get(&c.idx);
            ItemReport {
                idx: c.idx,
                score: j.and_then(|j| j.score),
                chinese: is_chinese(&c.query),
                query: c.query.clone(),
                prediction: preds.entries.get(&c.idx).map(|p| p.prediction.clone()).unwrap_or_default(),
                analysis: j.map(|j| j.analysis.clone()).unwrap_or_default(),
                error: match j {
                    Some(j) if j.score.is_none() => j.error.clone().or(Some("no rating".into())),
                    Some(_) => None,
                    None => Some("not judged".into()),
                },
            }
        })
        .collect();
    Report {
        mean_score: mean(items.iter().filter_map(|i| i.score)),
        mean_score_en: mean(items.iter().filter(|i| !i.chinese).filter_map(|i| i.score)),
        mean_score_zh: mean(items.iter().filter(|i| i.chinese).filter_map(|i| i.score)),
        scored: items.iter().filter(|i| i.score.is_some()).count(),
        failed: items.iter().filter(|i| i.score.is_none()).count(),
        judge_tokens: judged.entries.values().map(|j| j.tokens).sum(),
        prediction_tokens: preds.entries.values().map(|p| p.prompt_tokens + p.completion_tokens).sum(),
        items,
    }
}

fn excerpt(s: &str, n: usize) -> String {
    let one_line = s.replace(['\n', '|'], " ");
    match one_line.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// The report as Markdown.
pub fn markdown(r: &Report, title: &str) -> String {
    let f = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.2}"));
    let mut s = format!(
        "# LongBench-Chat: {title}\n\nMean score **{}** (1–10), English {}, Chinese {}; {} scored, {} failed; judge tokens {}, answer tokens {}.\n\n",
        f(r.mean_score),
        f(r.mean_score_en),
        f(r.mean_score_zh),
        r.scored,
        r.failed,
        r.judge_tokens,
        r.prediction_tokens
    );
    s.push_str("| idx | score | query | prediction | judge |\n|---|---|---|---|---|\n");
    for i in &r.items {
        let score = match (i.score, &i.error) {
            (Some(v), _) => format!("{v}"),
            (None, Some(e)) => format!("failed: {}", excerpt(e, 40)),
            (None, None) => "failed".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i.idx,
            score,
            excerpt(&i.query, 80),
            excerpt(&i.prediction, 120),
            excerpt(&i.analysis, 160)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rating_is_the_first_number_in_the_last_double_brackets() {
        assert_eq!(parse_rating("Rating: [[7]]"), Some(7.0));
        assert_eq!(parse_rating("[[3]] then revised: [[8]]."), Some(8.0));
        assert_eq!(parse_rating("[[rating: 6.5 of 10]]"), Some(6.5));
        assert_eq!(parse_rating("[[9]] and an empty [[]] at the end"), Some(9.0));
        assert_eq!(parse_rating("[[9]] then [[n/a]]"), None, "the last [[…]] has no number");
        assert_eq!(parse_rating("Rating: 7"), None);
        assert_eq!(parse_rating("[[7]"), None);
        assert_eq!(parse_rating("[[[5]]]"), Some(5.0));
    }

    #[test]
    fn template_fills_nine_slots_in_order_and_unescapes_braces() {
        let t = JudgeTemplate::parse("Q{}R{}A{}S{}A{}S{}A{}S{} {{x}} P{}").unwrap();
        let shots = vec![
            FewShot { answer: "a1".into(), score: 10 },
            FewShot { answer: "a2".into(), score: 4 },
            FewShot { answer: "a3".into(), score: 1 },
        ];
        assert_eq!(t.fill("q", "r", &shots, "p"), "QqRrAa1S10Aa2S4Aa3S1 {x} Pp");
        assert!(JudgeTemplate::parse("only {} {}").is_err());
        assert!(JudgeTemplate::parse("{0}{}{}{}{}{}{}{}{}").is_err());
    }

    #[test]
    fn predictions_are_stored_like_the_official_script() {
        assert_eq!(normalize_prediction("  line one\nline two\n\n"), "line one line two");
        assert!(is_chinese("这是什么？") && !is_chinese("What is this?"));
    }
}
