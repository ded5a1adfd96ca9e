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

use burn::tensor::cast::ToElement as _;

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
