//! Grouped-query self-attention over packed rows or over a KV cache, and the ways the packed case
//! is computed ([`AttentionMode`]): the reference mask, per-sequence blocks, or the varlen kernel.
//!
//! ```text
//!            q k v (rotary on q, k)
//!   Packed ──▶ reference: one [L, L] score matrix per head, block-diagonal mask   (the oracle)
//!          ──▶ segmented / bucketed:N: dense causal attention per sequence         O(Σ nᵢ²)
//!          ──▶ varlen: the flash kernel (longalign-kernels), tiles within sequences O(L) memory
//!   Cached ──▶ new queries over the cache + themselves; their k, v written into the cache
//! ```

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData};

use super::kv_cache::LayerCache;
use super::lora::Proj;
use super::packed::PackedRows;
use super::rope::Rotary;

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
fn softmax_attention<B: Backend>(
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

/// What one layer's attention attends over.
pub enum Attend<'a, B: Backend> {
    /// Packed rows: each sequence over itself (training, scoring).
    Packed(&'a AttnContext<B>),
    /// New tokens of one sequence at positions `start..`: over the cache plus themselves (prefill
    /// and decode). `mask`: see [`super::kv_cache::cached_mask`].
    Cached { cache: &'a mut LayerCache<B>, start: usize, keys: usize, mask: Option<&'a Tensor<B, 4, Bool>> },
}

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Proj<B>,
    pub k_proj: Proj<B>,
    pub v_proj: Proj<B>,
    pub o_proj: Proj<B>,
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
        // Rotary on the projections' own token-major layout (contiguous), then heads first.
        let q = rotary.apply(self.q_proj.forward(x.clone()).reshape([b, l, h, hd])).swap_dims(1, 2);
        let k = rotary.apply(self.k_proj.forward(x.clone()).reshape([b, l, kv, hd])).swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([b, l, kv, hd]).swap_dims(1, 2);
        (q, k, v)
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

    /// Attention of the tokens of `x` over what `attend` says.
    ///
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → same (`Cached`: batch 1, `seq` new tokens)
    pub fn forward(&self, x: Tensor<B, 3>, rotary: &Rotary<B>, attend: Attend<'_, B>) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let (h, hd) = (self.n_heads, self.head_dim);
        let (q, k, v) = self.qkv(x, rotary); // [b, h, l, hd], [b, kv, l, hd] ×2
        let out = match attend {
            Attend::Packed(ctx) => self.packed(q, k, v, ctx),
            Attend::Cached { cache, start, keys, mask } => self.cached(q, k, v, cache, start, keys, mask),
        }; // [b, h, l, hd]
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, l, h * hd])) // [b, l, h·hd] → [b, l, d]
    }

    /// Packed rows: every sequence attends within itself only.
    ///
    /// # Shapes
    /// - q: `[b, heads, l, head_dim]`, k and v: `[b, kv_heads, l, head_dim]` → `[b, heads, l, head_dim]`
    fn packed(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        ctx: &AttnContext<B>,
    ) -> Tensor<B, 4> {
        let [b, h, _, hd] = q.dims();
        #[cfg(feature = "native")]
        let (q, k, v) = match ctx {
            // The kernel takes k and v per KV head (no repeat) and returns [b, h, l, hd].
            AttnContext::Varlen(layout) => match longalign_kernels::try_varlen_attention(q, k, v, layout) {
                Ok(out) => return out.expect("the layout comes from the rows the tensors were built from"),
                Err([q, k, v]) => (q, k, v),
            },
            _ => (q, k, v),
        };
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        match ctx {
            #[cfg(feature = "native")]
            AttnContext::Varlen(_) => {
                unreachable!("AttnContext::new picks Varlen only where the kernel runs")
            }
            AttnContext::Reference(mask) => softmax_attention(q, k, v, mask.clone()), // [b, h, l, hd]
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
                        let out = softmax_attention(part(&qr), part(&kr), part(&vr), masks[&nb].clone()); // [1, h, nb, hd]
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
        }
    }

    /// `n` new tokens of one sequence over its cache plus themselves; their keys and values are
    /// written into the cache first. Same maths as the packed path on the whole sequence. The
    /// queries attend to the first `keys` ≥ `start + n` cached positions (a bucketed count; the
    /// mask hides those past `start + n`).
    ///
    /// # Shapes
    /// - q: `[1, heads, n, head_dim]`, k and v: `[1, kv_heads, n, head_dim]` → `[1, heads, n, head_dim]`
    #[allow(clippy::too_many_arguments)]
    fn cached(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        cache: &mut LayerCache<B>,
        start: usize,
        keys: usize,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> Tensor<B, 4> {
        let [_, h, n, hd] = q.dims();
        let (kv, t) = (self.n_kv_heads, start + n);
        let range = [0..1, 0..kv, start..t, 0..hd];
        cache.k = cache.k.clone().slice_assign(range.clone(), k);
        cache.v = cache.v.clone().slice_assign(range, v);
        let k = self.repeat_kv(cache.k.clone().narrow(2, 0, keys)); // [1, h, keys, hd]
        let v = self.repeat_kv(cache.v.clone().narrow(2, 0, keys));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()); // [1, h, n, keys]
        let scores = match mask {
            Some(m) => scores.mask_fill(m.clone().expand([1, h, n, keys]), f32::NEG_INFINITY),
            None => scores,
        };
        softmax(scores.cast(DType::F32), 3).cast(v.dtype()).matmul(v) // [1, h, n, hd]
    }
}
