//! Where a conversation's loss targets are, and what to train when the template cannot say.
//!
//! Three ways, in this order:
//!
//! 1. **`{% generation %}` blocks** (the template marks its assistant output,
//!    [`super::generation`]): the targets are the tokens overlapping the blocks of the full
//!    rendering, as transformers' `return_assistant_tokens_mask`.
//! 2. **The prefix rule**: targets of assistant turn k are `render(messages[..=k])` minus
//!    `render(messages[..k], add_generation_prompt=true)`: the answer plus whatever closes the turn
//!    (`<|im_end|>\n`, `<|eot_id|>`), so the model learns to stop. It needs each of those renders
//!    to be a prefix of the whole one.
//! 3. **Not prefix-stable** (Qwen3 and the R1 distills strip earlier turns' reasoning, Mistral v3
//!    moves the system prompt into the last user turn): the [`TurnPolicy`] decides.
//!
//! ```text
//!   Qwen3, [user₁, assistant₁, user₂, assistant₂]:
//!     whole rendering:  …assistant\n{a₁}<|im_end|>…assistant\n<think>\n\n</think>\n\n{a₂}<|im_end|>
//!     a₁ as last turn:  …assistant\n<think>\n\n</think>\n\n{a₁}<|im_end|>       ≠ a prefix of the above
//!   split:  [user₁, assistant₁] → targets a₁ (as last turn)   +   the whole → targets a₂
//!   last:   the whole → targets a₂ only
//! ```

use std::str::FromStr;

use super::tokenize::{ModelTokenizer, Tokenized, TokenizerError};
use super::{Example, Message, Role};

/// What to train in a conversation whose template is not prefix-stable. Templates with
/// `{% generation %}` blocks never need one: their blocks are the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnPolicy {
    /// One sequence per assistant turn: the conversation up to that turn, rendered with it as the
    /// last turn (as the model sees it when answering), only that turn trained. Every answer is
    /// learnt in the form generation produces; the earlier turns are computed again in each
    /// sequence (`stats` prints how many sequences and tokens that adds), and each sequence counts
    /// as one in the loss weighting.
    #[default]
    Split,
    /// Only the last assistant turn, in the whole conversation's rendering: one sequence, no
    /// extra tokens; the earlier answers are context only.
    Last,
    /// Refuse the conversation (the error names the turn): the behaviour before policies.
    Error,
}

impl FromStr for TurnPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "split" => Ok(Self::Split),
            "last" => Ok(Self::Last),
            "error" => Ok(Self::Error),
            _ => Err(format!("unknown turn policy {s:?} (expected split, last or error)")),
        }
    }
}

impl std::fmt::Display for TurnPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Split => "split",
            Self::Last => "last",
            Self::Error => "error",
        })
    }
}

/// Rendered text and the byte spans of its targets.
type Spans = (String, Vec<(usize, usize)>);

/// The training sequences of one conversation ([`ModelTokenizer::sequences`]).
#[derive(Debug, Clone)]
pub struct Sequences {
    /// Each with the messages it renders (the conversation, or under `split` a prefix of it).
    pub seqs: Vec<(Example, Tokenized)>,
    /// The template was not prefix-stable here, so the [`TurnPolicy`] decided.
    pub by_policy: bool,
}

