//! Self-Instruct over long documents (LongAlign §3.1): for one document, pick a task type, ask the
//! generator LLM for a numbered list of questions of that type, pick one, ask for its answer with
//! the document, and return the training example.
//!
//! ```text
//! document ─▶ task type (weighted, seeded) ─▶ "propose 5 questions" ─▶ parse list ─▶ pick one
//!          ─▶ user: document + question ─▶ answer ─▶ {"messages":[user, assistant], "meta":{…}}
//! ```
//!
//! Everything random is drawn from a generator seeded by (seed, job id), so a document gets the
//! same task type and question whether it runs first or last, alone or with 64 others, and after a
//! resume.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use super::questions::parse_questions;
use crate::llm::{ChatMessage, ChatRequest, Client, ClientError};
use crate::util::rng::SplitMix64;

/// The built-in prompt file (versioned; see its header).
pub const BUILTIN_PROMPTS: &str = include_str!("self_instruct.toml");

/// One task type: what kind of questions to ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskType {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub instruction: String,
}

fn one() -> f64 {
    1.0
}
fn five() -> usize {
    5
}

/// The prompt set: templates and task types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompts {
    pub version: String,
    #[serde(default = "five")]
    pub questions: usize,
    pub question_template: String,
    pub user_template: String,
    /// Optional system prompt for the answer request (not part of the training example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_system: Option<String>,
    #[serde(rename = "task")]
    pub tasks: Vec<TaskType>,
}

impl Prompts {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_PROMPTS, "built-in prompts").expect("built-in prompts are valid")
    }

    /// Parses and checks a prompt file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let p: Prompts = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        p.check().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(p)
    }

    fn check(&self) -> Result<(), String> {
        if self.tasks.is_empty() {
            return Err("no [[task]] tables".into());
        }
        if self.questions == 0 {
            return Err("field questions: must be at least 1".into());
        }
        for (field, t, need) in [
            ("question_template", &self.question_template, ["{document}", "{instruction}"]),
            ("user_template", &self.user_template, ["{document}", "{question}"]),
        ] {
            for n in need {
                if !t.contains(n) {
                    return Err(format!("field {field}: must contain {n}"));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tasks {
            if t.name.trim().is_empty() || !seen.insert(t.name.as_str()) {
                return Err(format!("task {:?}: names must be non-empty and unique", t.name));
            }
            if !(t.weight >= 0.0 && t.weight.is_finite()) {
                return Err(format!("task {:?}: field weight must be a number ≥ 0", t.name));
            }
        }
        if self.tasks.iter().all(|t| t.weight == 0.0) {
            return Err("every task has weight 0".into());
        }
        Ok(())
    }

    /// Applies `name=weight,…` overrides (`--task-weights`); unnamed tasks keep their weight.
    /// The prompt file at `path` (the built-in one without), its task weights overridden by
    /// `weights` (`general=2,summary=1,…`) when given.
    pub fn load(path: Option<&std::path::Path>, weights: Option<&str>) -> anyhow::Result<Self> {
        let mut p = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                Self::parse(&text, &p.display().to_string())?
            }
            None => Self::builtin(),
        };
        if let Some(w) = weights {
            p.set_weights(w)?;
        }
        Ok(p)
    }

    pub fn set_weights(&mut self, spec: &str) -> anyhow::Result<()> {
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--task-weights: {part:?} is not NAME=WEIGHT"))?;
            let w: f64 =
                w.trim().parse().map_err(|_| anyhow::anyhow!("--task-weights: {part:?}: bad weight"))?;
            let names: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
            let names = names.join(", ");
            let t = self.tasks.iter_mut().find(|t| t.name == name.trim()).ok_or_else(|| {
                anyhow::anyhow!("--task-weights: no task named {:?} (tasks: {names})", name.trim())
            })?;
            t.weight = w;
        }
        self.check().map_err(|e| anyhow::anyhow!("--task-weights: {e}"))
    }

    /// A short fingerprint of the exact prompts (recorded with every example).
    pub fn sha(&self) -> String {
        use sha1::Digest;
        let canonical = toml::to_string(self).expect("prompts serialize");
        let d = sha1::Sha1::digest(canonical.as_bytes());
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// Task index for a job, drawn by weight.
    fn pick_task(&self, g: &mut SplitMix64) -> usize {
        let total: f64 = self.tasks.iter().map(|t| t.weight).sum();
        let mut x = g.unit_f64() * total;
        for (i, t) in self.tasks.iter().enumerate() {
            if x < t.weight {
                return i;
            }
            x -= t.weight;
        }
        self.tasks.iter().rposition(|t| t.weight > 0.0).unwrap_or(0)
    }
}

