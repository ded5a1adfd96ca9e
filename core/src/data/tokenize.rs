//! Tokenization with the model's own chat template, and loss targets.
//!
//! Targets of assistant turn k are the tokens of
//! `render(messages[..=k])` minus `render(messages[..k], add_generation_prompt=true)`:
//! the answer plus whatever the template closes the turn with (`<|im_end|>\n`, `<|eot_id|>`, `</s>`),
//! so the model learns to stop. Everything else (system, user turns, headers) is masked. The spans
//! are found in text and mapped to tokens by offsets, after tokenizing the whole conversation once
//! without adding special tokens (the template already holds them), exactly as transformers'
//! `apply_chat_template(tokenize=True)` does.
//!
//! ```text
//! <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n
//! └──────────────── masked ─────────────────────────────────────────┘└── targets ──┘
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::Tokenizer;

pub use super::targets::TurnPolicy;
use super::template::{ChatTemplate, TemplateError};
use super::{Example, Message, builtin};

/// Token ids of one example and which of them carry loss.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
}

impl Tokenized {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }

    /// Keeps the first `limit` tokens (right truncation, as `truncation=True` in transformers).
    pub fn truncate(&mut self, limit: usize) {
        self.ids.truncate(limit);
        self.targets.truncate(limit);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(
        "chat template is not prefix-stable at message {turn}: rendering the conversation up to that assistant turn is not a prefix of the whole rendering, so its loss targets cannot be located (--turns split or last trains such conversations)"
    )]
    NotPrefix { turn: usize },
    #[error("tokenizer: {0}")]
    Encode(String),
}

/// A model's tokenizer and chat template.
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Where it came from: a directory, or `builtin`.
    pub name: String,
    /// What to train where the template is not prefix-stable (see [`TurnPolicy`]).
    pub turns: TurnPolicy,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer").field("name", &self.name).finish_non_exhaustive()
    }
}

fn load_err(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Load { path: path.to_path_buf(), message: message.into() }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s).map(Some).map_err(|e| load_err(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(load_err(path, e.to_string())),
    }
}

/// A special token in `tokenizer_config.json` is a string or an AddedToken object.
fn token_text(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.get("content")?.as_str().map(str::to_string))
}

const SPECIAL_NAMES: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

impl ModelTokenizer {
    /// The built-in byte-level tokenizer with its ChatML template.
    pub fn builtin() -> Self {
        let tokenizer = Tokenizer::from_bytes(builtin::tokenizer_json().as_bytes())
            .expect("built-in tokenizer.json is valid");
        let template = ChatTemplate::new(builtin::CHAT_TEMPLATE, builtin::special_tokens())
            .expect("built-in template compiles");
        Self { tokenizer, template, name: "builtin".into(), turns: TurnPolicy::default() }
    }

    /// Loads a Hugging Face model or tokenizer directory: `tokenizer.json`, the chat template from
    /// `chat_template.jinja`, `chat_template.json` or `tokenizer_config.json` (in that order, as
    /// transformers prefers them), and the special tokens from `tokenizer_config.json` /
    /// `special_tokens_map.json`. `template_override` replaces the directory's template.
    pub fn from_dir(dir: &Path, template_override: Option<&Path>) -> Result<Self, TokenizerError> {
        if !dir.is_dir() {
            return Err(load_err(dir, "not a directory"));
        }
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(load_err(&tok_path, "missing: a fast tokenizer file (tokenizer.json) is required"));
        }
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| load_err(&tok_path, e.to_string()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or_default();
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or_default();
        let mut special = BTreeMap::new();
        for name in SPECIAL_NAMES {
            if let Some(t) = cfg.get(name).and_then(token_text).or_else(|| map.get(name).and_then(token_text))
            {
                special.insert(name.to_string(), t);
            }
        }

        let source = if let Some(p) = template_override {
            std::fs::read_to_string(p).map_err(|e| load_err(p, e.to_string()))?
        } else if let Ok(s) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
            s
        } else if let Some(v) = read_json(&dir.join("chat_template.json"))? {
            template_field(&v)
                .ok_or_else(|| load_err(&dir.join("chat_template.json"), "no `chat_template` string"))?
        } else if let Some(v) = cfg.get("chat_template") {
            template_field(&serde_json::json!({ "chat_template": v })).ok_or_else(|| {
                load_err(&cfg_path, "field chat_template: expected a string or a list of {name, template}")
            })?
        } else {
            return Err(load_err(
                dir,
                "no chat template (looked for chat_template.jinja, chat_template.json and the chat_template field of tokenizer_config.json); pass one with --chat-template FILE",
            ));
        };
        let template = ChatTemplate::new(&source, special)?;
        Ok(Self { tokenizer, template, name: dir.display().to_string(), turns: TurnPolicy::default() })
    }

    /// Loads `dir`, or the built-in tokenizer when `dir` is `None` or the word `builtin`.
    pub fn load(dir: Option<&Path>, template_override: Option<&Path>) -> Result<Self, TokenizerError> {
        match dir {
            None => Ok(Self::builtin()),
            Some(d) if d.as_os_str() == "builtin" => Ok(Self::builtin()),
            Some(d) => Self::from_dir(d, template_override),
        }
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TemplateError> {
        self.template.render(messages, add_generation_prompt)
    }

    /// The training sequences of many examples ([`Self::sequences`]) on all cores, in order.
    pub fn sequences_all(
        &self,
        examples: &[Example],
    ) -> Vec<Result<super::targets::Sequences, TokenizerError>> {
        examples.par_iter().map(|ex| self.sequences(ex)).collect()
    }

    /// Tokens in a plain text (no template, no special tokens): how long a document is.
    pub fn count(&self, text: &str) -> Result<usize, TokenizerError> {
        // encode_fast: no offsets, which a count never needs (and which cost a third of the time).
        let enc =
            self.tokenizer.encode_fast(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.len())
    }

    /// Token id of a special token text, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer.decode(ids, false).map_err(|e| TokenizerError::Encode(e.to_string()))
    }
}

