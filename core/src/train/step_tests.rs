//! The fast paths of a training step against the oracle: padded rows with the reference
//! block-diagonal mask. Padding-free streams (exact and bucketed) and per-layer checkpointing must
//! give the same loss and gradients on ragged micro-batches of naive, sorted and pack plans, with
//! sequence and token loss.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

use super::{LossOptions, gradients, loss_sum};
use crate::data::Tokenized;
use crate::model::{AttentionMode, Llama, LlamaConfig};
use crate::plan::{Item, LossMode, Plan, PlanConfig, Strategy};
use crate::train::inputs::{Counts, Layout, stream_len};
use crate::train::session::CpuBackend;
use crate::util::rng::SplitMix64;

/// Every parameter's gradient, flattened, in visiting order.
struct Grads<'a>(&'a GradientsParams, Vec<f32>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = self.0.get::<B::InnerBackend, D>(param.id).expect("every parameter has a gradient");
        self.1.extend(g.cast(DType::F32).into_data().to_vec::<f32>().unwrap());
    }
}

/// Ragged sequences of 5..=100 tokens, the answer the last third of each.
pub(crate) fn data(n: usize, vocab: usize) -> Vec<Tokenized> {
    let mut rng = SplitMix64::new(7);
    (0..n)
        .map(|_| {
            let len = 5 + (rng.next_u64() % 96) as usize;
            let ids = (0..len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
            let targets = (0..len).map(|t| t >= len - len / 3).collect();
            Tokenized { ids, targets }
        })
        .collect()
}

pub(crate) fn plan_of(tokens: &[Tokenized], strategy: Strategy, loss: LossMode) -> Plan {
    let items: Vec<Item> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| Item {
            id,
            total: t.len() as u32,
            target: t.targets.iter().filter(|&&m| m).count() as u32,
        })
        .collect();
    let cfg = PlanConfig {
        strategy,
        max_tokens: Some(160),
        batch_size: 3,
        accum: 2,
        loss,
        ..PlanConfig::default()
    };
    crate::plan::plan(&items, &cfg).unwrap()
}

fn step_grads(
    model: &Llama<CpuBackend>,
    mcfg: &LlamaConfig,
    plan: &Plan,
    tokens: &[Tokenized],
    opts: LossOptions,
) -> (f64, Vec<f32>) {
    let (losses, grads) =
        gradients(model, mcfg, &plan.steps[0].micro_batches, tokens, 3, opts, &Default::default());
    let mut v = Grads(&grads, Vec::new());
    model.visit(&mut v);
    (loss_sum(losses), v.1)
}

/// Relative L2 distance of two gradient vectors.
pub(crate) fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut err, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        err += ((x - y) as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    (err / norm.max(1e-30)).sqrt()
}

#[test]
fn padding_free_and_checkpointed_steps_equal_the_reference() {
    let mcfg = LlamaConfig::preset("tiny").unwrap();
    let model = Llama::<CpuBackend>::init_seeded(&mcfg, 0, &Default::default());
    let tokens = data(12, mcfg.vocab_size);
    let oracle = LossOptions::new(64, None, AttentionMode::Reference);
    for strategy in [Strategy::Naive, Strategy::Sorted, Strategy::Pack] {
        for loss in [LossMode::Sequence, LossMode::Token] {
            let plan = plan_of(&tokens, strategy, loss);
            let mbs = &plan.steps[0].micro_batches;
            assert!(mbs.len() >= 2, "{strategy:?}: a step of several micro-batches");
            let ragged = mbs.iter().any(|mb| {
                let c = Counts::of(mb, &tokens, Layout::Padded);
                c.useful_tokens < c.padded_tokens
            });
            assert!(ragged, "{strategy:?}: the step has padding to skip");
            let (l0, g0) = step_grads(&model, &mcfg, &plan, &tokens, oracle);
            assert!(l0 > 0.0);
            let variants = [
                ("stream", oracle.with_layout(Layout::Stream { bucket: 1 })),
                (
                    "stream/varlen",
                    LossOptions::new(64, None, AttentionMode::Varlen)
                        .with_layout(Layout::Stream { bucket: 1 }),
                ),
                (
                    "stream:64/varlen",
                    LossOptions::new(64, Some(64), AttentionMode::Varlen)
                        .with_layout(Layout::Stream { bucket: 64 }),
                ),
                (
                    "stream/segmented",
                    LossOptions::new(64, None, AttentionMode::Segmented)
                        .with_layout(Layout::Stream { bucket: 1 }),
                ),
                ("padded/checkpointed", oracle.with_checkpointing(true)),
                (
                    "stream/varlen/checkpointed",
                    LossOptions::new(64, None, AttentionMode::Varlen)
                        .with_layout(Layout::Stream { bucket: 1 })
                        .with_checkpointing(true),
                ),
            ];
            for (name, opts) in variants {
                let (l, g) = step_grads(&model, &mcfg, &plan, &tokens, opts);
                let (dl, dg) = ((l - l0).abs() / l0, rel(&g, &g0));
                assert!(
                    dl <= 1e-5 && dg <= 1e-5,
                    "{strategy:?}/{loss:?} {name}: loss {l} vs {l0}, grads rel {dg}"
                );
            }
        }
    }
}

