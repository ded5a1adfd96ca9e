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

/// Scores one example. `bucket` > 1 computes it at a bucketed length
/// ([`crate::model::packed::bucketed_len`], as training does), the padding a segment of its own
/// that no real token attends to, and gathers a bucketed count of target rows: on the JIT backends
/// (wgpu, CUDA) a data set of many lengths then meets a few shapes, so it compiles and autotunes a
/// few times instead of once per length (the first H200 `score` of 200 examples spent its 90 s
/// compiling). `bucket` 1: one row of exactly the example, no padding.
pub fn score_example<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    t: &Tokenized,
    index: usize,
    bucket: usize,
    device: &B::Device,
) -> ExampleScore {
    let padded = |n: usize| if bucket > 1 { crate::model::packed::bucketed_len(n, bucket) } else { n };
    let n = t.ids.len();
    let len = padded(n);
    let mut tokens = t.ids.clone();
    tokens.resize(len, 0);
    let rows = PackedRows { tokens, cu_seqlens: vec![vec![0, n as u32]], rows: 1, row_len: len };
    let hidden = model.hidden(cfg, &rows, device).reshape([len, cfg.hidden_size]);
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
    let k = pos.len();
    let kp = padded(k);
    // Padded rows gather position 0 against label 0; their results are dropped below.
    let mut idx: Vec<i64> = pos.iter().map(|&p| p as i64).collect();
    idx.resize(kp, 0);
    let h = hidden.select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [kp]), device));
    let logp = log_softmax(model.head(h), 1); // [kp, vocab]
    let labels: Vec<i64> = pos.iter().map(|&p| t.ids[p + 1] as i64).collect();
    let mut lab = labels.clone();
    lab.resize(kp, 0);
    let lab = Tensor::<B, 2, Int>::from_data(TensorData::new(lab, [kp, 1]), device);
    let mut nll: Vec<f32> =
        logp.clone().gather(1, lab).neg().into_data().convert::<f32>().to_vec().expect("f32");
    let mut argmax: Vec<i64> = logp.argmax(1).into_data().convert::<i64>().to_vec().expect("i64");
    nll.truncate(k);
    argmax.truncate(k);
    let correct = argmax.iter().zip(&labels).filter(|(a, b)| a == b).count();
    ExampleScore {
        index,
        loss: nll.iter().map(|&x| x as f64).sum::<f64>() / k as f64,
        target_tokens: k,
        correct_tokens: correct,
        exact: correct == k,
        per_token: labels.iter().zip(&argmax).map(|(&l, &a)| (l as u32, l == a)).collect(),
    }
}

/// Loads the Hugging Face model in `model_dir` (with the PEFT adapter `adapter` folded in, if
/// given) and scores every example of `ds` (`core-cli score`), each at a length bucketed by
/// `bucket` ([`score_example`]).
pub fn score_dataset<B: Backend>(
    model_dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    ds: &crate::data::TokenizedDataset,
    bucket: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<ExampleScore>> {
    let (cfg, model) = crate::model::peft::load_hf_adapted::<B>(model_dir, adapter, device)?;
    Ok(ds.tokens.iter().enumerate().map(|(i, t)| score_example(&model, &cfg, t, i, bucket, device)).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Bucketing pads the row (a segment of its own) and the gathered targets; the real tokens'
    /// scores must not move, for lengths below, at and above a bucket.
    #[test]
    fn bucketed_scores_equal_exact_ones() {
        let cfg = LlamaConfig::tiny();
        let device = Default::default();
        <Flex as Backend>::seed(&device, 3);
        let model = Llama::<Flex>::init(&cfg, &device);
        for n in [5usize, 64, 65, 130] {
            let ids: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 11) % cfg.vocab_size as u32).collect();
            let targets: Vec<bool> = (0..n).map(|i| i >= n / 3).collect();
            let t = Tokenized { ids, targets };
            let exact = score_example(&model, &cfg, &t, 0, 1, &device);
            let bucketed = score_example(&model, &cfg, &t, 0, 64, &device);
            assert_eq!(exact.target_tokens, bucketed.target_tokens, "n = {n}");
            assert_eq!(exact.per_token, bucketed.per_token, "n = {n}");
            assert!(
                (exact.loss - bucketed.loss).abs() <= 1e-5 * exact.loss.max(1.0),
                "n = {n}: {exact:?} vs {bucketed:?}"
            );
        }
    }
}
