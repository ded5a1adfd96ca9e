//! Teacher-forced evaluation: per-example answer loss and exact match.
//!
//! Greedy decoding reproduces the reference answer exactly if and only if, at every answer
//! position, the argmax given the reference prefix is the reference token. So "all answer tokens
//! are the argmax" *is* greedy exact match, computed in one forward pass instead of one per token.

use std::collections::BTreeMap;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

use crate::data::Tokenized;
use crate::model::{Llama, LlamaConfig, PackedRows};

/// One example's result.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleScore {
    pub index: usize,
    /// Mean cross entropy over its target tokens.
    pub loss: f64,
    pub target_tokens: usize,
    /// Target tokens whose argmax is right.
    pub correct_tokens: usize,
    /// All target tokens right: greedy decoding would reproduce the answer.
    pub exact: bool,
    /// Each target token (label id) and whether its argmax was right, in order.
    #[serde(skip)]
    pub per_token: Vec<(u32, bool)>,
}

/// Scores one example (one row, no padding).
pub fn score_example<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    t: &Tokenized,
    index: usize,
    device: &B::Device,
) -> ExampleScore {
    let n = t.ids.len();
    let rows = PackedRows { tokens: t.ids.clone(), cu_seqlens: vec![vec![0, n as u32]], rows: 1, row_len: n };
    let hidden = model.hidden(cfg, &rows, device).reshape([n, cfg.hidden_size]);
    // Positions p whose next token is a target.
    let pos: Vec<usize> = (0..n.saturating_sub(1)).filter(|&p| t.targets[p + 1]).collect();
    if pos.is_empty() {
        return ExampleScore {
            index,
            loss: 0.0,
            target_tokens: 0,
            correct_tokens: 0,
            exact: false,
            per_token: Vec::new(),
        };
    }
    let idx: Vec<i64> = pos.iter().map(|&p| p as i64).collect();
    let h = hidden.select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [pos.len()]), device));
    let logp = log_softmax(model.head(h), 1); // [k, vocab]
    let labels: Vec<i64> = pos.iter().map(|&p| t.ids[p + 1] as i64).collect();
    let lab = Tensor::<B, 2, Int>::from_data(TensorData::new(labels.clone(), [pos.len(), 1]), device);
    let nll: Vec<f32> = logp.clone().gather(1, lab).neg().into_data().convert::<f32>().to_vec().expect("f32");
    let argmax: Vec<i64> = logp.argmax(1).into_data().convert::<i64>().to_vec().expect("i64");
    let correct = argmax.iter().zip(&labels).filter(|(a, b)| a == b).count();
    ExampleScore {
        index,
        loss: nll.iter().map(|&x| x as f64).sum::<f64>() / pos.len() as f64,
        target_tokens: pos.len(),
        correct_tokens: correct,
        exact: correct == pos.len(),
        per_token: labels.iter().zip(&argmax).map(|(&l, &a)| (l as u32, l == a)).collect(),
    }
}

/// Loads the Hugging Face model in `model_dir` (with the PEFT adapter `adapter` folded in, if
/// given) and scores every example of `ds` (`core-cli score`).
pub fn score_dataset<B: Backend>(
    model_dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    ds: &crate::data::TokenizedDataset,
    device: &B::Device,
) -> anyhow::Result<Vec<ExampleScore>> {
    let (cfg, model) = crate::model::peft::load_hf_adapted::<B>(model_dir, adapter, device)?;
    Ok(ds.tokens.iter().enumerate().map(|(i, t)| score_example(&model, &cfg, t, i, device)).collect())
}

/// Aggregate of [`ExampleScore`]s per group (e.g. data source).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupScore {
    pub examples: usize,
    pub mean_loss: f64,
    pub token_accuracy: f64,
    pub exact_match: f64,
}

pub fn summarize<'a>(
    scores: impl IntoIterator<Item = (&'a str, &'a ExampleScore)>,
) -> BTreeMap<String, GroupScore> {
    let mut acc: BTreeMap<String, (usize, f64, usize, usize, usize)> = BTreeMap::new();
    for (group, s) in scores {
        for key in [group, "all"] {
            let e = acc.entry(key.to_string()).or_default();
            e.0 += 1;
            e.1 += s.loss;
            e.2 += s.correct_tokens;
            e.3 += s.target_tokens;
            e.4 += s.exact as usize;
        }
    }
    acc.into_iter()
        .map(|(k, (n, loss, correct, tokens, exact))| {
            (
                k,
                GroupScore {
                    examples: n,
                    mean_loss: loss / n as f64,
                    token_accuracy: correct as f64 / tokens.max(1) as f64,
                    exact_match: exact as f64 / n as f64,
                },
            )
        })
        .collect()
}