/// Fills `{name}` placeholders in one pass over the template, so braces inside the inserted text
/// (a document full of code, say) are never themselves replaced.
pub fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + vars.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match vars.iter().find(|(k, _)| tail[1..].starts_with(k) && tail[1 + k.len()..].starts_with('}')) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why a job produced no example. Counted by name in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skip {
    pub reason: &'static str,
    pub detail: String,
}

pub const SKIP_MALFORMED_QUESTIONS: &str = "malformed_questions";
pub const SKIP_EMPTY_ANSWER: &str = "empty_answer";
pub const SKIP_TRUNCATED_ANSWER: &str = "truncated_answer";
pub const SKIP_ENDPOINT_ERROR: &str = "endpoint_error";
pub const SKIP_REJECTED: &str = "rejected_request";

/// Generation settings for one job.
#[derive(Debug, Clone)]
pub struct GenSettings {
    pub temperature: f32,
    pub max_question_tokens: usize,
    pub max_answer_tokens: usize,
    /// Attempts per request when the reply is unusable (no questions, empty answer).
    pub tries: u32,
    pub seed: u64,
}

/// A finished example and what it cost.
#[derive(Debug, Clone)]
pub struct Built {
    /// `{"messages": [...], "meta": {...}}` without the token counts (the caller measures them).
    pub record: serde_json::Value,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u32,
}

/// How a job ended: an example, a counted skip, or an error that must stop the whole run (the
/// key is wrong, the model does not exist: every other job would fail the same way).
pub enum Outcome {
    Built(Built),
    Skipped(Skip, u64, u64),
}

