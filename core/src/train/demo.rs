//! The embedded default (`core-cli` with no arguments, `core-cli demo`): the tiny preset trained
//! from scratch on the bundled sample, packed with FFD and LongAlign loss weighting, its held-out
//! split scored before and after so that "it learned" is a measured difference.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;

use super::teacher_forced::{self, ExampleScore, GroupScore};
use super::{RunDir, RunSummary, TrainConfig};
use crate::data::{TokenizedDataset, synth};
use crate::model::load::load_hf;
use crate::model::{Llama, LlamaConfig};
use crate::plan::PlanConfig;
use crate::util::table::Table;

/// Epochs of the embedded default (sized to finish within minutes on two CPU cores).
pub const EMBEDDED_EPOCHS: usize = 1;
/// Peak learning rate of the embedded default: a little above the presets' 2e-3, the rate its
/// retrieval results were measured at.
pub const EMBEDDED_LR: f64 = 3e-3;

/// What a user may change about the embedded default.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    pub epochs: usize,
    /// Train on this file instead of the bundled sample (the held-out split stays the bundled one).
    pub data: Option<PathBuf>,
    /// Stop after this many steps.
    pub steps: Option<usize>,
    /// Peak learning rate (default [`EMBEDDED_LR`]).
    pub lr: Option<f64>,
    /// Run directory (default: `runs/<date-time>`).
    pub out: Option<PathBuf>,
    /// Seed of the initialisation and of the data order.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { epochs: EMBEDDED_EPOCHS, data: None, steps: None, lr: None, out: None, seed: 42 }
    }
}

impl DemoOptions {
    /// The run: `core-cli train --model tiny` with these epochs, steps, seed and learning rate.
    pub fn config(&self) -> TrainConfig {
        let base = TrainConfig::embedded_default();
        TrainConfig {
            data: self.data.clone(),
            plan: PlanConfig { seed: self.seed, epochs: self.epochs, ..base.plan },
            lr: self.lr.unwrap_or(EMBEDDED_LR),
            max_steps: self.steps,
            init_seed: self.seed,
            ..base
        }
    }
}

/// Characters of the retrieved keys predicted right, teacher-forced: (right, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyChars {
    pub right: usize,
    pub total: usize,
}

/// One retrieval task of the sample, before and after training.
#[derive(Debug, Clone)]
pub struct Retrieval {
    /// The examples' `source` (`passkey`, `kv`).
    pub task: &'static str,
    /// What is counted (`pass-key digits`, `value hex characters`).
    pub what: &'static str,
    /// Chance of guessing one character.
    pub chance: f64,
    pub before: KeyChars,
    pub after: KeyChars,
}

/// What the embedded default measured.
pub struct DemoReport {
    pub run: RunDir,
    pub summary: RunSummary,
    pub eval_examples: usize,
    /// Per task of the held-out split (`source`): scores before and after training.
    pub groups: BTreeMap<String, (GroupScore, GroupScore)>,
    pub retrieval: Vec<Retrieval>,
}

/// What the embedded default prints before it starts.
pub fn intro() -> String {
    format!(
        "LongAlign-rs embedded default: the tiny preset ({} parameters) trained from scratch on the bundled sample\n\
         (passkey and key-value retrieval over long filler, plus short chats), packed with FFD, LongAlign loss weighting.\n",
        LlamaConfig::tiny().num_parameters()
    )
}

impl DemoReport {
    /// The text `core-cli` prints at the end: training, the held-out split per task before and
    /// after, and retrieval against chance.
    pub fn render(&self) -> String {
        let r = self;
        let mut s = format!(
            "\ntrained {} steps in {:.0}s: training loss {:.3} → {:.3}\n",
            r.summary.steps, r.summary.wall_s, r.summary.first_loss, r.summary.last_loss
        );
        s += &format!(
            "held-out split ({} examples), teacher-forced; exact match = greedy decoding reproduces the answer:\n\n",
            r.eval_examples
        );
        let head = ["task", "examples", "loss before", "loss after", "token acc before", "token acc after"];
        let mut t =
            Table::new(head.iter().chain(&["exact before", "exact after"]).map(|h| h.to_string()).collect());
        for (k, (b, a)) in &r.groups {
            let pct = |x: f64| format!("{:.1}%", 100.0 * x);
            t.row(vec![
                k.clone(),
                a.examples.to_string(),
                format!("{:.3}", b.mean_loss),
                format!("{:.3}", a.mean_loss),
                pct(b.token_accuracy),
                pct(a.token_accuracy),
                pct(b.exact_match),
                pct(a.exact_match),
            ]);
        }
        s += &t.render();
        s += "\nchance: one answer token in 259 (0.4%); a five-digit pass key by guessing: 1 in 90,000.\n";
        s += "\nretrieval, teacher-forced (each key character predicted from the reference prefix):\n";
        for k in &r.retrieval {
            let pct = |c: KeyChars| 100.0 * c.right as f64 / c.total.max(1) as f64;
            s += &format!(
                "  {}: {} right {:.1}% → {:.1}% ({}/{}; chance {:.2}%, {})\n",
                k.task,
                k.what,
                pct(k.before),
                pct(k.after),
                k.after.right,
                k.after.total,
                100.0 * k.chance,
                above_chance(k.after.right, k.after.total, k.chance)
            );
        }
        s += &format!(
            "run: {} — `core-cli --help` for training your own data and models.\n",
            r.run.path.display()
        );
        s
    }
}

