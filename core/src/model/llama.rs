//! The Llama-family decoder (Llama, Qwen2, Mistral), top-down as nanoGPT's `model.py`: norm → MLP
//! → block → model, and the one forward pass that serves training, prefill and decode. Attention
//! (`attention.rs`), packed rows (`packed.rs`), rotary (`rope.rs`), the KV cache (`kv_cache.rs`)
//! and fresh weights (`init.rs`) have files of their own. Generic over the Burn backend.
//!
//! Inputs are *packed rows*: several sequences laid end to end in one row of `L` tokens
//! ([`PackedRows`]). Attention is causal within each sequence and zero across sequences, positions
//! restart at each sequence, so a packed row computes exactly what its sequences would compute one
//! per row (tests compare every attention mode with the reference mask).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::attention::{Attend, Attention, AttentionMode, AttnContext};
use super::config::LlamaConfig;
use super::kv_cache::{KvCache, cached_mask};
use super::lora::Proj;
use super::packed::PackedRows;
use super::rope::Rotary;

/// Root-mean-square layer norm: `x / sqrt(mean(x²) + eps) · weight`. The statistics are taken
/// in f32 whatever the compute precision; the result goes back to `x`'s dtype before the weight,
/// as in transformers' `LlamaRMSNorm`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → same
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let rms = (x.clone().square().mean_dim(2) + self.eps).sqrt(); // [b, l, 1]
        (x / rms).cast(dtype) * self.weight.val().unsqueeze::<3>()
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Proj<B>,
    pub up_proj: Proj<B>,
    pub down_proj: Proj<B>,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → same
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

/// Pre-norm decoder block: `h = x + attn(norm(x)); out = h + mlp(norm(h))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → same
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, attend: Attend<'_, B>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rotary, attend);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// The decoder: embeddings, blocks, final norm and the language-model head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when tied to the embeddings.
    pub lm_head: Option<Linear<B>>,
    pub sliding_window: Option<usize>,
}

/// The tokens of one forward pass.
pub enum Input<'a, B: Backend> {
    /// Packed rows of whole sequences (training, scoring), attention computed as `mode` says.
    Packed { rows: &'a PackedRows, mode: AttentionMode },
    /// The next tokens of one sequence after the `cache.len` it holds (prefill: all of the prompt;
    /// decode: one token). The cache grows by them.
    Next { tokens: &'a [u32], cache: &'a mut KvCache<B> },
}

impl<B: Backend> Llama<B> {
    /// The one forward pass (training, prefill and decode): embeddings → blocks → final norm.
    ///
    /// # Shapes
    /// - `Packed`: output `[rows, row_len, hidden]`, every token
    /// - `Next`: output `[1, 1, hidden]`, the last new token only (all generation needs)
    pub fn forward(&self, cfg: &LlamaConfig, input: Input<'_, B>, device: &B::Device) -> Tensor<B, 3> {
        let ids = |t: &[u32], shape: [usize; 2]| {
            let ids: Vec<i64> = t.iter().map(|&t| t as i64).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), device)
        };
        match input {
            Input::Packed { rows, mode } => {
                let tokens = ids(&rows.tokens, [rows.rows, rows.row_len]);
                let rotary = Rotary::new(cfg, rows, device);
                let ctx = AttnContext::new(mode, rows, self.sliding_window, device);
                let mut x = self.embed_tokens.forward(tokens); // [b, l, d]
                for layer in &self.layers {
                    x = layer.forward(x, &rotary, Attend::Packed(&ctx));
                }
                self.norm.forward(x)
            }
            Input::Next { tokens, cache } => {
                let (start, n) = (cache.len, tokens.len());
                assert!(
                    n > 0 && start + n <= cache.capacity,
                    "cache of {} holds {start} + {n}",
                    cache.capacity
                );
                // Bucketed counts (KvCache::bucket): `q` queries, padded with token 0 after the
                // real ones, over `keys` cached positions; only the last real token is returned.
                let q = cache.queries(n);
                let keys = cache.keys(start + q);
                let mut padded = tokens.to_vec();
                padded.resize(q, 0);
                let positions: Vec<u32> = (start as u32..(start + q) as u32).collect();
                let rotary = Rotary::at(cfg, &positions, [1, q], device);
                let mask = cached_mask::<B>(start, q, keys, self.sliding_window, device);
                let mut x = self.embed_tokens.forward(ids(&padded, [1, q])); // [1, q, d]
                for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    let attend = Attend::Cached { cache: c, start, keys, mask: mask.as_ref() };
                    x = layer.forward(x, &rotary, attend);
                }
                cache.len += n;
                self.norm.forward(x.narrow(1, n - 1, 1))
            }
        }
    }

    /// Final hidden states of packed rows, attention by the default mode.
    ///
    /// # Shapes
    /// - output: `[rows, row_len, hidden]`
    pub fn hidden(&self, cfg: &LlamaConfig, rows: &PackedRows, device: &B::Device) -> Tensor<B, 3> {
        self.hidden_with(cfg, rows, AttentionMode::default(), device)
    }

    /// [`Self::hidden`] with a chosen attention implementation.
    pub fn hidden_with(
        &self,
        cfg: &LlamaConfig,
        rows: &PackedRows,
        mode: AttentionMode,
        device: &B::Device,
    ) -> Tensor<B, 3> {
        self.forward(cfg, Input::Packed { rows, mode }, device)
    }

    /// The head as one `[hidden, vocab]` matrix (`head(x) = x · W`), where it has no bias: for
    /// the fused loss.
    pub fn head_weight(&self) -> Option<Tensor<B, 2>> {
        match &self.lm_head {
            Some(h) if h.bias.is_none() => Some(h.weight.val()),
            Some(_) => None,
            None => Some(self.embed_tokens.weight.val().transpose()),
        }
    }

    /// Language-model head on any hidden states.
    ///
    /// # Shapes
    /// - hidden: `[n, hidden]` → `[n, vocab]`
    pub fn head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(h) => h.forward(hidden),
            None => hidden.matmul(self.embed_tokens.weight.val().transpose()),
        }
    }

    /// Feeds `tokens` (the next tokens of one sequence) through the model with `cache`, which grows
    /// by their length, and returns the logits of the last one.
    ///
    /// # Shapes
    /// - output: `[vocab]`
    pub fn forward_cached(
        &self,
        cfg: &LlamaConfig,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let last = self.forward(cfg, Input::Next { tokens, cache }, device).reshape([1, cfg.hidden_size]);
        self.head(last).reshape([cfg.vocab_size])
    }

    /// Logits of packed rows: `[rows, row_len, vocab]`. Materialises the whole vocab projection;
    /// training uses [`super::loss::weighted_cross_entropy`] instead.
    pub fn logits(&self, cfg: &LlamaConfig, rows: &PackedRows, device: &B::Device) -> Tensor<B, 3> {
        let h = self.hidden(cfg, rows, device);
        let [b, l, d] = h.dims();
        self.head(h.reshape([b * l, d])).reshape([b, l, cfg.vocab_size])
    }
}
