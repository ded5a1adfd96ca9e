//! Where a command's training data comes from and how it is tokenized: the library side of the
//! data flags every command shares (`--data --tokenizer --chat-template --format --skip-invalid`).

use std::path::PathBuf;

use super::{Format, ModelTokenizer, TokenizedDataset};

#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    /// A `.jsonl` / `.json` file of messages, ShareGPT or Alpaca records; `None` = the bundled sample.
    pub data: Option<PathBuf>,
    /// A Hugging Face model or tokenizer directory (tokenizer.json + chat template), or `builtin`.
    pub tokenizer: PathBuf,
    /// A Jinja chat template that replaces the directory's.
    pub chat_template: Option<PathBuf>,
    /// `None` = detected per record.
    pub format: Option<Format>,
    /// Skip bad records (counted and listed) instead of stopping at the first.
    pub skip_invalid: bool,
    /// What to train where the template is not prefix-stable.
    pub turns: super::TurnPolicy,
}

impl Default for DataSource {
    fn default() -> Self {
        Self {
            data: None,
            tokenizer: "builtin".into(),
            chat_template: None,
            format: None,
            skip_invalid: false,
            turns: Default::default(),
        }
    }
}

impl DataSource {
    /// The tokenizer, then the data read and tokenized with it; also the tokenizer's name.
    pub fn load(&self) -> anyhow::Result<(TokenizedDataset, String)> {
        #[cfg(feature = "native")]
        let (tokenizer, data) = (
            crate::hub::resolve_path(&self.tokenizer)?,
            self.data.as_deref().map(crate::hub::resolve_file).transpose()?,
        );
        #[cfg(not(feature = "native"))]
        let (tokenizer, data) = (self.tokenizer.clone(), self.data.clone());
        let mut tok = ModelTokenizer::load(Some(&tokenizer), self.chat_template.as_deref())?;
        tok.turns = self.turns;
        let ds = TokenizedDataset::load_or_sample(data.as_deref(), self.format, self.skip_invalid, &tok)?;
        Ok((ds, tok.name.clone()))
    }
}
