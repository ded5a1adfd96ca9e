//! Rotary position embeddings: inverse frequencies for every scaling type of Hugging Face configs,
//! cos/sin tables (plain f32/f64 maths), and [`Rotary`]: the tables gathered at each token's
//! position as tensors, applied to queries and keys.
//!
//! Arithmetic follows transformers' `ROPE_INIT_FUNCTIONS` so logits match: inverse frequencies are
//! rounded to f32, angles are f32 products `position × inv_freq`, and cos/sin are multiplied by the
//! attention scaling (YaRN's mscale, 1 otherwise).

use std::f64::consts::PI;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::config::{LlamaConfig, RopeScaling};
use super::packed::PackedRows;

/// Inverse frequencies (head_dim / 2 of them) and the cos/sin scaling, for sequences whose largest
/// position is `max_position` (only dynamic NTK depends on it).
pub fn inv_freq(cfg: &LlamaConfig, max_position: usize) -> (Vec<f32>, f32) {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta;
    let plain = |base: f64| -> Vec<f64> {
        (0..dim / 2)
            .map(|i| {
                // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
                let exponent = ((2 * i) as f32 / dim as f32) as f64;
                (1.0 / (base as f32 as f64).powf(exponent)) as f32 as f64
            })
            .collect()
    };
    let (freqs, scale) = match &cfg.rope_scaling {
        RopeScaling::Default => (plain(base), 1.0),
        RopeScaling::Linear { factor } => (plain(base).into_iter().map(|f| f / factor).collect(), 1.0),
        RopeScaling::Dynamic { factor, original_max_position_embeddings: orig } => {
            let seq_len = max_position + 1;
            if seq_len > *orig {
                let b = base
                    * ((factor * seq_len as f64 / *orig as f64) - (factor - 1.0))
                        .powf(dim as f64 / (dim as f64 - 2.0));
                (plain(b), 1.0)
            } else {
                (plain(base), 1.0)
            }
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: orig,
            beta_fast,
            beta_slow,
            attention_factor,
        } => {
            let correction_dim =
                |rot: f64| (dim as f64 * (*orig as f64 / (rot * 2.0 * PI)).ln()) / (2.0 * base.ln());
            let low = correction_dim(*beta_fast).floor().max(0.0);
            let mut high = correction_dim(*beta_slow).ceil().min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            let freqs = plain(base)
                .into_iter()
                .enumerate()
                .map(|(i, extra)| {
                    let inter = extra / factor;
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    inter * (1.0 - extrapolation) + extra * extrapolation
                })
                .collect();
            let mscale =
                attention_factor.unwrap_or(if *factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 });
            (freqs, mscale)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: orig,
        } => {
            let old = *orig as f64;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let freqs = plain(base)
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (freqs, 1.0)
        }
    };
    (freqs.into_iter().map(|f| f as f32).collect(), scale as f32)
}

