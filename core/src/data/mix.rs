//! LongAlign's data mix: several datasets, each taken with a weight (long instruction data plus
//! general chats), shuffled into one messages file (`core-cli data mix`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Example;
use crate::util::rng::SplitMix64;
use crate::util::table::Table;

/// One input and how much of it to take: weight 1 = every record once, 0.5 = a random half,
/// 2.5 = every record twice plus a random half.
#[derive(Debug, Clone, PartialEq)]
pub struct MixInput {
    pub path: PathBuf,
    pub weight: f64,
}

impl MixInput {
    /// `PATH:WEIGHT`, or `PATH` (weight 1).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        Ok(match spec.rsplit_once(':') {
            Some((p, w)) => match w.parse::<f64>() {
                Ok(w) if w >= 0.0 && w.is_finite() => Self { path: PathBuf::from(p), weight: w },
                _ => anyhow::bail!("{spec}: the weight after ':' must be a number ≥ 0"),
            },
            None => Self { path: PathBuf::from(spec), weight: 1.0 },
        })
    }
}

/// What was taken from one input.
#[derive(Debug, Clone, Serialize)]
pub struct MixedInput {
    pub input: PathBuf,
    pub weight: f64,
    pub records: usize,
    pub skipped: usize,
    pub taken: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    pub out: PathBuf,
    pub examples: usize,
    pub seed: u64,
    pub inputs: Vec<MixedInput>,
}

impl MixReport {
    /// What was taken from each input, as a table, and where it went.
    pub fn render(&self) -> String {
        let mut t = Table::new(["input", "weight", "records", "skipped", "taken"].map(String::from).to_vec());
        for i in &self.inputs {
            t.row(vec![
                i.input.display().to_string(),
                i.weight.to_string(),
                i.records.to_string(),
                i.skipped.to_string(),
                i.taken.to_string(),
            ]);
        }
        let done = format!(
            "wrote {} examples (shuffled, seed {}) to {}\n",
            self.examples,
            self.seed,
            self.out.display()
        );
        t.render() + &done
    }
}

/// Mixes `inputs` into `out` (messages format, `meta.source` = the record's own, else its file's
/// stem), shuffled with `seed`.
pub fn mix(inputs: &[MixInput], out: &Path, seed: u64, skip_invalid: bool) -> anyhow::Result<MixReport> {
    let mut g = SplitMix64::new(seed);
    let mut examples: Vec<Example> = Vec::new();
    let mut report = Vec::new();
    for input in inputs {
        let r = super::read_file(&input.path, None, skip_invalid)?;
        let stem = input.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let counts = copies(r.examples.len(), input.weight, &mut g);
        let mut taken = 0;
        for ((_, ex), &c) in r.examples.iter().zip(&counts) {
            for _ in 0..c {
                let mut ex = ex.clone();
                ex.source = ex.source.or_else(|| Some(stem.clone()));
                examples.push(ex);
                taken += 1;
            }
        }
        report.push(MixedInput {
            input: input.path.clone(),
            weight: input.weight,
            records: r.examples.len(),
            skipped: r.skipped.len(),
            taken,
        });
    }
    g.shuffle(&mut examples);
    crate::util::write_atomic(out, super::synth::to_jsonl(&examples).as_bytes())?;
    Ok(MixReport { out: out.to_path_buf(), examples: examples.len(), seed, inputs: report })
}

/// How many copies of each of `n` records a weight asks for: ⌊w⌋ of each, plus a seeded random
/// ⌊(w − ⌊w⌋)·n⌉ of them once more.
fn copies(n: usize, weight: f64, g: &mut SplitMix64) -> Vec<usize> {
    let whole = weight.floor() as usize;
    let mut counts = vec![whole; n];
    let extra = ((weight - weight.floor()) * n as f64).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    g.shuffle(&mut order);
    for &i in order.iter().take(extra) {
        counts[i] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_take_whole_copies_plus_a_seeded_fraction() {
        let mut g = SplitMix64::new(1);
        let c = copies(10, 2.5, &mut g);
        assert_eq!(c.iter().sum::<usize>(), 25);
        assert!(c.iter().all(|&k| k == 2 || k == 3));
        assert_eq!(copies(4, 0.0, &mut g), vec![0; 4]);
        assert_eq!(MixInput::parse("a.jsonl:0.5").unwrap(), MixInput { path: "a.jsonl".into(), weight: 0.5 });
        assert_eq!(MixInput::parse("a.jsonl").unwrap().weight, 1.0);
        assert!(MixInput::parse("a.jsonl:-1").unwrap_err().to_string().contains("number ≥ 0"));
    }
}
