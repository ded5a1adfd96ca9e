//! The Llama-family decoder (Llama, Qwen2, Mistral), in dependency order: norm → rotary →
//! attention → MLP → block → model. Generic over the Burn backend.
//!
//! Inputs are *packed rows*: several sequences laid end to end in one row of `L` tokens, described
//! by [`PackedRows`]. Attention is causal within each sequence and zero across sequences, positions
//! restart at each sequence, so a packed row computes exactly what its sequences would compute one
//! per row. This file holds the reference path: an explicit block-diagonal mask, obviously right and
//! O(L²) in memory; the varlen kernel (kernels crate) is validated against it.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use super::config::LlamaConfig;
use super::rope;

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

/// Packed rows on the host: which token belongs to which sequence. Built once per micro-batch and
/// turned into the tensors the model needs (token ids, rotary cos/sin, attention mask).
#[derive(Debug, Clone)]
pub struct PackedRows {
    /// Token ids, `rows × row_len`, padding included.
    pub tokens: Vec<u32>,
    /// Per row, sequence offsets as in the plan: `[0, n₁, n₁+n₂, …]`. Tokens after the last offset
    /// are padding.
    pub cu_seqlens: Vec<Vec<u32>>,
    pub rows: usize,
    pub row_len: usize,
}

impl PackedRows {
    /// Position of every token: 0, 1, … restarting at each sequence (padding counts on as its own
    /// segment so its positions stay small; its outputs carry no loss).
    pub fn positions(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows * self.row_len);
        for cu in &self.cu_seqlens {
            let start = out.len();
            for w in cu.windows(2) {
                out.extend(0..w[1] - w[0]);
            }
            let used = out.len() - start;
            out.extend(0..(self.row_len - used) as u32);
        }
        out
    }

    /// Segment id of every token (sequence index within its row; padding is one more segment).
    pub fn segments(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows * self.row_len);
        for cu in &self.cu_seqlens {
            for (k, w) in cu.windows(2).enumerate() {
                out.extend(std::iter::repeat_n(k as u32, (w[1] - w[0]) as usize));
            }
            let used = *cu.last().unwrap_or(&0) as usize;
            out.extend(std::iter::repeat_n((cu.len() - 1) as u32, self.row_len - used));
        }
        out
    }

    /// The reference attention mask, `true` = may NOT attend. Row-major `[rows, row_len, row_len]`.
    ///
    /// Three sequences of 3, 2 and 1 tokens (a, b, c) in a row of 6, `·` = attends, `x` = masked:
    ///
    /// ```text
    ///        a0 a1 a2 b0 b1 c0
    ///   a0    ·  x  x  x  x  x
    ///   a1    ·  ·  x  x  x  x
    ///   a2    ·  ·  ·  x  x  x
    ///   b0    x  x  x  ·  x  x
    ///   b1    x  x  x  ·  ·  x
    ///   c0    x  x  x  x  x  ·
    /// ```
    ///
    /// With a sliding window w, a query also ignores keys w or more positions back.
    pub fn mask(&self, window: Option<usize>) -> Vec<bool> {
        let seg = self.segments();
        let l = self.row_len;
        let mut m = vec![true; self.rows * l * l];
        for r in 0..self.rows {
            let s = &seg[r * l..(r + 1) * l];
            for q in 0..l {
                for k in 0..=q {
                    let in_window = window.is_none_or(|w| q - k < w);
                    if s[q] == s[k] && in_window {
                        m[(r * l + q) * l + k] = false;
                    }
                }
            }
        }
        m
    }
}

