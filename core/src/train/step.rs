//! One optimizer step in two halves, which [`super::Trainer`] puts together: the gradients of some
//! micro-batches, then clip + AdamW. Between the halves a data-parallel rank sums the gradients
//! over ranks.

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::cast::ToElement as _;

use super::{grads, inputs};
use crate::data::Tokenized;
use crate::model::loss::weighted_cross_entropy_padded;
use crate::model::{AttentionMode, Llama, LlamaConfig, Precision};
use crate::plan::MicroBatch;

/// How a step computes its loss.
#[derive(Debug, Clone, Copy)]
pub struct LossOptions {
    pub attention: AttentionMode,
    /// Target tokens per vocabulary-projection chunk.
    pub chunk: usize,
    /// Pad sequences (and loss chunks) to a multiple of this (1 = none).
    pub bucket: usize,
    /// Compute format of the forward and backward; weights, gradients and optimizer stay f32.
    pub precision: Precision,
    /// Padded rows or the padding-free stream.
    pub layout: inputs::Layout,
    /// Per-layer activation checkpointing ([`super::recompute`]): keep each decoder layer's input
    /// only, recompute the layer in the backward.
    pub checkpoint: bool,
    /// Where LoRA dropout draws this step's masks from, with each micro-batch's sequences
    /// (`None`: no dropout; see [`crate::model::lora_dropout`]).
    pub dropout_key: Option<u64>,
}

impl LossOptions {
    /// `seq_bucket` as the trainers take it (`None` or 1: no padding); `attention` as asked
    /// (resolved per backend at each step: [`AttentionMode::resolve`]).
    pub fn new(chunk: usize, seq_bucket: Option<usize>, attention: AttentionMode) -> Self {
        Self {
            attention,
            chunk,
            bucket: seq_bucket.unwrap_or(1).max(1),
            precision: Precision::F32,
            layout: inputs::Layout::Padded,
            checkpoint: false,
            dropout_key: None,
        }
    }

    /// The options a trainer of `cfg` uses: its chunk, bucket, attention, precision, layout and
    /// checkpointing.
    pub fn of(cfg: &super::TrainConfig) -> Self {
        Self {
            layout: inputs::Layout::new(cfg.padding_free, cfg.seq_bucket),
            checkpoint: cfg.activation_checkpointing,
            ..Self::new(cfg.loss_chunk, cfg.seq_bucket, cfg.attention).with_precision(cfg.precision)
        }
    }

    /// The same options with the micro-batches laid out as `layout` says.
    pub fn with_layout(self, layout: inputs::Layout) -> Self {
        Self { layout, ..self }
    }

    /// The same options with (or without) per-layer activation checkpointing.
    pub fn with_checkpointing(self, checkpoint: bool) -> Self {
        Self { checkpoint, ..self }
    }

    /// The same options computing in `precision` (see [`crate::model::precision`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }
}

/// The shapes a micro-batch's kernels see under `opts`: rows × tokens of its input, and its loss
/// targets as the loss pads them ([`crate::model::packed::bucketed_len`]). Two micro-batches of
/// one class run the same kernels: what [`super::Trainer::warm_up`] runs once each.
pub fn shape_class(mb: &MicroBatch, tokens: &[Tokenized], opts: LossOptions) -> (usize, usize, usize) {
    let input = inputs::build(mb, tokens, 0, opts.layout);
    let targets = input.weights.iter().filter(|&&w| w != 0.0).count();
    // As the loss pads them; none at all is its own class (the loss then runs no gather).
    let padded = if targets == 0 { 0 } else { crate::model::packed::bucketed_len(targets, opts.bucket) };
    (input.rows.rows, input.rows.row_len, padded)
}

