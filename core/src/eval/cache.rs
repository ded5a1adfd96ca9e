//! The evaluations' answer and judgement caches: everything that costs money or time is appended
//! as it arrives, so an interrupted run resumes without paying twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// An append-only JSON-lines cache keyed by `idx`. A torn last line (a killed run) is ignored.
pub struct Cache<T> {
    path: PathBuf,
    pub entries: BTreeMap<u64, T>,
}

impl<T: Serialize + for<'de> Deserialize<'de> + Clone> Cache<T> {
    pub fn open(path: &Path, idx: impl Fn(&T) -> u64) -> anyhow::Result<Self> {
        let mut entries = BTreeMap::new();
        // A run killed mid-write leaves a partial last line: cut it off first.
        crate::util::cut_torn_tail(path)?;
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Ok(v) = serde_json::from_str::<T>(line) {
                    entries.insert(idx(&v), v);
                }
            }
        }
        Ok(Self { path: path.to_path_buf(), entries })
    }

    /// Appends one entry and flushes it to disk before returning.
    pub fn put(&mut self, idx: u64, v: T) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut line = serde_json::to_string(&v)?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        self.entries.insert(idx, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::longbench_chat::Prediction;

    #[test]
    fn cache_survives_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let mut c = Cache::<Prediction>::open(&p, |x| x.idx).unwrap();
        c.put(1, Prediction { idx: 1, prediction: "a".into(), prompt_tokens: 1, completion_tokens: 2 })
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"idx\": 2, \"predi")
            .unwrap();
        let mut c = Cache::<Prediction>::open(&p, |x| x.idx).unwrap();
        assert_eq!(c.entries.keys().copied().collect::<Vec<_>>(), vec![1]);
        c.put(3, Prediction { idx: 3, prediction: "c".into(), prompt_tokens: 0, completion_tokens: 0 })
            .unwrap();
        let c = Cache::<Prediction>::open(&p, |x| x.idx).unwrap();
        assert_eq!(c.entries.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    }
}
