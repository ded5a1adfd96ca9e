//! Mixed precision: f32 master weights, half-precision compute.
//!
//! Pure-bf16 training loses LongAlign's updates. bf16 keeps 8 significant bits, so a weight of
//! 0.05 moves only in steps of ~2e-4. AdamW's first steps move each weight by about the
//! learning rate (2e-5), and such an update rounds back to the old value. (The test
//! `pure_bf16_loses_small_updates_master_weights_keep_them` shows it.) So the parameters, their
//! gradients and the optimizer state stay f32. Each forward pass runs on a half-precision *view*
//! of the weights:
//!
//! ```text
//!   master W (f32, Param) ──cast──▶ W16 (bf16) ──▶ matmuls, activations (bf16)
//!          ▲                                             │
//!          └──── dW (f32) ◀──cast back── dW16 ◀── backward
//! ```
//!
//! The cast is an autodiff op, so the gradient arrives at the f32 parameter. Every optimizer and
//! gradient path is unchanged. As in transformers, a few places upcast to f32: RMSNorm's
//! statistics, the attention softmax (the varlen kernel already sums in f32), and the logits
//! before log-softmax.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::llama::Llama;

/// The float format of the forward and backward compute (the weights stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// bfloat16: f32's range with 8 significant bits. The usual choice on Ampere and newer
    /// GPUs; no loss scaling needed.
    Bf16,
    /// IEEE half: 11 significant bits but a range of ±65,504, so gradients can underflow;
    /// for devices without bf16 (e.g. WebGPU with `shader-f16`).
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }

    /// Whether backend `B` computes in this format on `device`.
    pub fn supported<B: Backend>(self, device: &B::Device) -> bool {
        B::supports_dtype(device, self.dtype())
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" | "fp16" => Ok(Self::F16),
            _ => Err(format!("unknown precision {s:?} (expected f32, bf16 or f16)")),
        }
    }
}

/// Casts every float parameter, keeping its id. Under autodiff the cast is a tracked op, so
/// gradients flow back to the original (f32) parameters.
struct CastParams(DType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.cast(self.0), mapper)
    }
}

impl<B: Backend> Llama<B> {
    /// The model to run the forward pass with: `self` at f32, else a half-precision view of it.
    /// Gradients of the view's loss, collected with `GradientsParams::from_grads(grads, self)`,
    /// are the f32 gradients of `self`'s parameters.
    pub fn for_compute(&self, precision: Precision) -> Self {
        compute_view(self, precision)
    }
}

