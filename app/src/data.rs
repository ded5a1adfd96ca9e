//! Datasets as the app sees them: the bundled sample, a data file (any format `core-cli` reads,
//! tokenized with the built-in or a model's tokenizer), or a lengths file (`plan --lengths`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use longalign::data::formats::read_str;
use longalign::data::{ModelTokenizer, TokenizedDataset, synth};
use longalign::plan::{Item, Overlong};

/// Where a dataset came from; also how `core-cli plan` is told about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// The embedded sample (`core-cli plan` without `--data`).
    Sample,
    /// `--data FILE --skip-invalid`.
    File(PathBuf),
    /// `--lengths FILE`.
    Lengths(PathBuf),
}

/// Per-source counts, as `core-cli stats` reports them.
pub use longalign::data::stats::SourceStats;

/// A loaded dataset with what the Data view shows.
pub struct Loaded {
    pub origin: Origin,
    pub name: String,
    /// Tokenized examples (None for a lengths file).
    pub dataset: Option<TokenizedDataset>,
    pub tokenizer: ModelTokenizer,
    /// Full (untruncated) lengths, for lengths files.
    lengths: Vec<Item>,
    /// (total, target) tokens of every sequence and their histogram, computed once at load: the
    /// Data view draws them every frame, and counting targets walks every token.
    lens: Vec<(u32, u32)>,
    bins: Vec<(u32, usize)>,
    pub sources: BTreeMap<String, SourceStats>,
    pub formats: Vec<(String, usize)>,
    /// Invalid records, `line N: field: reason`, in file order.
    pub invalid: Vec<String>,
}

impl Loaded {
    /// The bundled sample, tokenized with the built-in tokenizer.
    pub fn sample() -> anyhow::Result<Self> {
        let tok = ModelTokenizer::builtin();
        let report = read_str("<embedded sample>", synth::TRAIN_JSONL, None, true)?;
        let ds = TokenizedDataset::from_report("<embedded sample>", report, true, &tok)?;
        Ok(Self::from_dataset(Origin::Sample, "bundled sample".into(), ds, tok))
    }

    /// A data file, or a lengths file when the name ends in `.txt` or `.lengths`.
    pub fn open(path: &Path, tokenizer: Option<&Path>) -> anyhow::Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if ext == "txt" || ext == "lengths" {
            let items = longalign::plan::lengths::read(path)?;
            return Ok(Self::from_lengths(Origin::Lengths(path.to_path_buf()), name, items));
        }
        let tok = ModelTokenizer::load(tokenizer, None)?;
        let ds = TokenizedDataset::load(path, None, true, &tok)?;
        Ok(Self::from_dataset(Origin::File(path.to_path_buf()), name, ds, tok))
    }

    /// A file's bytes (dropped on the browser window): records, or lengths when the name ends in
    /// `.txt` / `.lengths`. Tokenized with the built-in tokenizer.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{name}: not UTF-8 ({e})"))?;
        let lower = name.to_lowercase();
        if lower.ends_with(".txt") || lower.ends_with(".lengths") {
            let items = longalign::plan::lengths::parse(name, text)?;
            return Ok(Self::from_lengths(Origin::Lengths(PathBuf::from(name)), name.into(), items));
        }
        let tok = ModelTokenizer::builtin();
        let report = read_str(name, text, None, true)?;
        let ds = TokenizedDataset::from_report(name, report, true, &tok)?;
        Ok(Self::from_dataset(Origin::File(PathBuf::from(name)), name.into(), ds, tok))
    }

    fn from_lengths(origin: Origin, name: String, items: Vec<Item>) -> Self {
        let mut sources = BTreeMap::new();
        let s: &mut SourceStats = sources.entry("(lengths file)".to_string()).or_default();
        for it in &items {
            s.examples += 1;
            s.tokens += it.total as u64;
            s.target_tokens += it.target as u64;
        }
        s.mean_len = s.tokens as f64 / s.examples.max(1) as f64;
        let lens: Vec<(u32, u32)> = items.iter().map(|i| (i.total, i.target)).collect();
        Self {
            origin,
            name,
            dataset: None,
            tokenizer: ModelTokenizer::builtin(),
            lengths: items,
            bins: histogram(&lens),
            lens,
            sources,
            formats: vec![("lengths".into(), 0)],
            invalid: Vec::new(),
        }
    }

    fn from_dataset(origin: Origin, name: String, ds: TokenizedDataset, tokenizer: ModelTokenizer) -> Self {
        let sources = longalign::data::stats::compute(&ds, &tokenizer.name).sources;
        let formats = ds.formats.iter().map(|(f, n)| (f.as_str().to_string(), *n)).collect();
        let invalid =
            ds.skipped.iter().map(|e| format!("line {}: {}: {}", e.line, e.field, e.message)).collect();
        let lens: Vec<(u32, u32)> =
            ds.tokens.iter().map(|t| (t.len() as u32, t.target_count() as u32)).collect();
        Self {
            origin,
            name,
            dataset: Some(ds),
            tokenizer,
            lengths: Vec::new(),
            bins: histogram(&lens),
            lens,
            sources,
            formats,
            invalid,
        }
    }

    pub fn len(&self) -> usize {
        self.dataset.as_ref().map_or(self.lengths.len(), |d| d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (total, target) tokens of every sequence, untruncated.
    pub fn lengths(&self) -> &[(u32, u32)] {
        &self.lens
    }

    /// Log2 histogram of the lengths ([`histogram`]).
    pub fn histogram(&self) -> &[(u32, usize)] {
        &self.bins
    }

    /// Planner items under a length limit, exactly as `core-cli plan` makes them: a tokenized
    /// dataset truncates with its exact target mask (the count is returned); a lengths file is
    /// handed to the planner whole.
    pub fn items(&self, limit: Option<u32>) -> (Vec<Item>, usize) {
        match &self.dataset {
            Some(d) => d.items(limit, Overlong::Truncate),
            None => (self.lengths.clone(), 0),
        }
    }

    /// The `core-cli plan` arguments that name this dataset.
    pub fn cli_args(&self) -> Vec<String> {
        match &self.origin {
            Origin::Sample => Vec::new(),
            Origin::File(p) => {
                let mut a = vec!["--data".into(), p.display().to_string(), "--skip-invalid".into()];
                if self.tokenizer.name != "builtin" {
                    a.extend(["--tokenizer".into(), self.tokenizer.name.clone()]);
                }
                a
            }
            Origin::Lengths(p) => vec!["--lengths".into(), p.display().to_string()],
        }
    }
}

/// Log2 histogram bins of sequence lengths: (lower bound, count), from 64 up.
pub fn histogram(lengths: &[(u32, u32)]) -> Vec<(u32, usize)> {
    let max = lengths.iter().map(|l| l.0).max().unwrap_or(1);
    let mut bins: Vec<(u32, usize)> = Vec::new();
    let mut lo = 64u32;
    bins.push((0, 0));
    while lo <= max {
        bins.push((lo, 0));
        lo = lo.saturating_mul(2);
        if lo == u32::MAX {
            break;
        }
    }
    for &(t, _) in lengths {
        let i = bins.iter().rposition(|&(b, _)| t >= b).unwrap_or(0);
        bins[i].1 += 1;
    }
    bins
}
