//! The key–value cache of generation: each layer's keys and values of the tokens a sequence has
//! seen so far, and which of them new queries may see.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use super::config::LlamaConfig;

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
    /// Queries of a prefill and the keys a step attends to are counted in multiples of this
    /// (1: exactly). On the JIT backends (wgpu, CUDA) a new count can be a new shape, and a new
    /// shape compiles and autotunes kernels (64 tokens on an H200: 153 compiles, 39 autotunes,
    /// partly as the key count grew one a step). With a bucket the shapes change once per
    /// `bucket` tokens; the extra keys are masked, so the answer is the same.
    pub bucket: usize,
}

impl<B: Backend> KvCache<B> {
    /// A cache for `capacity` positions (rounded up to a multiple of `bucket`).
    pub fn new(cfg: &LlamaConfig, capacity: usize, bucket: usize, device: &B::Device) -> Self {
        let bucket = bucket.max(1);
        let capacity = capacity.div_ceil(bucket) * bucket;
        let shape = [1, cfg.num_key_value_heads, capacity, cfg.head_dim];
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| LayerCache { k: Tensor::zeros(shape, device), v: Tensor::zeros(shape, device) })
            .collect();
        Self { layers, len: 0, capacity, bucket }
    }

    /// How many positions `n` new tokens are computed at from `len`: `n` rounded up to the bucket
    /// where the cache has room (the extra queries see only real keys before them and themselves,
    /// and their keys are overwritten by the tokens that come after).
    pub fn queries(&self, n: usize) -> usize {
        let padded = n.div_ceil(self.bucket) * self.bucket;
        if n > 1 && self.len + padded <= self.capacity { padded } else { n }
    }

    /// How many cached positions a step whose queries end at `t` attends to: `t` rounded up to the
    /// bucket (the keys past `t` masked).
    pub fn keys(&self, t: usize) -> usize {
        (t.div_ceil(self.bucket) * self.bucket).min(self.capacity).max(t)
    }
}

/// Which of `keys` cached positions `n` new queries at positions `start..start+n` may see, `true` =
/// masked: causal, within the sliding window if any, and none of the positions from `start + n`
/// on (`keys` > `start + n` when [`KvCache::keys`] rounds up). `None` when nothing is masked (one
/// query over exactly its keys, no window), so such a step builds no mask at all.
///
/// One query at position 5 over 8 keys (a bucket of 8), `·` = attends, `x` = masked:
///
/// ```text
///        k0 k1 k2 k3 k4 k5 k6 k7
///   q5    ·  ·  ·  ·  ·  ·  x  x
/// ```
///
/// # Shapes
/// - output: `[1, 1, n, keys]`
pub fn cached_mask<B: Backend>(
    start: usize,
    n: usize,
    keys: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    let t = start + n;
    debug_assert!(keys >= t, "{keys} keys for queries ending at {t}");
    match window {
        None if n == 1 && keys == t => None,
        // Prefill: plain causal, built on the device.
        None if start == 0 && keys == n => {
            Some(Tensor::<B, 2, Bool>::tril_mask([n, n], 0, device).reshape([1, 1, n, n]))
        }
        _ => {
            let mut m = vec![true; n * keys];
            for i in 0..n {
                let q = start + i;
                for k in 0..=q {
                    if window.is_none_or(|w| q - k < w) {
                        m[i * keys + k] = false;
                    }
                }
            }
            Some(Tensor::from_data(TensorData::new(m, [1, 1, n, keys]), device))
        }
    }
}