/// 64-bit FNV-1a, the job id's stream number.
fn hash_id(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Runs one job: questions, then the answer.
pub async fn run_job(
    client: &Client,
    prompts: &Prompts,
    settings: &GenSettings,
    job_id: &str,
    doc_id: &str,
    source: &str,
    text: &str,
) -> anyhow::Result<Outcome> {
    // Three independent streams: the task type, the question picked, and the request seeds. The
    // pick must not depend on how many retries a flaky endpoint needed.
    let h = hash_id(job_id);
    let mut g = SplitMix64::derive(settings.seed, h);
    let mut g_pick = SplitMix64::derive(settings.seed, h ^ 0x9e37_79b9_7f4a_7c15);
    let mut g_seed = SplitMix64::derive(settings.seed, h ^ 0x6a09_e667_f3bc_c909);
    let task = &prompts.tasks[prompts.pick_task(&mut g)];
    let n = prompts.questions.to_string();
    let ask = fill(
        &prompts.question_template,
        &[("document", text), ("instruction", &task.instruction), ("n", &n)],
    );
    let (mut pt, mut ct, mut requests) = (0u64, 0u64, 0u32);

    // Sends one request; endpoint failures become skips, or stop the run when retrying is useless.
    macro_rules! send {
        ($req:expr) => {{
            requests += 1;
            match client.chat(&$req).await {
                Ok(r) => {
                    pt += r.prompt_tokens;
                    ct += r.completion_tokens;
                    r
                }
                Err(ClientError::Rejected { status, body, url }) if matches!(status, 401 | 403 | 404) => {
                    anyhow::bail!("{url}: HTTP {status}: {body} (check --endpoint, --model and the API key)")
                }
                Err(ClientError::Rejected { status, body, .. }) => {
                    let detail = format!("HTTP {status}: {body}");
                    return Ok(Outcome::Skipped(Skip { reason: SKIP_REJECTED, detail }, pt, ct));
                }
                Err(e) => {
                    let detail = e.to_string();
                    return Ok(Outcome::Skipped(Skip { reason: SKIP_ENDPOINT_ERROR, detail }, pt, ct));
                }
            }
        }};
    }

    let mut questions = Vec::new();
    let mut last = String::new();
    for attempt in 0..settings.tries.max(1) {
        let mut req = ChatRequest::new(vec![ChatMessage::new("user", ask.as_str())], settings.temperature);
        req.max_tokens = Some(settings.max_question_tokens);
        // A new seed per attempt: a seeded server would otherwise repeat the same bad reply.
        req.seed = Some(g_seed.next_u64() ^ attempt as u64);
        let reply = send!(req);
        questions = parse_questions(&reply.content);
        if !questions.is_empty() {
            break;
        }
        last = reply.content;
    }
    if questions.is_empty() {
        let detail = format!("no questions in {} replies; last: {:?}", settings.tries.max(1), excerpt(&last));
        return Ok(Outcome::Skipped(Skip { reason: SKIP_MALFORMED_QUESTIONS, detail }, pt, ct));
    }
    let qi = g_pick.below(questions.len() as u64) as usize;
    let question = &questions[qi];
    let user = fill(&prompts.user_template, &[("document", text), ("question", question)]);

    let mut answer = None;
    let mut truncated = false;
    for attempt in 0..settings.tries.max(1) {
        let mut messages = Vec::new();
        if let Some(s) = &prompts.answer_system {
            messages.push(ChatMessage::new("system", s.as_str()));
        }
        messages.push(ChatMessage::new("user", user.as_str()));
        let mut req = ChatRequest::new(messages, settings.temperature);
        req.max_tokens = Some(settings.max_answer_tokens);
        req.seed = Some(g_seed.next_u64() ^ attempt as u64);
        let reply = send!(req);
        if reply.content.trim().is_empty() {
            continue;
        }
        // A cut-off answer teaches the model to stop mid-sentence: retrying rarely helps (the same
        // limit applies), so it is skipped and counted; raise --max-answer-tokens.
        if reply.finish_reason.as_deref() == Some("length") {
            truncated = true;
            break;
        }
        answer = Some(reply.content.trim().to_string());
        break;
    }
    let Some(answer) = answer else {
        let skip = if truncated {
            Skip {
                reason: SKIP_TRUNCATED_ANSWER,
                detail: format!(
                    "finish_reason \"length\" at --max-answer-tokens {}",
                    settings.max_answer_tokens
                ),
            }
        } else {
            Skip {
                reason: SKIP_EMPTY_ANSWER,
                detail: format!("empty answer in {} replies", settings.tries.max(1)),
            }
        };
        return Ok(Outcome::Skipped(skip, pt, ct));
    };
    let record = json!({
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ],
        "meta": {
            "source": source,
            "task_type": task.name,
            "doc_id": doc_id,
            "job": job_id,
            "question": question,
            "prompt_version": prompts.version,
            "prompt_sha": prompts.sha(),
        },
    });
    Ok(Outcome::Built(Built { record, prompt_tokens: pt, completion_tokens: ct, requests }))
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prompts_parse_and_have_the_four_task_types() {
        let p = Prompts::builtin();
        let names: Vec<&str> = p.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["general", "summary", "reasoning", "extraction"]);
        assert_eq!(p.questions, 5);
        assert_eq!(p.sha().len(), 12);
        let ask = fill(&p.question_template, &[("document", "DOC {n}"), ("instruction", "INS"), ("n", "5")]);
        // The document's own "{n}" is not a placeholder.
        assert!(ask.starts_with("DOC {n}\n\nINS\n\nWrite 5 questions"), "{ask}");
        assert!(!ask.contains("{instruction}") && !ask["DOC {n}".len()..].contains("{n}"));
    }

    #[test]
    fn prompt_files_are_checked_and_weights_overridden() {
        let bad = BUILTIN_PROMPTS.replace("{question}", "{q}");
        let e = Prompts::parse(&bad, "my.toml").unwrap_err().to_string();
        assert!(e.contains("my.toml") && e.contains("user_template") && e.contains("{question}"), "{e}");
        let e = Prompts::parse("version = 1", "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml"), "{e}");
        let mut p = Prompts::builtin();
        let sha = p.sha();
        p.set_weights("summary=3, extraction=0").unwrap();
        assert_eq!(p.tasks.iter().map(|t| t.weight).collect::<Vec<_>>(), [1.0, 3.0, 1.0, 0.0]);
        assert_ne!(p.sha(), sha, "weights are part of the fingerprint");
        assert!(p.set_weights("legal=1").unwrap_err().to_string().contains("general, summary"));
        assert!(
            p.set_weights("general=0,summary=0,reasoning=0").unwrap_err().to_string().contains("weight 0")
        );
        // Weighted draws follow the weights and never pick a zero-weight task.
        let mut p = Prompts::builtin();
        p.set_weights("general=1,summary=3,reasoning=0,extraction=0").unwrap();
        let mut g = SplitMix64::new(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[p.pick_task(&mut g)] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0);
        assert!((counts[1] as f64 / 4000.0 - 0.75).abs() < 0.03, "{counts:?}");
    }
}