/// cos and sin tables `[positions, head_dim]`, row p for position p, the half-dim frequencies
/// repeated twice (transformers' `rotate_half` layout).
pub fn tables(inv_freq: &[f32], scale: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions * 2 * half);
    let mut sin = Vec::with_capacity(positions * 2 * half);
    for p in 0..positions {
        for _ in 0..2 {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos() * scale);
                sin.push(angle.sin() * scale);
            }
        }
    }
    (cos, sin)
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
        let (inv, scale) = inv_freq(cfg, max_pos);
        let (cos_t, sin_t) = tables(&inv, scale, max_pos + 1);
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

    /// `x·cos + rotate_half(x)·sin`, rotate_half(x) = `[-x₂, x₁]` over the two halves of head_dim:
    /// the fused pass of `longalign-kernels` where the backend has it (CPU), else [`Self::formula`].
    ///
    /// # Shapes
    /// - x: `[batch, seq, heads, head_dim]` (token-major, as the projections give it) → same
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        #[cfg(feature = "native")]
        let x = {
            let (cos, sin) = self.tables_for(&x);
            match longalign_kernels::try_rotary(x, cos, sin) {
                Ok(y) => return y,
                Err([x, _, _]) => x,
            }
        };
        self.formula(x)
    }

    /// [`Self::apply`] as tensor operations (the reference; wgpu and CUDA run it, fused).
    ///
    /// # Shapes
    /// - as [`Self::apply`]
    pub fn formula(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let (cos, sin) = self.tables_for(&x);
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }

    /// cos and sin laid out to broadcast over `x`'s heads, in `x`'s dtype (the tables are
    /// computed in f32, as transformers does).
    ///
    /// # Shapes
    /// - x: `[batch, seq, heads, head_dim]` → two `[batch, seq, 1, head_dim]`
    fn tables_for(&self, x: &Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, l, _, hd] = x.dims();
        let table = |t: &Tensor<B, 4>| t.clone().cast(x.dtype()).reshape([b, l, 1, hd]);
        (table(&self.cos), table(&self.sin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: RopeScaling) -> LlamaConfig {
        LlamaConfig { head_dim: 8, rope_theta: 10_000.0, rope_scaling: scaling, ..LlamaConfig::tiny() }
    }

    /// The fused pass (CPU) equals the tensor formula, values and gradients, on ragged packed
    /// positions and grouped heads.
    #[test]
    fn fused_pass_equals_the_formula() {
        use burn::backend::{Autodiff, Flex};
        type A = Autodiff<Flex>;
        let device = Default::default();
        let cfg = LlamaConfig { head_dim: 16, ..cfg(RopeScaling::Default) };
        let rows = PackedRows {
            tokens: vec![0; 2 * 70],
            cu_seqlens: vec![vec![0, 13, 70], vec![0, 41, 64]],
            rows: 2,
            row_len: 70,
        };
        let rotary = Rotary::<A>::new(&cfg, &rows, &device);
        let n = 2 * 70 * 3 * 16;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 997) as f32 / 498.5 - 1.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104729) % 991) as f32 / 495.5 - 1.0).collect();
        let run = |fused: bool| {
            let x =
                Tensor::<A, 4>::from_data(TensorData::new(x.clone(), [2, 70, 3, 16]), &device).require_grad();
            let y = if fused { rotary.apply(x.clone()) } else { rotary.formula(x.clone()) };
            let dy = Tensor::<A, 4>::from_data(TensorData::new(dy.clone(), [2, 70, 3, 16]), &device);
            let grads = (y.clone() * dy).sum().backward();
            let dx = x.grad(&grads).unwrap();
            (y.into_data().to_vec::<f32>().unwrap(), dx.into_data().to_vec::<f32>().unwrap())
        };
        // The CPU backend has the fused pass, so the two runs take different paths.
        let z = || Tensor::<A, 4>::zeros([1, 1, 1, 2], &device);
        assert!(
            longalign_kernels::try_rotary(Tensor::<A, 4>::zeros([1, 1, 3, 2], &device), z(), z()).is_ok()
        );
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(max_diff(&y, &y_ref) <= 1e-6, "forward {}", max_diff(&y, &y_ref));
        assert!(max_diff(&dx, &dx_ref) <= 1e-6, "backward {}", max_diff(&dx, &dx_ref));
        assert!(y.iter().zip(&x).any(|(a, b)| (a - b).abs() > 1e-3), "the test must rotate something");
    }

    #[test]
    fn default_frequencies() {
        let (f, s) = inv_freq(&cfg(RopeScaling::Default), 10);
        assert_eq!(s, 1.0);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in f.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-7, "{f:?}");
        }
    }

    #[test]
    fn scalings_transform_as_documented() {
        let (base, _) = inv_freq(&cfg(RopeScaling::Default), 10);
        let (lin, _) = inv_freq(&cfg(RopeScaling::Linear { factor: 4.0 }), 10);
        assert!(base.iter().zip(&lin).all(|(b, l)| (b / 4.0 - l).abs() < 1e-9));
        // Dynamic NTK only changes anything beyond the original context.
        let dynamic = RopeScaling::Dynamic { factor: 2.0, original_max_position_embeddings: 100 };
        assert_eq!(inv_freq(&cfg(dynamic.clone()), 50).0, base);
        let (long, _) = inv_freq(&cfg(dynamic), 400);
        assert_eq!(long[0], 1.0);
        assert!(long[3] < base[3], "a larger base lowers the frequencies");
        // Llama 3: high frequencies kept, low frequencies divided by the factor.
        let l3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let (f, _) = inv_freq(&LlamaConfig { head_dim: 128, rope_theta: 500_000.0, ..cfg(l3) }, 10);
        let (b, _) =
            inv_freq(&LlamaConfig { head_dim: 128, rope_theta: 500_000.0, ..cfg(RopeScaling::Default) }, 10);
        assert_eq!(f[0], b[0]);
        assert!((f[63] - b[63] / 8.0).abs() < 1e-12);
        // YaRN: mscale = 0.1 ln(factor) + 1.
        let yarn = RopeScaling::Yarn {
            factor: 4.0,
            original_max_position_embeddings: 2048,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        };
        let (_, s) = inv_freq(&cfg(yarn), 10);
        assert!((s as f64 - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn tables_layout() {
        let (cos, sin) = tables(&[1.0, 0.5], 1.0, 3);
        assert_eq!(cos.len(), 12);
        assert_eq!(&cos[..4], &[1.0, 1.0, 1.0, 1.0]);
        assert!((sin[4] - 1f32.sin()).abs() < 1e-7 && (sin[5] - 0.5f32.sin()).abs() < 1e-7);
        assert_eq!(sin[4], sin[6]);
    }
}