/// Rotary tables gathered at each token's position.
pub struct Rotary<B: Backend> {
    /// `[batch, 1, seq, head_dim]`
    pub cos: Tensor<B, 4>,
    /// `[batch, 1, seq, head_dim]`
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rotary<B> {
    pub fn new(cfg: &LlamaConfig, rows: &PackedRows, device: &B::Device) -> Self {
        Self::at(cfg, &rows.positions(), [rows.rows, rows.row_len], device)
    }

    /// Tables at explicit positions, laid out as `[batch, seq]` (generation: the new tokens of a
    /// cached sequence start at the cache length, not at 0).
    pub fn at(cfg: &LlamaConfig, positions: &[u32], [batch, seq]: [usize; 2], device: &B::Device) -> Self {
        let max_pos = positions.iter().copied().max().unwrap_or(0) as usize;
        let (inv, scale) = rope::inv_freq(cfg, max_pos);
        let (cos_t, sin_t) = rope::tables(&inv, scale, max_pos + 1);
        let hd = cfg.head_dim;
        let gather = |t: &[f32]| -> Vec<f32> {
            positions
                .iter()
                .flat_map(|&p| t[p as usize * hd..(p as usize + 1) * hd].iter().copied())
                .collect()
        };
        let shape = [batch, 1, seq, hd];
        Self {
            cos: Tensor::from_data(TensorData::new(gather(&cos_t), shape), device),
            sin: Tensor::from_data(TensorData::new(gather(&sin_t), shape), device),
        }
    }

    /// `x·cos + rotate_half(x)·sin`, rotate_half(x) = `[-x₂, x₁]` over the two halves of head_dim.
    /// The tables are computed in f32 and used in `x`'s dtype (as transformers does).
    ///
    /// # Shapes
    /// - x: `[batch, heads, seq, head_dim]` → same
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let dtype = x.dtype();
        x * self.cos.clone().cast(dtype) + rotated * self.sin.clone().cast(dtype)
    }
}

/// How attention over packed rows is computed. All give the same result (tests compare them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionMode {
    /// [`Self::Varlen`] where the backend has the kernel (CPU, wgpu, CUDA), else
    /// [`Self::Segmented`] (or [`Self::Bucketed`] when sequences are bucketed).
    #[default]
    Auto,
    /// One dense `[row_len, row_len]` score matrix per head with an explicit block-diagonal mask:
    /// obviously right, O(row_len²) time and memory. The oracle.
    Reference,
    /// Each sequence attends within its own block only: dense causal attention per sequence, in
    /// plain tensor ops. O(Σ nᵢ²) — what packing should cost — without a custom kernel, but each
    /// sequence's `[n, n]` scores still exist (and are kept for the backward).
    Segmented,
    /// [`Self::Segmented`] with each sequence zero-padded to a multiple of this many tokens: the
    /// same result (padding keys come after every real query, so the causal mask hides them; padded
    /// queries are dropped), with far fewer distinct tensor shapes — JIT backends (CUDA, wgpu)
    /// compile and autotune kernels per shape.
    Bucketed(usize),
    /// The varlen flash-attention kernel (`longalign-kernels`: CubeCL on wgpu and CUDA, a
    /// rayon host kernel on the CPU backend): tiles that never cross a sequence, online softmax,
    /// O(Σ nᵢ²) work and O(row_len) memory, forward and backward. On a backend without it
    /// (e.g. the browser build) it falls back to [`Self::Segmented`] (the CLI refuses
    /// `--attention varlen` there instead).
    Varlen,
}

impl AttentionMode {
    /// Whether backend `B` runs the varlen kernel.
    pub fn kernel_supported<B: Backend>() -> bool {
        #[cfg(feature = "native")]
        return longalign_kernels::supported::<B>();
        #[cfg(not(feature = "native"))]
        false
    }

    /// The concrete implementation on backend `B` with sequences padded to multiples of `bucket`
    /// (1 = none) where the plain tensor path is used.
    pub fn resolve<B: Backend>(self, bucket: usize) -> Self {
        let plain = if bucket > 1 { Self::Bucketed(bucket) } else { Self::Segmented };
        match self {
            Self::Auto | Self::Varlen if Self::kernel_supported::<B>() => Self::Varlen,
            Self::Auto | Self::Varlen => plain,
            Self::Segmented => plain,
            m => m,
        }
    }
}

impl std::fmt::Display for AttentionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Reference => f.write_str("reference"),
            Self::Segmented => f.write_str("segmented"),
            Self::Bucketed(b) => write!(f, "bucketed:{b}"),
            Self::Varlen => f.write_str("varlen"),
        }
    }
}

impl std::str::FromStr for AttentionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "reference" => Ok(Self::Reference),
            "segmented" => Ok(Self::Segmented),
            "varlen" => Ok(Self::Varlen),
            _ => match s.strip_prefix("bucketed:").map(str::parse::<usize>) {
                Some(Ok(b)) if b >= 1 => Ok(Self::Bucketed(b)),
                _ => Err(format!(
                    "unknown attention {s:?} (expected auto, varlen, segmented, bucketed:N or reference)"
                )),
            },
        }
    }
}

