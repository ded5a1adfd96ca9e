//! Fresh weights for the presets (pretrained weights come from `load.rs`): transformers' Llama
//! initialisation, drawn from a seeded host generator so that a seed gives the same model on every
//! backend.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::attention::Attention;
use super::config::LlamaConfig;
use super::llama::{Block, Llama, Mlp, RmsNorm};

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
                    q_proj: linear(d, cfg.num_attention_heads * hd, cfg.qkv_bias, std, rng, device).into(),
                    k_proj: linear(d, cfg.num_key_value_heads * hd, cfg.qkv_bias, std, rng, device).into(),
                    v_proj: linear(d, cfg.num_key_value_heads * hd, cfg.qkv_bias, std, rng, device).into(),
                    o_proj: linear(cfg.num_attention_heads * hd, d, cfg.o_bias, std, rng, device).into(),
                    n_heads: cfg.num_attention_heads,
                    n_kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(d, cfg.rms_norm_eps, device),
                mlp: Mlp {
                    gate_proj: linear(d, cfg.intermediate_size, false, std, rng, device).into(),
                    up_proj: linear(d, cfg.intermediate_size, false, std, rng, device).into(),
                    down_proj: linear(cfg.intermediate_size, d, false, std, rng, device).into(),
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
            let w: Vec<f32> = m.layers[0].mlp.up_proj.base.weight.val().into_data().to_vec().unwrap();
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
            v.extend(m.layers[1].self_attn.k_proj.base.weight.val().into_data().to_vec::<f32>().unwrap());
            v
        };
        let (a, b, c) = (w(3), w(3), w(4));
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).filter(|(x, y)| x == y).count() < a.len() / 1000);
        // Box–Muller draws: the tails are there (|x| > 4σ about 6 in 10⁵ of the time).
        let sd = cfg.initializer_range as f32;
        assert!(a.iter().any(|&x| x.abs() > 3.5 * sd) && a.iter().all(|&x| x.abs() < 7.0 * sd));
    }
}