/// [`Llama::for_compute`] for any part of the model (a block, its MLP, the embeddings): what the
/// per-layer recompute casts, one graph at a time.
pub fn compute_view<B: Backend, M: Module<B>>(module: &M, precision: Precision) -> M {
    match precision {
        Precision::F32 => module.clone(),
        p => module.clone().map(&mut CastParams(p.dtype())),
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use burn::module::ParamId;
    use burn::module::{Module, ModuleVisitor};
    use burn::optim::GradientsParams;
    use burn::tensor::backend::AutodiffBackend;

    use super::*;
    use crate::train::EmbeddedRun;
    use crate::train::session::CpuBackend;
    use crate::train::step::{self, LossOptions};

    /// Every parameter's gradient: id, dtype and values.
    struct Grads<'a>(&'a GradientsParams, Vec<(ParamId, DType, Vec<f32>)>);

    impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = self.0.get::<B::InnerBackend, D>(param.id).expect("every parameter has a gradient");
            let dtype = g.dtype();
            self.1.push((param.id, dtype, g.cast(DType::F32).into_data().to_vec().unwrap()));
        }
    }

    /// Every parameter's values, as f32.
    struct Values(Vec<Vec<f32>>);

    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().cast(DType::F32).into_data().to_vec().unwrap());
        }
    }

    /// The loss and every gradient of the plan's first step, computing in `p`.
    fn grads_at(run: &EmbeddedRun, p: Precision) -> (f64, Vec<(ParamId, DType, Vec<f32>)>) {
        let EmbeddedRun { cfg, mcfg, model, plan, ds } = run;
        let opts = LossOptions::new(cfg.loss_chunk, None, cfg.attention).with_precision(p);
        let mbs = &plan.steps[0].micro_batches;
        let (losses, grads) = step::gradients(model, mcfg, mbs, &ds.tokens, 0, opts, &Default::default());
        let loss = step::loss_sum(losses);
        assert!(loss > 0.0, "the step has targets");
        let mut v = Grads(&grads, Vec::new());
        model.visit(&mut v);
        (loss, v.1)
    }

    #[test]
    fn precision_names_round_trip() {
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert!("fp8".parse::<Precision>().unwrap_err().contains("expected f32, bf16 or f16"));
    }

    /// Half-precision compute gives the f32 loss and gradients to within its rounding, and the
    /// gradients arrive in f32 at every (f32) parameter.
    #[test]
    fn half_precision_loss_and_gradients_track_f32() {
        let s = EmbeddedRun::new();
        let (loss32, g32) = grads_at(&s, Precision::F32);
        for (p, loss_tol, grad_tol) in [(Precision::Bf16, 2e-3, 0.05), (Precision::F16, 5e-4, 0.01)] {
            let (loss, g) = grads_at(&s, p);
            assert!((loss - loss32).abs() <= loss_tol * loss32, "{p}: loss {loss} vs f32 {loss32}");
            assert_eq!(g.len(), g32.len());
            // Relative L2 error of the whole gradient.
            let (mut err, mut norm) = (0f64, 0f64);
            for ((id, dtype, a), (id32, _, b)) in g.iter().zip(&g32) {
                assert_eq!(id, id32);
                assert_eq!(*dtype, DType::F32, "{p}: gradients of f32 parameters are f32");
                for (x, y) in a.iter().zip(b) {
                    err += ((x - y) as f64).powi(2);
                    norm += (*y as f64).powi(2);
                }
            }
            let rel = (err / norm).sqrt();
            eprintln!("{p}: loss {loss} (f32 {loss32}), gradient relative error {rel}");
            assert!(rel <= grad_tol, "{p}: gradient relative error {rel}");
            assert!(rel > 0.0, "{p}: the compute really was in half precision");
        }
    }

    /// Why master weights: one AdamW step at LongAlign's lr (2e-5) moves almost every f32 weight,
    /// but rounded to bf16 (what a pure-bf16 model would store) only the small ones move (|w| below
    /// ~0.01, where bf16's spacing is finer than the update).
    #[test]
    fn pure_bf16_loses_small_updates_master_weights_keep_them() {
        let EmbeddedRun { cfg, mcfg, model, plan, ds } = EmbeddedRun::new();
        let opts = LossOptions::new(cfg.loss_chunk, None, cfg.attention).with_precision(Precision::Bf16);
        let mbs = &plan.steps[0].micro_batches;
        let (_, grads) = step::gradients(&model, &mcfg, mbs, &ds.tokens, 0, opts, &Default::default());
        let mut before = Values(Vec::new());
        model.visit(&mut before);
        let mut optim = crate::train::adamw::<CpuBackend>(&cfg);
        let (model, _) = step::update(model, &mut optim, grads, cfg.clip_norm, 2e-5);
        let mut after = Values(Vec::new());
        model.visit(&mut after);
        let bf = |x: f32| half::bf16::from_f32(x).to_bits();
        let (mut n, mut moved32, mut moved16) = (0usize, 0usize, 0usize);
        for (a, b) in before.0.iter().flatten().zip(after.0.iter().flatten()) {
            n += 1;
            moved32 += (a != b) as usize;
            moved16 += (bf(*a) != bf(*b)) as usize;
        }
        let (f32_share, bf16_share) = (moved32 as f64 / n as f64, moved16 as f64 / n as f64);
        assert!(f32_share > 0.9, "f32 master weights moved: {f32_share}");
        assert!(bf16_share < 0.25, "bf16-rounded weights moved: {bf16_share}");
    }
}