/// What attention needs to know about the rows, prepared once per forward pass.
pub enum AttnContext<B: Backend> {
    /// `[rows, 1, row_len, row_len]`, true = masked.
    Reference(Tensor<B, 4, Bool>),
    /// Where the sequences are, for the kernel.
    #[cfg(feature = "native")]
    Varlen(longalign_kernels::VarlenLayout),
    Segmented {
        /// Per row, the (start, length) of each sequence; tokens past the last are padding.
        segments: Vec<Vec<(usize, usize)>>,
        row_len: usize,
        /// Sequences are padded to a multiple of this (1 = not at all).
        bucket: usize,
        /// Causal (and sliding-window) mask per sequence length, `[1, 1, n, n]`.
        masks: std::collections::HashMap<usize, Tensor<B, 4, Bool>>,
    },
}

impl<B: Backend> AttnContext<B> {
    pub fn new(mode: AttentionMode, rows: &PackedRows, window: Option<usize>, device: &B::Device) -> Self {
        let (b, l) = (rows.rows, rows.row_len);
        match mode.resolve::<B>(1) {
            #[cfg(feature = "native")]
            AttentionMode::Varlen => {
                Self::Varlen(longalign_kernels::VarlenLayout::from_cu_seqlens(l, &rows.cu_seqlens, window))
            }
            AttentionMode::Reference => {
                Self::Reference(Tensor::from_data(TensorData::new(rows.mask(window), [b, 1, l, l]), device))
            }
            _ => {
                let bucket = match mode {
                    AttentionMode::Bucketed(b) => b.max(1),
                    _ => 1,
                };
                let segments: Vec<Vec<(usize, usize)>> = rows
                    .cu_seqlens
                    .iter()
                    .map(|cu| cu.windows(2).map(|w| (w[0] as usize, (w[1] - w[0]) as usize)).collect())
                    .collect();
                let mut masks = std::collections::HashMap::new();
                for &(_, n) in segments.iter().flatten() {
                    let n = n.div_ceil(bucket) * bucket;
                    masks.entry(n).or_insert_with(|| match window {
                        // Plain causal: built on the device, not as n² host booleans (4 GB at 64k).
                        None => Tensor::<B, 2, Bool>::tril_mask([n, n], 0, device).reshape([1, 1, n, n]),
                        Some(_) => {
                            let one = PackedRows {
                                tokens: vec![0; n],
                                cu_seqlens: vec![vec![0, n as u32]],
                                rows: 1,
                                row_len: n,
                            };
                            Tensor::from_data(TensorData::new(one.mask(window), [1, 1, n, n]), device)
                        }
                    });
                }
                Self::Segmented { segments, row_len: l, bucket, masks }
            }
        }
    }
}

/// Softmax attention of one block: `softmax(q·kᵀ/√d + mask)·v`, the softmax in f32.
///
/// # Shapes
/// - q, k, v: `[b, heads, n, head_dim]`; mask `[b or 1, 1, n, n]` → `[b, heads, n, head_dim]`
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Tensor<B, 4, Bool>,
) -> Tensor<B, 4> {
    let [b, h, n, hd] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()); // [b, h, n, n]
    let scores = scores.mask_fill(mask.expand([b, h, n, n]), f32::NEG_INFINITY);
    let dtype = v.dtype();
    softmax(scores.cast(DType::F32), 3).cast(dtype).matmul(v)
}

/// Keys and values of the tokens a sequence has seen so far, for one layer: preallocated to the
/// sequence's final length so each decoding step writes its slice instead of copying the cache.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// `[1, kv_heads, capacity, head_dim]`, after rotary, before the GQA repeat.
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
}

/// The whole model's cache and how many positions it holds.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerCache<B>>,
    pub len: usize,
    pub capacity: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(cfg: &LlamaConfig, capacity: usize, device: &B::Device) -> Self {
        let shape = [1, cfg.num_key_value_heads, capacity, cfg.head_dim];
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| LayerCache { k: Tensor::zeros(shape, device), v: Tensor::zeros(shape, device) })
            .collect();
        Self { layers, len: 0, capacity }
    }
}