impl ModelTokenizer {
    /// `render(messages[..k], add_generation_prompt)`; some templates cannot render an empty
    /// conversation (they index `messages[0]`), which is the empty text.
    fn prompt_before(&self, messages: &[Message], k: usize) -> Result<String, TokenizerError> {
        match self.render(&messages[..k], true) {
            Ok(s) => Ok(s),
            Err(_) if k == 0 => Ok(String::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// The target span of assistant turn k inside `full` by the prefix rule (`None` if the turn
    /// renders empty); `NotPrefix` where the renders are not prefixes of each other.
    fn turn_span(
        &self,
        messages: &[Message],
        full: &str,
        k: usize,
    ) -> Result<Option<(usize, usize)>, TokenizerError> {
        let pre = self.prompt_before(messages, k)?;
        let post = self.render(&messages[..=k], false)?;
        if !post.starts_with(&pre) || !full.starts_with(&post) {
            return Err(TokenizerError::NotPrefix { turn: k });
        }
        Ok((post.len() > pre.len()).then_some((pre.len(), post.len())))
    }

    /// The whole rendering with the spans of the assistant turns `turns` (by [`Self::turn_span`]).
    fn rule_spans(
        &self,
        messages: &[Message],
        turns: impl Iterator<Item = usize>,
    ) -> Result<Spans, TokenizerError> {
        let full = self.render(messages, false)?;
        let mut spans = Vec::new();
        for k in turns {
            spans.extend(self.turn_span(messages, &full, k)?);
        }
        Ok((full, spans))
    }

    /// The prefix rule over every assistant turn; `NotPrefix` where it fails.
    fn prefix_spans(&self, messages: &[Message]) -> Result<Spans, TokenizerError> {
        self.rule_spans(messages, (0..messages.len()).filter(|&k| messages[k].role == Role::Assistant))
    }

    /// The whole rendering with only the last assistant turn as targets.
    fn last_turn_spans(&self, messages: &[Message]) -> Result<Spans, TokenizerError> {
        self.rule_spans(messages, messages.iter().rposition(|m| m.role == Role::Assistant).into_iter())
    }

    /// [`Self::target_spans`], and whether the [`TurnPolicy`] decided (the prefix rule failed).
    fn spans_by_policy(&self, messages: &[Message]) -> Result<(Spans, bool), TokenizerError> {
        if self.template.has_generation_blocks() {
            return Ok((self.template.render_spans(messages, false)?, false));
        }
        match self.prefix_spans(messages) {
            Err(TokenizerError::NotPrefix { .. }) if self.turns == TurnPolicy::Last => {
                Ok((self.last_turn_spans(messages)?, true))
            }
            r => Ok((r?, false)),
        }
    }

    /// Text byte spans of the loss targets of the conversation as one sequence: the template's
    /// generation blocks, else the prefix rule; where that fails, the last turn only under
    /// [`TurnPolicy::Last`], and `NotPrefix` otherwise ([`Self::sequences`] splits).
    pub fn target_spans(&self, messages: &[Message]) -> Result<Spans, TokenizerError> {
        Ok(self.spans_by_policy(messages)?.0)
    }

    /// Tokenizes `text` once (no special tokens added: the template holds them, as
    /// `apply_chat_template(tokenize=True)`) and marks the tokens of `spans`: those starting
    /// inside a span (the prefix rule's spans start and end on token boundaries of every template
    /// we test), or with `overlap` those overlapping one (transformers' rule for generation blocks:
    /// from the token holding the first character to the one holding the last).
    fn encode(
        &self,
        text: &str,
        spans: &[(usize, usize)],
        overlap: bool,
    ) -> Result<Tokenized, TokenizerError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut targets: Vec<bool> = enc
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                spans
                    .iter()
                    .any(|&(a, b)| if overlap { start < b && end > a } else { start >= a && start < b })
            })
            .collect();
        // Token 0 is never predicted (nothing precedes it), so it can carry no loss: keeping it out
        // makes `target_count` exactly the number of loss terms the planner weighs.
        if let Some(first) = targets.first_mut() {
            *first = false;
        }
        Ok(Tokenized { ids: enc.get_ids().to_vec(), targets })
    }

    /// Renders and tokenizes one example as one sequence, marking its loss targets
    /// ([`Self::target_spans`]).
    pub fn tokenize(&self, example: &Example) -> Result<Tokenized, TokenizerError> {
        let (text, spans) = self.target_spans(&example.messages)?;
        self.encode(&text, &spans, self.template.has_generation_blocks())
    }

