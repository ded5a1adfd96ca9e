//! Training data: conversation formats, chat templates and tokenization with loss targets.
//!
//! ```text
//! file.jsonl ──formats──▶ Example { messages, source } ──template──▶ text ──tokenizer──▶ Tokenized
//!                                                                                        ids + targets
//! ```

pub mod builtin;
pub mod dataset;
pub mod dedupe;
pub mod formats;
pub mod generation;
pub mod mix;
pub mod plan_input;
pub mod source;
pub mod stats;
pub mod synth;
pub mod targets;
pub mod template;
pub mod tokenize;

use serde::{Deserialize, Serialize};

pub use dataset::TokenizedDataset;
pub use formats::{DataError, Format, ReadReport, read_file};
pub use source::DataSource;
pub use targets::TurnPolicy;
pub use template::ChatTemplate;
pub use tokenize::{ModelTokenizer, Tokenized};

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// One training example, whatever format it came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub messages: Vec<Message>,
    /// Where it came from (`meta.source` or `source` in the input), for per-source reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