/// Which cached keys `n` new queries at positions `start..start+n` may see, `true` = masked:
/// causal, and within the sliding window if any. `None` when nothing is masked (one query, no
/// window), so decoding builds no mask at all.
///
/// # Shapes
/// - output: `[1, 1, n, start + n]`
fn cached_mask<B: Backend>(
    start: usize,
    n: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    let t = start + n;
    match window {
        None if n == 1 => None,
        // Prefill: plain causal, built on the device.
        None if start == 0 => Some(Tensor::<B, 2, Bool>::tril_mask([n, n], 0, device).reshape([1, 1, n, n])),
        _ => {
            let mut m = vec![true; n * t];
            for i in 0..n {
                let q = start + i;
                for k in 0..=q {
                    if window.is_none_or(|w| q - k < w) {
                        m[i * t + k] = false;
                    }
                }
            }
            Some(Tensor::from_data(TensorData::new(m, [1, 1, n, t]), device))
        }
    }
}

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// Queries, keys and values with rotary applied to q and k.
    ///
    /// # Shapes
    /// - x: `[b, l, hidden]` → q `[b, heads, l, head_dim]`, k and v `[b, kv_heads, l, head_dim]`
    fn qkv(&self, x: Tensor<B, 3>, rotary: &Rotary<B>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, l, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x.clone()).reshape([b, l, h, hd]).swap_dims(1, 2);
        let k = self.k_proj.forward(x.clone()).reshape([b, l, kv, hd]).swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([b, l, kv, hd]).swap_dims(1, 2);
        (rotary.apply(q), rotary.apply(k), v)
    }

    /// Each KV head serves heads / kv_heads query heads: repeat it so shapes line up with q.
    ///
    /// # Shapes
    /// - t: `[b, kv_heads, l, head_dim]` → `[b, heads, l, head_dim]`
    fn repeat_kv(&self, t: Tensor<B, 4>) -> Tensor<B, 4> {
        let (h, kv) = (self.n_heads, self.n_kv_heads);
        if h == kv {
            return t;
        }
        let [b, _, l, hd] = t.dims();
        t.reshape([b, kv, 1, l, hd]).repeat_dim(2, h / kv).reshape([b, h, l, hd])
    }

    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    /// - mask: `[batch, 1, seq, seq]`, true = masked
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, ctx: &AttnContext<B>) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let (h, hd) = (self.n_heads, self.head_dim);
        let (q, k, v) = self.qkv(x, rotary); // [b, h, l, hd], [b, kv, l, hd] ×2
        #[cfg(feature = "native")]
        let (q, k, v) = match ctx {
            // The kernel takes k and v per KV head (no repeat) and returns [b, h, l, hd].
            AttnContext::Varlen(layout) => match longalign_kernels::try_varlen_attention(q, k, v, layout) {
                Ok(out) => {
                    let out = out.expect("the layout comes from the rows the tensors were built from");
                    return self.o_proj.forward(out.swap_dims(1, 2).reshape([b, l, h * hd]));
                }
                Err([q, k, v]) => (q, k, v),
            },
            _ => (q, k, v),
        };
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let out = match ctx {
            #[cfg(feature = "native")]
            AttnContext::Varlen(_) => {
                unreachable!("AttnContext::new picks Varlen only where the kernel runs")
            }
            AttnContext::Reference(mask) => attend(q, k, v, mask.clone()), // [b, h, l, hd]
            AttnContext::Segmented { segments, row_len, bucket, masks } => {
                let mut rows = Vec::with_capacity(b);
                for (r, segs) in segments.iter().enumerate() {
                    let (qr, kr, vr) =
                        (q.clone().narrow(0, r, 1), k.clone().narrow(0, r, 1), v.clone().narrow(0, r, 1));
                    let mut parts = Vec::with_capacity(segs.len() + 1);
                    for &(start, n) in segs {
                        let nb = n.div_ceil(*bucket) * bucket;
                        let part = |t: &Tensor<B, 4>| {
                            let t = t.clone().narrow(2, start, n);
                            if nb == n {
                                return t;
                            }
                            // Zero keys/values/queries after the sequence: causally invisible.
                            let pad = Tensor::zeros([1, h, nb - n, hd], (&qr.device(), qr.dtype()));
                            Tensor::cat(vec![t, pad], 2)
                        };
                        let out = attend(part(&qr), part(&kr), part(&vr), masks[&nb].clone()); // [1, h, nb, hd]
                        parts.push(if nb == n { out } else { out.narrow(2, 0, n) });
                    }
                    // Padding attends to nothing; its outputs carry no loss.
                    let used: usize = segs.iter().map(|s| s.1).sum();
                    if used < *row_len {
                        parts.push(Tensor::zeros([1, h, row_len - used, hd], (&qr.device(), qr.dtype())));
                    }
                    rows.push(Tensor::cat(parts, 2));
                }
                Tensor::cat(rows, 0)
            }
        };
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, l, h * hd])) // [b, l, h·hd] → [b, l, d]
    }
}