/// The MLP is recomputed in chunks of tokens: a stream longer than one chunk (several chunks and a
/// ragged last one) still gives the plain backward's gradients.
#[test]
fn checkpointing_across_mlp_chunks_equals_the_plain_backward() {
    let mcfg = LlamaConfig::preset("tiny").unwrap();
    let model = Llama::<CpuBackend>::init_seeded(&mcfg, 1, &Default::default());
    let n = 64 * 2 + 30;
    let mut rng = SplitMix64::new(3);
    let tokens = vec![Tokenized {
        ids: (0..n).map(|_| (rng.next_u64() % mcfg.vocab_size as u64) as u32).collect(),
        targets: (0..n).map(|t| t % 5 == 0).collect(),
    }];
    let items = [Item { id: 0, total: n as u32, target: (n as u32).div_ceil(5) }];
    let cfg = PlanConfig { max_tokens: Some(n as u32), ..PlanConfig::default() };
    let plan = crate::plan::plan(&items, &cfg).unwrap();
    let opts = LossOptions::new(256, None, AttentionMode::Varlen).with_layout(Layout::Stream { bucket: 1 });
    let (l0, g0) = step_grads(&model, &mcfg, &plan, &tokens, opts);
    let input = crate::train::inputs::build(&plan.steps[0].micro_batches[0], &tokens, 3, opts.layout);
    let (loss, grads) =
        crate::train::recompute::gradients_chunked(&model, &mcfg, &input, opts, 64, &Default::default());
    let mut v = Grads(&grads, Vec::new());
    model.visit(&mut v);
    let (l, g) = (loss.into_scalar() as f64, v.1);
    assert!((l - l0).abs() <= 1e-5 * l0 && rel(&g, &g0) <= 1e-5, "loss {l} vs {l0}, grads {}", rel(&g, &g0));
}

#[test]
fn streams_round_up_to_a_few_sizes_never_to_capacity() {
    assert_eq!(stream_len(4193, 1), 4193);
    assert_eq!(stream_len(100, 64), 128);
    assert_eq!(stream_len(10, 64), 64);
    assert_eq!(stream_len(1000, 64), 1024);
    assert_eq!(stream_len(4193, 64), 5120);
    assert_eq!(stream_len(65536, 64), 65536);
    // One short sequence in a 65,536-token row computes its own length, not the row's.
    let tokens = data(1, 300);
    let items = [Item { id: 0, total: tokens[0].len() as u32, target: 1 }];
    let plan = crate::plan::plan(&items, &PlanConfig::default()).unwrap();
    let mb = &plan.steps[0].micro_batches[0];
    assert_eq!(mb.row_len, 65536);
    assert_eq!(Counts::of(mb, &tokens, Layout::Padded).padded_tokens, 65536);
    assert_eq!(Counts::of(mb, &tokens, Layout::Stream { bucket: 1 }).padded_tokens, tokens[0].len() as u64);
}

/// Attention work is Σ n² over the sequences, whatever the layout computes (as `plan` counts
/// it): a packed step of many short sequences does far less of it than one of a long one.
#[test]
fn attention_work_counts_within_each_sequence() {
    let tokens = data(12, 300);
    let items: Vec<Item> =
        tokens.iter().enumerate().map(|(id, t)| Item { id, total: t.len() as u32, target: 1 }).collect();
    let plan = crate::plan::plan(&items, &PlanConfig::default()).unwrap();
    let want: u64 = tokens.iter().map(|t| (t.len() as u64).pow(2)).sum();
    for layout in [Layout::Padded, Layout::Stream { bucket: 64 }] {
        let got: u64 = plan.steps.iter().map(|s| Counts::of_step(s, &tokens, layout).attn_work).sum();
        assert_eq!(got, want, "{layout:?}");
    }
    let packed = (plan.steps.iter().flat_map(|s| &s.micro_batches))
        .map(|mb| Counts::of(mb, &tokens, Layout::Padded))
        .find(|c| c.sequences > 1)
        .expect("a row of several sequences");
    assert!(packed.attn_work < packed.useful_tokens.pow(2), "within sequences, not across: {packed:?}");
}
