//! Per-layer activation checkpointing: the memory of a long sequence's backward pass bounded by
//! one decoder layer, the standard for long-context SFT.
//!
//! A plain backward keeps every activation of every layer (for a d = 512, 4-layer model, ~200 KB
//! per token). Here the forward runs without a graph and keeps only each layer's input; the
//! backward then walks the layers top-down, rebuilding one layer's graph at a time from its saved
//! input and pulling the gradient through it as a vector–Jacobian product:
//!
//! ```text
//!   forward (no graph):  x₀=embed ─▶ x₁ ─▶ … ─▶ x_L          keep x₀ … x_{L-1} (d floats/token each)
//!   loss graph:          x_L ─▶ norm ─▶ weighted CE          backward → dx_L, dNorm, dHead
//!   layer l = L-1 … 0:   h = x_l + attn(norm(x_l))           one graph over the stream
//!                        out_c = h_c + mlp(norm(h_c))        per chunk c of tokens: Σ out_c·dx_c
//!                                                            backward → dh_c, dMLP
//!                        Σ h·dh  backward → dx_l, dAttn
//!   embeddings:          Σ embed(tokens)·dx₀ backward → dEmbed
//! ```
//!
//! The MLP (the widest activations: 3 × intermediate per token) is rebuilt in chunks of
//! [`MLP_CHUNK`] tokens, exact because it acts on each token alone; attention needs the whole
//! sequence and is rebuilt once per layer. The working set is thus the checkpoints, one layer's
//! attention graph and one MLP chunk. The loss and gradients equal the plain backward's (tests:
//! `step::tests`); the cost is one more forward pass.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use super::inputs::MicroBatchInput;
use super::step::LossOptions;
use crate::model::attention::{Attend, AttnContext};
use crate::model::llama::Block;
use crate::model::loss::weighted_cross_entropy_padded;
use crate::model::precision::compute_view;
use crate::model::rope::Rotary;
use crate::model::{Llama, LlamaConfig};

/// Tokens per MLP recompute chunk (one chunk's graph is alive at a time).
pub const MLP_CHUNK: usize = 4096;

/// The loss (not read back) and the parameter gradients of one micro-batch, computed with
/// per-layer checkpoints. Same result as the plain forward + backward in `step::gradients`.
pub fn gradients<B: AutodiffBackend>(
    model: &Llama<B>,
    mcfg: &LlamaConfig,
    input: &MicroBatchInput,
    opts: LossOptions,
    device: &B::Device,
) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
    gradients_chunked(model, mcfg, input, opts, MLP_CHUNK, device)
}