/// Trains and scores the embedded default on the CPU backend.
pub fn run(opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    let cfg = opts.config();
    let run = opts.out.clone().map_or_else(RunDir::timestamped, RunDir::new);
    let tok = super::run_tokenizer(&cfg)?;
    let eval = TokenizedDataset::embedded("<embedded eval>", synth::EVAL_JSONL, None, false, &tok)?;
    // Score the untrained model first, so "learned" is a measured difference.
    let (mcfg, untrained) = super::run_model::<B>(&cfg, &device)?;
    let (before, before_keys) = evaluate(&untrained.valid(), &mcfg, &eval, &device);
    let summary = super::train::<B>(&cfg, &run.path, false, &device, false)?;
    let (mcfg, trained) = load_hf::<burn::backend::Flex>(&summary.export_dir, &device)?;
    let (after, after_keys) = evaluate(&trained, &mcfg, &eval, &device);
    let groups = after.into_iter().map(|(k, a)| (k.clone(), (before[&k].clone(), a))).collect();
    let retrieval = [("passkey", "pass-key digits", 0.1), ("kv", "value hex characters", 1.0 / 16.0)]
        .into_iter()
        .zip(before_keys.into_iter().zip(after_keys))
        .map(|((task, what, chance), (before, after))| Retrieval { task, what, chance, before, after })
        .collect();
    Ok(DemoReport { run, summary, eval_examples: eval.len(), groups, retrieval })
}

/// How far `right` of `n` characters lies above guessing at rate `p`, in binomial standard
/// deviations, so that "above chance" is a measured statement and not a reading of noise.
pub fn above_chance(right: usize, n: usize, p: f64) -> String {
    if n == 0 {
        return "no characters".into();
    }
    let z = (right as f64 - n as f64 * p) / (n as f64 * p * (1.0 - p)).sqrt();
    let verdict = if z >= 3.0 { "above chance" } else { "not distinguishable from chance" };
    format!("z = {z:+.1}: {verdict}")
}

/// Teacher-forced scores per task, and the retrieved characters of the pass-key and key–value
/// tasks (passkey first).
fn evaluate<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    eval: &TokenizedDataset,
    device: &B::Device,
) -> (BTreeMap<String, GroupScore>, [KeyChars; 2]) {
    let scores: Vec<ExampleScore> = eval
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| teacher_forced::score_example(model, cfg, t, i, 1, device))
        .collect();
    // The retrieved characters (built-in byte tokenizer: ids are bytes), not the answer's fixed
    // words nor the asked key it restates: the digits of "The pass key is NNNNN." and the value
    // after ": " in "key: value".
    let mut keys = [KeyChars::default(); 2];
    for (e, s) in eval.examples.iter().zip(&scores) {
        let k = match e.source.as_deref() {
            Some("passkey") => 0,
            Some("kv") => 1,
            _ => continue,
        };
        let bytes: Vec<Option<u8>> =
            s.per_token.iter().map(|&(l, _)| u8::try_from(l).ok().filter(u8::is_ascii)).collect();
        let value_from = if k == 0 {
            0
        } else {
            bytes.windows(2).position(|w| w == [Some(b':'), Some(b' ')]).map_or(bytes.len(), |i| i + 2)
        };
        for (b, &(_, right)) in bytes.iter().zip(&s.per_token).skip(value_from) {
            let counted = match b {
                Some(c) if k == 0 => c.is_ascii_digit(),
                Some(c) => c.is_ascii_hexdigit(),
                None => false,
            };
            if counted {
                keys[k].total += 1;
                keys[k].right += right as usize;
            }
        }
    }
    let groups = teacher_forced::summarize(
        eval.examples.iter().map(|e| e.source.as_deref().unwrap_or("-")).zip(&scores),
    );
    (groups, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_chance_is_three_standard_deviations() {
        // 640 digits at 10%: mean 64, sd 7.59.
        assert!(above_chance(98, 640, 0.1).starts_with("z = +4.5: above chance"));
        assert!(above_chance(80, 640, 0.1).ends_with("not distinguishable from chance"));
        assert!(above_chance(50, 640, 0.1).starts_with("z = -1.8"));
        assert_eq!(above_chance(0, 0, 0.1), "no characters");
    }

    #[test]
    fn the_demo_is_the_tiny_preset_on_the_sample_with_its_seed_and_rate() {
        let c = DemoOptions { seed: 7, steps: Some(3), ..DemoOptions::default() }.config();
        assert_eq!((c.model.as_str(), c.data.as_deref()), ("tiny", None));
        assert_eq!((c.init_seed, c.plan.seed, c.max_steps, c.lr), (7, 7, Some(3), EMBEDDED_LR));
        assert_eq!((c.plan.max_tokens, c.plan.strategy), (Some(2048), crate::plan::Strategy::Pack));
    }
}
