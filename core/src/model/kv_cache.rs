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
pub fn cached_mask<B: Backend>(
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