    /// The training sequences of one example: itself, or under [`TurnPolicy::Split`] where the
    /// template is not prefix-stable, one per assistant turn (the conversation up to it, that
    /// turn the only target).
    pub fn sequences(&self, example: &Example) -> Result<Sequences, TokenizerError> {
        let overlap = self.template.has_generation_blocks();
        match self.spans_by_policy(&example.messages) {
            Ok(((text, spans), by_policy)) => Ok(Sequences {
                seqs: vec![(example.clone(), self.encode(&text, &spans, overlap)?)],
                by_policy,
            }),
            Err(TokenizerError::NotPrefix { .. }) if self.turns == TurnPolicy::Split => {
                let m = &example.messages;
                let mut out = Vec::new();
                for k in (0..m.len()).filter(|&k| m[k].role == Role::Assistant) {
                    let (text, spans) = self.last_turn_spans(&m[..=k])?;
                    let sub = Example { messages: m[..=k].to_vec(), source: example.source.clone() };
                    out.push((sub, self.encode(&text, &spans, false)?));
                }
                Ok(Sequences { seqs: out, by_policy: true })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen3's way, reduced: the last assistant turn gets an (empty) reasoning block, earlier ones
    /// do not.
    const QWEN3_LIKE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
        {% if m.role == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}\
        {{ m.content }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn tok(source: &str, turns: TurnPolicy) -> ModelTokenizer {
        let mut t = ModelTokenizer::builtin();
        t.template = super::super::ChatTemplate::new(source, Default::default()).unwrap();
        t.turns = turns;
        t
    }

    fn chat(turns: &[(Role, &str)]) -> Example {
        Example { messages: turns.iter().map(|&(r, c)| Message::new(r, c)).collect(), source: None }
    }

    fn target_text(t: &ModelTokenizer, x: &Tokenized) -> String {
        let ids: Vec<u32> = x.ids.iter().zip(&x.targets).filter(|p| *p.1).map(|p| *p.0).collect();
        t.decode(&ids).unwrap()
    }

    fn multi() -> Example {
        chat(&[(Role::User, "q1"), (Role::Assistant, "a1"), (Role::User, "q2"), (Role::Assistant, "a2")])
    }

    #[test]
    fn policies_for_a_template_that_is_not_prefix_stable() {
        let ex = multi();
        let e = tok(QWEN3_LIKE, TurnPolicy::Error).sequences(&ex).unwrap_err();
        assert!(!tok(QWEN3_LIKE, TurnPolicy::Split).sequences(&multi()).unwrap().seqs.is_empty());
        assert!(matches!(e, TokenizerError::NotPrefix { turn: 1 }), "{e}");

        let t = tok(QWEN3_LIKE, TurnPolicy::Last);
        let s = t.sequences(&ex).unwrap();
        assert!(s.by_policy);
        let seqs = s.seqs;
        assert_eq!(seqs.len(), 1);
        assert_eq!(t.decode(&seqs[0].1.ids).unwrap(), t.render(&ex.messages, false).unwrap());
        assert_eq!(target_text(&t, &seqs[0].1), "<think>\n\n</think>\n\na2<|im_end|>\n");

        let t = tok(QWEN3_LIKE, TurnPolicy::Split);
        let seqs = t.sequences(&ex).unwrap().seqs;
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0].0.messages, ex.messages[..2]);
        assert_eq!(target_text(&t, &seqs[0].1), "<think>\n\n</think>\n\na1<|im_end|>\n");
        assert_eq!(seqs[1].0.messages, ex.messages);
        assert_eq!(target_text(&t, &seqs[1].1), "<think>\n\n</think>\n\na2<|im_end|>\n");
        // A single turn is prefix-stable: one sequence under every policy.
        let one = chat(&[(Role::User, "q"), (Role::Assistant, "a")]);
        let s = t.sequences(&one).unwrap();
        assert!(s.seqs.len() == 1 && !s.by_policy);
    }

    #[test]
    fn generation_blocks_are_the_targets() {
        // The same template with its assistant output marked: every turn in the whole rendering.
        let marked = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
            {% if m.role == 'assistant' %}{% generation %}\
            {% if loop.last %}<think>\n\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n\
            {% endgeneration %}{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}";
        let t = tok(marked, TurnPolicy::Error);
        assert!(t.template.has_generation_blocks());
        let ex = multi();
        let s = t.sequences(&ex).unwrap();
        assert!(!s.by_policy);
        let seqs = s.seqs;
        assert_eq!(seqs.len(), 1);
        let text = t.render(&ex.messages, false).unwrap();
        assert!(!text.contains(super::super::generation::OPEN), "markers never reach the text");
        assert_eq!(t.decode(&seqs[0].1.ids).unwrap(), text);
        assert_eq!(target_text(&t, &seqs[0].1), "a1<|im_end|>\n<think>\n\n</think>\n\na2<|im_end|>\n");
        let bad = chat(&[(Role::User, "q\u{F8F0}"), (Role::Assistant, "a")]);
        assert!(t.tokenize(&bad).unwrap_err().to_string().contains("U+F8F0"));
    }
}