/// Forward and backward over `micro_batches`, with the plan's loss weights: each micro-batch's
/// loss as a one-element tensor (weights are global, so their sum is this share of the step's
/// loss; nothing is read back: [`loss_sum`] does that) and the summed gradients. A micro-batch
/// whose weights are all zero (every answer truncated away) is skipped: its gradient is zero.
pub fn gradients<'a, B: AutodiffBackend>(
    model: &Llama<B>,
    mcfg: &LlamaConfig,
    micro_batches: impl IntoIterator<Item = &'a MicroBatch>,
    tokens: &[Tokenized],
    pad_id: u32,
    opts: LossOptions,
    device: &B::Device,
) -> (Vec<Tensor<B::InnerBackend, 1>>, GradientsParams) {
    let mut acc = GradientsAccumulator::<Llama<B>>::new();
    let mut losses = Vec::new();
    for mb in micro_batches {
        // Dropout masks are a function of the step and the micro-batch's sequences only: the same
        // on one device with accumulation as on several devices, and on a resumed run.
        let _dropout = opts.dropout_key.map(|k| {
            let ids = mb.rows.iter().flat_map(|r| &r.ids);
            let key = ids.fold(k, |h, &id| crate::util::rng::SplitMix64::derive(h, id as u64).next_u64());
            crate::model::lora_dropout::scope(key)
        });
        let input = inputs::build(mb, tokens, pad_id, opts.layout);
        if input.weights.iter().all(|&w| w == 0.0) {
            continue;
        }
        if opts.checkpoint {
            let (loss, grads) = super::recompute::gradients(model, mcfg, &input, opts, device);
            losses.push(loss);
            acc.accumulate(model, grads);
            continue;
        }
        // The forward runs on this view; its gradients land on `model`'s (f32) parameters. One
        // view per micro-batch: each backward consumes the graph it walks, the casts included.
        let compute = model.for_compute(opts.precision);
        let mode = opts.attention.resolve::<B>(opts.bucket);
        let hidden = compute.hidden_with(mcfg, &input.rows, mode, device);
        let l = weighted_cross_entropy_padded(
            &compute,
            hidden,
            &input.labels,
            &input.weights,
            opts.chunk,
            opts.bucket,
        );
        losses.push(l.clone().inner());
        acc.accumulate(model, GradientsParams::from_grads(l.backward(), model));
    }
    (losses, acc.grads())
}

/// The losses of [`gradients`] read back and added up, in order.
pub fn loss_sum<B: burn::tensor::backend::Backend>(losses: Vec<Tensor<B, 1>>) -> f64 {
    losses.into_iter().map(|l| l.into_scalar().to_f64()).sum()
}

/// Global-norm clip (as `torch.nn.utils.clip_grad_norm_`, when `clip` is set) and one optimizer
/// step at `lr`. Returns the updated model and the gradient norm before clipping.
pub fn update<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    model: Llama<B>,
    optim: &mut O,
    mut grads: GradientsParams,
    clip: Option<f64>,
    lr: f64,
) -> (Llama<B>, f64) {
    let norm = match clip {
        Some(max) => grads::clip_global_norm::<B, _>(&model, &mut grads, max),
        None => grads::global_norm::<B, _>(&model, &grads),
    };
    (optim.step(lr, model, grads), norm)
}

/// [`update`] without reading anything back: the norm and the clip factor stay on the device;
/// the norm (before clipping) is returned as a one-element tensor.
pub fn update_deferred<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    model: Llama<B>,
    optim: &mut O,
    mut grads: GradientsParams,
    clip: Option<f64>,
    lr: f64,
) -> (Llama<B>, Tensor<B::InnerBackend, 1>) {
    let norm = grads::global_norm_tensor::<B, _>(&model, &grads);
    if let Some(max) = clip {
        grads::scale_by::<B, _>(&model, &mut grads, grads::clip_factor(norm.clone(), max));
    }
    (optim.step(lr, model, grads), norm)
}

#[cfg(all(test, feature = "native"))]
#[path = "step_tests.rs"]
pub(crate) mod tests;