/// [`gradients`] with the MLP recomputed in chunks of `mlp_chunk` tokens.
pub fn gradients_chunked<B: AutodiffBackend>(
    model: &Llama<B>,
    mcfg: &LlamaConfig,
    input: &MicroBatchInput,
    opts: LossOptions,
    mlp_chunk: usize,
    device: &B::Device,
) -> (Tensor<B::InnerBackend, 1>, GradientsParams) {
    let rows = &input.rows;
    let mode = opts.attention.resolve::<B>(opts.bucket);
    let ids = || {
        let ids: Vec<i64> = rows.tokens.iter().map(|&t| t as i64).collect();
        TensorData::new(ids, [rows.rows, rows.row_len])
    };

    // Forward without a graph, keeping each layer's input.
    let inner = model.valid().for_compute(opts.precision);
    let (rotary, ctx) = context::<B::InnerBackend>(mcfg, input, mode, model.sliding_window, device);
    let mut x = inner.embed_tokens.forward(Tensor::<B::InnerBackend, 2, Int>::from_data(ids(), device));
    let mut saved = Vec::with_capacity(inner.layers.len());
    for layer in &inner.layers {
        saved.push(x.clone());
        x = block_chunked(layer, x, &rotary, &ctx, mlp_chunk);
    }
    drop((rotary, ctx, inner));

    // The loss from the last layer's output.
    let mut acc = GradientsAccumulator::<Llama<B>>::new();
    let top = Tensor::<B, 3>::from_inner(x).require_grad();
    let head = model.for_compute(opts.precision);
    let loss = weighted_cross_entropy_padded(
        &head,
        head.norm.forward(top.clone()),
        &input.labels,
        &input.weights,
        opts.chunk,
        opts.bucket,
    );
    let value = loss.clone().inner();
    let grads = loss.backward();
    let mut dx = top.grad(&grads).expect("the loss depends on the last layer's output");
    acc.accumulate(model, GradientsParams::from_grads(grads, model));
    drop(head);

    // The layers, top-down.
    let (rotary, ctx) = context::<B>(mcfg, input, mode, model.sliding_window, device);
    for (l, x) in saved.into_iter().enumerate().rev() {
        let block = &model.layers[l];
        let xl = Tensor::<B, 3>::from_inner(x).require_grad();
        let attn = compute_view(&block.self_attn, opts.precision);
        let norm = compute_view(&block.input_layernorm, opts.precision);
        let h = xl.clone() + attn.forward(norm.forward(xl.clone()), &rotary, Attend::Packed(&ctx));
        let h_value = h.clone().inner();
        let tokens = h_value.dims()[1];
        let mut dh = Vec::with_capacity(tokens.div_ceil(mlp_chunk));
        for start in (0..tokens).step_by(mlp_chunk) {
            let n = mlp_chunk.min(tokens - start);
            let _offset = crate::model::lora_dropout::at_offset(start);
            let hc = Tensor::<B, 3>::from_inner(h_value.clone().narrow(1, start, n)).require_grad();
            let mlp = compute_view(&block.mlp, opts.precision);
            let post = compute_view(&block.post_attention_layernorm, opts.precision);
            let out = hc.clone() + mlp.forward(post.forward(hc.clone()));
            let g = vjp(out, dx.clone().narrow(1, start, n));
            dh.push(hc.grad(&g).expect("the chunk's output depends on its input"));
            acc.accumulate(model, GradientsParams::from_grads(g, model));
        }
        let g = vjp(h, Tensor::cat(dh, 1));
        dx = xl.grad(&g).expect("a layer's output depends on its input");
        acc.accumulate(model, GradientsParams::from_grads(g, model));
    }

    // The embeddings, unless frozen (LoRA): then nothing below the first layer needs a gradient.
    if model.embed_tokens.weight.val().is_require_grad() {
        let embed = compute_view(&model.embed_tokens, opts.precision);
        let g = vjp(embed.forward(Tensor::<B, 2, Int>::from_data(ids(), device)), dx);
        acc.accumulate(model, GradientsParams::from_grads(g, model));
    }
    (value, acc.grads())
}

/// Backward of `Σ out · upstream`: the gradients `out`'s graph gets from an upstream gradient
/// (a vector–Jacobian product).
fn vjp<B: AutodiffBackend>(out: Tensor<B, 3>, upstream: Tensor<B::InnerBackend, 3>) -> B::Gradients {
    let upstream = Tensor::<B, 3>::from_inner(upstream.cast(out.dtype()));
    (out * upstream).sum().backward()
}

/// Rotary tables and the attention layout of the micro-batch, on backend `C`.
fn context<C: Backend>(
    mcfg: &LlamaConfig,
    input: &MicroBatchInput,
    mode: crate::model::AttentionMode,
    window: Option<usize>,
    device: &C::Device,
) -> (Rotary<C>, AttnContext<C>) {
    (Rotary::new(mcfg, &input.rows, device), AttnContext::new(mode, &input.rows, window, device))
}

/// One decoder block without a graph, its MLP in chunks of `chunk` tokens so that the forward's
/// transient memory is bounded too.
fn block_chunked<C: Backend>(
    block: &Block<C>,
    x: Tensor<C, 3>,
    rotary: &Rotary<C>,
    ctx: &AttnContext<C>,
    chunk: usize,
) -> Tensor<C, 3> {
    let h =
        x.clone() + block.self_attn.forward(block.input_layernorm.forward(x), rotary, Attend::Packed(ctx));
    let tokens = h.dims()[1];
    if tokens <= chunk {
        return h.clone() + block.mlp.forward(block.post_attention_layernorm.forward(h));
    }
    let parts = (0..tokens)
        .step_by(chunk)
        .map(|start| {
            let _offset = crate::model::lora_dropout::at_offset(start);
            let hc = h.clone().narrow(1, start, chunk.min(tokens - start));
            hc.clone() + block.mlp.forward(block.post_attention_layernorm.forward(hc))
        })
        .collect();
    Tensor::cat(parts, 1)
}
