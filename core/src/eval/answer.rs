//! Who answers an evaluation's questions — a local model or an OpenAI-compatible endpoint, behind
//! one [`Answerer`] — and the LLM judge's rating loop, shared by LongBench-Chat and the needle test.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;

use crate::backend::Backend;
use crate::data::{Message, Role};
use crate::infer::{ChatModel, ChatParams};
use crate::llm::{ChatMessage, ChatRequest, Client};

/// What answers the questions.
#[derive(Clone)]
pub enum Answerer {
    /// A Hugging Face model directory, run here on `backend` (one question at a time).
    /// A local model directory, with a PEFT adapter folded in when given.
    Local { model: PathBuf, adapter: Option<PathBuf>, backend: Backend },
    /// An OpenAI-compatible endpoint (questions in flight at once, up to its concurrency).
    Endpoint(Client),
}

/// One question to answer.
#[derive(Debug, Clone)]
pub struct Question {
    pub id: u64,
    /// The user message.
    pub prompt: String,
    pub max_new_tokens: usize,
    pub temperature: f32,
    /// Sampling seed (sent to endpoints only when set; local models use 0 when unset).
    pub seed: Option<u64>,
    /// Local models only: a prompt longer than this many tokens loses its middle (LongBench-Chat's
    /// truncation); endpoints get the whole prompt.
    pub truncate_to: Option<usize>,
}

/// An answer and what it cost.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Answerer {
    /// Answers every question, handing each result to `done` as it arrives. A local model's failure
    /// ends the run (it would fail again on the next question); an endpoint's failed request is
    /// handed to `done` as an error (the caller leaves it uncached, so a later run retries it).
    pub fn answer_all(
        &self,
        questions: Vec<Question>,
        mut done: impl FnMut(u64, anyhow::Result<Answer>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if questions.is_empty() {
            return Ok(());
        }
        match self {
            Self::Local { model, adapter, backend } => crate::with_backend!(*backend, |B, device| {
                let m = ChatModel::<<B as AutodiffBackend>::InnerBackend>::load(
                    model,
                    adapter.as_deref(),
                    None,
                    None,
                    &device,
                )?
                .for_backend(*backend);
                for q in questions {
                    let prompt = match q.truncate_to {
                        Some(n) => m.middle_truncated(&q.prompt, n)?,
                        None => q.prompt,
                    };
                    let params = ChatParams {
                        max_new_tokens: q.max_new_tokens,
                        temperature: q.temperature,
                        top_p: 1.0,
                        seed: q.seed.unwrap_or(0),
                        stop: Vec::new(),
                        max_prompt_tokens: None,
                    };
                    let out = m.chat(&[Message::new(Role::User, prompt)], &params, |_| true)?;
                    let answer = Answer {
                        text: out.text,
                        prompt_tokens: out.prompt_tokens as u64,
                        completion_tokens: out.completion_tokens as u64,
                    };
                    done(q.id, Ok(answer))?;
                }
                Ok(())
            }),
            Self::Endpoint(client) => runtime()?.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for q in questions {
                    let client = client.clone();
                    let mut req = ChatRequest::new(vec![ChatMessage::new("user", q.prompt)], q.temperature);
                    req.max_tokens = Some(q.max_new_tokens);
                    req.seed = q.seed;
                    tasks.spawn(async move { (q.id, client.chat(&req).await) });
                }
                while let Some(finished) = tasks.join_next().await {
                    let (id, reply) = finished?;
                    let answer = reply
                        .map(|r| Answer {
                            text: r.content,
                            prompt_tokens: r.prompt_tokens,
                            completion_tokens: r.completion_tokens,
                        })
                        .map_err(anyhow::Error::from);
                    done(id, answer)?;
                }
                Ok(())
            }),
        }
    }
}

/// The judge's verdict on one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rating {
    /// The number in the last `[[…]]` of the judge's reply, if any.
    pub score: Option<f64>,
    /// The judge's last reply.
    pub reply: String,
    /// Requests made.
    pub tries: u32,
    /// Tokens spent, prompt and completion, over all tries.
    pub tokens: u64,
    /// Why there is no score: the last reply had no rating, or the request failed.
    pub error: Option<String>,
}

/// Rates every `(id, user prompt)` with the judge (system prompt `system`, temperature 0), each
/// asked up to `tries` times until its reply holds a `[[rating]]`; a failed request is final (the
/// client has already retried transport errors). Results come in completion order.
pub fn rate_all(
    judge: &Client,
    system: &str,
    prompts: Vec<(u64, String)>,
    tries: u32,
) -> anyhow::Result<Vec<(u64, Rating)>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let tries = tries.max(1);
    runtime()?.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, prompt) in prompts {
            let judge = judge.clone();
            let req = ChatRequest::new(
                vec![ChatMessage::new("system", system), ChatMessage::new("user", prompt)],
                0.0,
            );
            tasks.spawn(async move {
                let mut r = Rating { score: None, reply: String::new(), tries: 0, tokens: 0, error: None };
                while r.tries < tries {
                    r.tries += 1;
                    match judge.chat(&req).await {
                        Ok(reply) => {
                            r.tokens += reply.prompt_tokens + reply.completion_tokens;
                            r.score = super::longbench_chat::parse_rating(&reply.content);
                            r.reply = reply.content;
                            if r.score.is_some() {
                                r.error = None;
                                break;
                            }
                            r.error = Some("the judge's reply has no [[rating]]".into());
                        }
                        Err(e) => {
                            r.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                (id, r)
            });
        }
        let mut out = Vec::new();
        while let Some(finished) = tasks.join_next().await {
            out.push(finished?);
        }
        Ok(out)
    })
}

/// A small runtime for an evaluation's HTTP calls (the command line has no other).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}
