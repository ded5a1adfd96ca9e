//! Gradient utilities the optimizer does not give: the global norm and clipping by it.
//!
//! Burn's `GradientClipping::Norm` clips each parameter tensor by its own norm; PyTorch's
//! `clip_grad_norm_` (what LongAlign and every HF trainer use) scales *all* gradients by one factor
//! from their joint norm. We do the latter.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

struct Ids(Vec<(ParamId, usize)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

fn sum_sq<B: AutodiffBackend, const D: usize>(grads: &GradientsParams, id: ParamId) -> f64 {
    grads.get::<B::InnerBackend, D>(id).map_or(0.0, |g| g.square().sum().into_scalar().to_f64())
}

fn scale<B: AutodiffBackend, const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f64) {
    if let Some(g) = grads.remove::<B::InnerBackend, D>(id) {
        grads.register::<B::InnerBackend, D>(id, g.mul_scalar(factor));
    }
}

macro_rules! by_rank {
    ($d:expr, $f:ident, $b:ty, $($arg:expr),*) => {
        match $d {
            1 => $f::<$b, 1>($($arg),*),
            2 => $f::<$b, 2>($($arg),*),
            3 => $f::<$b, 3>($($arg),*),
            4 => $f::<$b, 4>($($arg),*),
            d => panic!("parameter of rank {d}"),
        }
    };
}
// Data parallelism walks the parameters the same way.
#[cfg(feature = "native")]
pub(crate) use by_rank;

use burn::tensor::cast::ToElement as _;

fn sum_sq_tensor<B: AutodiffBackend, const D: usize>(
    grads: &GradientsParams,
    id: ParamId,
) -> Option<Tensor<B::InnerBackend, 1>> {
    grads.get::<B::InnerBackend, D>(id).map(|g| g.square().sum())
}

fn scale_tensor<B: AutodiffBackend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    factor: Tensor<B::InnerBackend, 1>,
) {
    if let Some(g) = grads.remove::<B::InnerBackend, D>(id) {
        let f: Tensor<B::InnerBackend, D> = factor.reshape([1; D]);
        grads.register::<B::InnerBackend, D>(id, g.mul(f));
    }
}

/// Global L2 norm of all gradients of `model`'s parameters.
pub fn global_norm<B: AutodiffBackend, M: Module<B>>(model: &M, grads: &GradientsParams) -> f64 {
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    ids.0.iter().map(|&(id, d)| by_rank!(d, sum_sq, B, grads, id)).sum::<f64>().sqrt()
}

/// Clips like `torch.nn.utils.clip_grad_norm_(max_norm)`: if the global norm exceeds `max_norm`,
/// every gradient is multiplied by `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_norm::<B, M>(model, grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        let mut ids = Ids(Vec::new());
        model.visit(&mut ids);
        for &(id, d) in &ids.0 {
            by_rank!(d, scale, B, grads, id, factor);
        }
    }
    norm
}

/// [`global_norm`] as a one-element tensor, nothing read back (f32 on the device, where
/// [`global_norm`] adds the per-tensor sums in f64 on the host).
pub fn global_norm_tensor<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &GradientsParams,
) -> Tensor<B::InnerBackend, 1> {
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    let parts: Vec<_> =
        ids.0.iter().filter_map(|&(id, d)| by_rank!(d, sum_sq_tensor, B, grads, id)).collect();
    match parts.is_empty() {
        true => Tensor::zeros([1], &Default::default()),
        false => Tensor::cat(parts, 0).sum().sqrt(),
    }
}

/// `min(1, max_norm / (norm + 1e-6))`, the factor [`clip_global_norm`] applies, on the device.
pub fn clip_factor<B: burn::tensor::backend::Backend>(norm: Tensor<B, 1>, max_norm: f64) -> Tensor<B, 1> {
    norm.add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0)
}

/// Multiplies every gradient by a one-element tensor.
pub fn scale_by<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
) {
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    for &(id, d) in &ids.0 {
        by_rank!(d, scale_tensor, B, grads, id, factor.clone());
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::train::session::CpuBackend;

    /// The device-side clip (the WebGPU path) against the host-side reference.
    #[test]
    fn deferred_clip_matches_the_reference() {
        // Rows of 2,048 tokens: at 256 the first step's only sequence loses its answer to
        // truncation, and every norm would be 0.
        let crate::train::EmbeddedRun { cfg, mcfg, model, plan, ds } = crate::train::EmbeddedRun::new();
        let device = Default::default();
        let opts = crate::train::step::LossOptions::new(cfg.loss_chunk, None, cfg.attention);
        let grads_of = || {
            crate::train::step::gradients(
                &model,
                &mcfg,
                &plan.steps[0].micro_batches,
                &ds.tokens,
                0,
                opts,
                &device,
            )
            .1
        };
        let grads = grads_of();
        let norm = global_norm::<CpuBackend, _>(&model, &grads);
        assert!(norm > 0.0, "the first step has targets");
        let t = global_norm_tensor::<CpuBackend, _>(&model, &grads).into_scalar().to_f64();
        assert!((norm - t).abs() <= 1e-5 * norm, "{norm} vs {t}");
        for max in [norm / 3.0, norm * 2.0] {
            let (mut a, mut b) = (grads_of(), grads_of());
            clip_global_norm::<CpuBackend, _>(&model, &mut a, max);
            let f = clip_factor(global_norm_tensor::<CpuBackend, _>(&model, &b), max);
            scale_by::<CpuBackend, _>(&model, &mut b, f);
            let (na, nb) =
                (global_norm::<CpuBackend, _>(&model, &a), global_norm::<CpuBackend, _>(&model, &b));
            assert!((na - nb).abs() <= 1e-5 * na, "max {max}: {na} vs {nb}");
            assert!(na <= max * (1.0 + 1e-5), "clipped to at most max");
        }
    }
}