impl<B: Backend> Attention<B> {
    /// Attention of `n` new tokens of one sequence over its cache plus themselves; appends their
    /// keys and values to the cache. Same maths as [`Self::forward`] on the whole sequence.
    ///
    /// # Shapes
    /// - x: `[1, n, hidden]` → `[1, n, hidden]`
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rotary: &Rotary<B>,
        cache: &mut LayerCache<B>,
        start: usize,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let [_, n, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let (q, k, v) = self.qkv(x, rotary); // [1, h, n, hd], [1, kv, n, hd] ×2
        let t = start + n;
        let range = [0..1, 0..kv, start..t, 0..hd];
        cache.k = cache.k.clone().slice_assign(range.clone(), k);
        cache.v = cache.v.clone().slice_assign(range, v);
        let k = self.repeat_kv(cache.k.clone().narrow(2, 0, t)); // [1, h, t, hd]
        let v = self.repeat_kv(cache.v.clone().narrow(2, 0, t));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()); // [1, h, n, t]
        let scores = match mask {
            Some(m) => scores.mask_fill(m.clone().expand([1, h, n, t]), f32::NEG_INFINITY),
            None => scores,
        };
        let out = softmax(scores.cast(DType::F32), 3).cast(v.dtype()).matmul(v); // [1, h, n, hd]
        self.o_proj.forward(out.swap_dims(1, 2).reshape([1, n, h * hd]))
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
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
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, ctx: &AttnContext<B>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rotary, ctx);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

impl<B: Backend> Block<B> {
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rotary: &Rotary<B>,
        cache: &mut LayerCache<B>,
        start: usize,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 3> {
        let a = self.self_attn.forward_cached(
            self.input_layernorm.forward(x.clone()),
            rotary,
            cache,
            start,
            mask,
        );
        let h = x + a;
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

/// Normal samples from a seeded host generator (SplitMix64 + Box–Muller). The weights of a fresh
/// model depend on the seed only, not on the backend: Burn's `Tensor::random` draws from each
/// backend's own generator (CPU, wgpu and the browser's WebGPU gave different models for one
/// seed), and from one generator per process, which tests running in parallel share.
struct HostNormal(u64);

impl HostNormal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64 // in (0, 1)
    }

    /// `[dims]` of N(0, std²), as a tensor on `device`.
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        dims: [usize; D],
        std: f64,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n: usize = dims.iter().product();
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let (r, t) = ((-2.0 * self.uniform().ln()).sqrt(), std::f64::consts::TAU * self.uniform());
            v.extend([(std * r * t.cos()) as f32, (std * r * t.sin()) as f32]);
        }
        v.truncate(n);
        Tensor::from_data(TensorData::new(v, dims), device)
    }
}

fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    rng: &mut HostNormal,
    device: &B::Device,
) -> Linear<B> {
    // transformers' Llama init: N(0, initializer_range) weights, zero biases.
    Linear {
        weight: Param::from_tensor(rng.tensor([d_in, d_out], std, device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

fn norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> RmsNorm<B> {
    RmsNorm { weight: Param::from_tensor(Tensor::ones([d], device)), eps }
}

impl<B: Backend> Llama<B> {
    /// A freshly initialised model (for the presets; pretrained weights come from `load`), from
    /// seed 0.
    pub fn init(cfg: &LlamaConfig, device: &B::Device) -> Self {
        Self::init_seeded(cfg, 0, device)
    }

    /// A freshly initialised model: the same weights for the same seed on every backend.
    pub fn init_seeded(cfg: &LlamaConfig, seed: u64, device: &B::Device) -> Self {
        let (d, hd, std) = (cfg.hidden_size, cfg.head_dim, cfg.initializer_range);
        let rng = &mut HostNormal(seed);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Block {
                input_layernorm: norm(d, cfg.rms_norm_eps, device),
                self_attn: Attention {
                    q_proj: linear(d, cfg.num_attention_heads * hd, cfg.qkv_bias, std, rng, device),
                    k_proj: linear(d, cfg.num_key_value_heads * hd, cfg.qkv_bias, std, rng, device),
                    v_proj: linear(d, cfg.num_key_value_heads * hd, cfg.qkv_bias, std, rng, device),
                    o_proj: linear(cfg.num_attention_heads * hd, d, cfg.o_bias, std, rng, device),
                    n_heads: cfg.num_attention_heads,
                    n_kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(d, cfg.rms_norm_eps, device),
                mlp: Mlp {
                    gate_proj: linear(d, cfg.intermediate_size, false, std, rng, device),
                    up_proj: linear(d, cfg.intermediate_size, false, std, rng, device),
                    down_proj: linear(cfg.intermediate_size, d, false, std, rng, device),
                },
            })
            .collect();
        Self {
            embed_tokens: Embedding {
                weight: Param::from_tensor(rng.tensor([cfg.vocab_size, d], std, device)),
            },
            layers,
            norm: norm(d, cfg.rms_norm_eps, device),
            lm_head: (!cfg.tie_word_embeddings).then(|| linear(d, cfg.vocab_size, false, std, rng, device)),
            sliding_window: cfg.sliding_window,
        }
    }

    /// Final hidden states of packed rows.
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
        let (b, l) = (rows.rows, rows.row_len);
        let ids: Vec<i64> = rows.tokens.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, l]), device);
        let rotary = Rotary::new(cfg, rows, device);
        let ctx = AttnContext::new(mode, rows, self.sliding_window, device);
        let mut x = self.embed_tokens.forward(tokens); // [b, l, d]
        for layer in &self.layers {
            x = layer.forward(x, &rotary, &ctx);
        }
        self.norm.forward(x)
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
        let (start, n) = (cache.len, tokens.len());
        assert!(n > 0 && start + n <= cache.capacity, "cache of {} holds {start} + {n}", cache.capacity);
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), device);
        let positions: Vec<u32> = (start as u32..(start + n) as u32).collect();
        let rotary = Rotary::at(cfg, &positions, [1, n], device);
        let mask = cached_mask::<B>(start, n, self.sliding_window, device);
        let mut x = self.embed_tokens.forward(x); // [1, n, d]
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward_cached(x, &rotary, c, start, mask.as_ref());
        }
        cache.len += n;
        let last = self.norm.forward(x.narrow(1, n - 1, 1)).reshape([1, cfg.hidden_size]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_weights_have_the_configs_initializer_range() {
        // The tiny preset's σ = 1/√128; a config from HF (0.02 by default) keeps its own.
        for std in [LlamaConfig::tiny().initializer_range, 0.02] {
            let cfg = LlamaConfig { initializer_range: std, ..LlamaConfig::tiny() };
            let m = Llama::<burn::backend::Flex>::init(&cfg, &Default::default());
            let w: Vec<f32> = m.layers[0].mlp.up_proj.weight.val().into_data().to_vec().unwrap();
            let n = w.len() as f64; // 128 × 352 draws
            let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
            let sd = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!((sd / std - 1.0).abs() < 0.02, "σ {sd} for {std}");
        }
        assert!((LlamaConfig::tiny().initializer_range - 0.0884).abs() < 1e-4);
    }

    /// A fresh model is a function of the seed alone (not of the backend's generator).
    #[test]
    fn fresh_weights_follow_the_seed() {
        let cfg = LlamaConfig::tiny();
        let w = |seed| -> Vec<f32> {
            let m = Llama::<burn::backend::Flex>::init_seeded(&cfg, seed, &Default::default());
            let mut v: Vec<f32> = m.embed_tokens.weight.val().into_data().to_vec().unwrap();
            v.extend(m.layers[1].self_attn.k_proj.weight.val().into_data().to_vec::<f32>().unwrap());
            v
        };
        let (a, b, c) = (w(3), w(3), w(4));
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).filter(|(x, y)| x == y).count() < a.len() / 1000);
        // Box–Muller draws: the tails are there (|x| > 4σ about 6 in 10⁵ of the time).
        let sd = cfg.initializer_range as f32;
        assert!(a.iter().any(|&x| x.abs() > 3.5 * sd) && a.iter().all(|&x| x.abs() < 7.0 * sd));
    }

    #[test]
    fn positions_segments_and_mask_of_a_packed_row() {
        let rows = PackedRows { tokens: vec![0; 7], cu_seqlens: vec![vec![0, 3, 5, 6]], rows: 1, row_len: 7 };
        assert_eq!(rows.positions(), vec![0, 1, 2, 0, 1, 0, 0]);
        assert_eq!(rows.segments(), vec![0, 0, 0, 1, 1, 2, 3]);
        let m = rows.mask(None);
        let show: Vec<String> =
            (0..7).map(|q| (0..7).map(|k| if m[q * 7 + k] { 'x' } else { '.' }).collect()).collect();
        assert_eq!(show, vec![".xxxxxx", "..xxxxx", "...xxxx", "xxx.xxx", "xxx..xx", "xxxxx.x", "xxxxxx."]);
        let w = rows.mask(Some(2));
        assert!(w[2 * 7] && !w[2 * 7 + 1] && !w[2 * 7 + 2], "window 2: a2 sees a1, a2 only");
    }
}