/// `chat_template` as a string, or transformers' list form `[{name, template}]` (use `default`).
fn template_field(v: &serde_json::Value) -> Option<String> {
    match v.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Role;

    fn chat(turns: &[(Role, &str)]) -> Example {
        Example { messages: turns.iter().map(|&(r, c)| Message::new(r, c)).collect(), source: None }
    }

    #[test]
    fn builtin_ids_are_bytes_and_targets_are_the_answer() {
        let tok = ModelTokenizer::builtin();
        let ex = chat(&[(Role::User, "hi é"), (Role::Assistant, "ok")]);
        let t = tok.tokenize(&ex).unwrap();
        let text = "<|im_start|>user\nhi é<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n";
        assert_eq!(tok.render(&ex.messages, false).unwrap(), text);
        let mut want = vec![builtin::IM_START];
        want.extend(b"user\nhi \xc3\xa9".iter().map(|&b| b as u32));
        want.push(builtin::IM_END);
        want.push(b'\n' as u32);
        want.push(builtin::IM_START);
        want.extend(b"assistant\n".iter().map(|&b| b as u32));
        let prompt_len = want.len();
        want.extend(b"ok".iter().map(|&b| b as u32));
        want.push(builtin::IM_END);
        want.push(b'\n' as u32);
        assert_eq!(t.ids, want);
        let expect_targets: Vec<bool> = (0..want.len()).map(|i| i >= prompt_len).collect();
        assert_eq!(t.targets, expect_targets);
        assert_eq!(tok.decode(&t.ids).unwrap(), text);
    }

    #[test]
    fn multi_turn_targets_only_assistant_spans() {
        let tok = ModelTokenizer::builtin();
        let ex = chat(&[
            (Role::System, "sys"),
            (Role::User, "a"),
            (Role::Assistant, "b"),
            (Role::User, "c"),
            (Role::Assistant, "d"),
        ]);
        let t = tok.tokenize(&ex).unwrap();
        let target_text: Vec<u32> = t.ids.iter().zip(&t.targets).filter(|p| *p.1).map(|p| *p.0).collect();
        let s = tok.decode(&target_text).unwrap();
        assert_eq!(s, "b<|im_end|>\nd<|im_end|>\n");
    }

    #[test]
    fn missing_dir_files_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = ModelTokenizer::from_dir(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
        std::fs::write(d.path().join("tokenizer.json"), builtin::tokenizer_json()).unwrap();
        let e = ModelTokenizer::from_dir(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("no chat template"), "{e}");
        std::fs::write(d.path().join("tokenizer_config.json"), "{oops").unwrap();
        let e = ModelTokenizer::from_dir(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json") && e.contains("invalid JSON"), "{e}");
        std::fs::write(d.path().join("tokenizer_config.json"), builtin::tokenizer_config_json()).unwrap();
        let tok = ModelTokenizer::from_dir(d.path(), None).unwrap();
        let ex = chat(&[(Role::User, "x"), (Role::Assistant, "y")]);
        assert_eq!(tok.tokenize(&ex).unwrap(), ModelTokenizer::builtin().tokenize(&ex).unwrap());
    }
}
