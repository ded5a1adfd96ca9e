//! Validate: the fused weighted cross entropy (logits recomputed chunk by chunk in the backward)
//! against the plain chunked loss under Burn's autodiff — loss, `dh` and `dW` — on the CPU
//! backend and on wgpu (lavapipe in CI), and on CUDA with `--features cuda`.

mod common;
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use common::{host, values};
use longalign_kernels::{CeTargets, WeightedCeBackend, reference_weighted_ce, try_weighted_ce, weighted_ce};

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn targets(n: usize, vocab: usize, chunk: usize, pad_to: usize) -> CeTargets {
    CeTargets {
        labels: (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect(),
        // LongAlign-style weights: a few per-sequence values, one of them 0.
        weights: (0..n).map(|i| [0.25f32, 0.05, 0.0, 0.125][i % 4]).collect(),
        chunk,
        pad_to,
    }
}

/// `(loss, dh, dW)` of `fused` or the reference on backend `K`.
fn run<K: AutodiffBackend + WeightedCeBackend>(
    fused: bool,
    dims: (usize, usize, usize),
    t: &CeTargets,
    dev: &K::Device,
) -> [Vec<f32>; 3] {
    run_in::<K>(DType::F32, fused, dims, t, dev)
}

/// [`run`] computing in `dtype`: f32 leaves cast to it, as mixed-precision training does; the
/// gradients arrive at the leaves in f32.
fn run_in<K: AutodiffBackend + WeightedCeBackend>(
    dtype: DType,
    fused: bool,
    dims: (usize, usize, usize),
    t: &CeTargets,
    dev: &K::Device,
) -> [Vec<f32>; 3] {
    let (n, d, v) = dims;
    let h = Tensor::<K, 2>::from_data(TensorData::new(values(n * d, 1), [n, d]), dev).require_grad();
    let w = Tensor::<K, 2>::from_data(TensorData::new(values(d * v, 2), [d, v]), dev).require_grad();
    let (hc, wc) = (h.clone().cast(dtype), w.clone().cast(dtype));
    // Scale the loss by 3 so the upstream gradient is not 1.
    let loss = if fused { weighted_ce(hc, wc, t) } else { reference_weighted_ce(hc, wc, t) }.mul_scalar(3.0);
    assert_eq!(loss.dtype(), DType::F32, "the loss is summed in f32");
    let grads = loss.backward();
    let (dh, dw) = (h.grad(&grads).unwrap(), w.grad(&grads).unwrap());
    assert_eq!((dh.dtype(), dw.dtype()), (DType::F32, DType::F32));
    [host(loss), host(dh), host(dw)]
}

fn check<K: AutodiffBackend + WeightedCeBackend>(dev: &K::Device) {
    for (dims, chunk, pad) in
        [((37, 16, 50), 8, 1), ((37, 16, 50), 16, 8), ((5, 24, 300), 64, 4), ((1, 8, 11), 1, 1)]
    {
        let t = targets(dims.0, dims.2, chunk, pad);
        let got = run::<K>(true, dims, &t, dev);
        let want = run::<K>(false, dims, &t, dev);
        for (name, (g, w)) in ["loss", "dh", "dW"].iter().zip(got.iter().zip(&want)) {
            let e = rel_err(g, w);
            assert!(
                e <= 1e-5,
                "{name} {dims:?} chunk {chunk} pad {pad} on {}: {e:e}",
                std::any::type_name::<K>()
            );
        }
        assert!(got[0][0] > 0.0);
    }
}

#[test]
fn fused_ce_matches_the_plain_loss_on_cpu() {
    check::<Autodiff<Flex>>(&Default::default());
}

#[test]
fn fused_ce_matches_the_plain_loss_on_wgpu() {
    check::<Autodiff<Wgpu>>(&Default::default());
}

/// With `--features cuda` (`gpu-check.sh`).
#[cfg(feature = "cuda")]
#[test]
fn fused_ce_matches_the_plain_loss_on_cuda() {
    check::<Autodiff<burn::backend::Cuda>>(&Default::default());
}

/// Half-precision inputs (mixed-precision training): the fused loss against the plain one in the
/// same precision, and both against f32 within the format's rounding.
fn check_half<K: AutodiffBackend + WeightedCeBackend>(dev: &K::Device) {
    for (dtype, tol) in [(DType::BF16, 2e-2), (DType::F16, 3e-3)] {
        for (dims, chunk, pad) in [((37, 16, 50), 16, 8), ((5, 24, 300), 64, 4)] {
            let t = targets(dims.0, dims.2, chunk, pad);
            let got = run_in::<K>(dtype, true, dims, &t, dev);
            let want = run_in::<K>(dtype, false, dims, &t, dev);
            let exact = run_in::<K>(DType::F32, false, dims, &t, dev);
            for (k, name) in ["loss", "dh", "dW"].iter().enumerate() {
                let (e, e32) = (rel_err(&got[k], &want[k]), rel_err(&got[k], &exact[k]));
                assert!(e <= tol && e32 <= tol, "{dtype:?} {name} {dims:?}: {e:e} vs plain, {e32:e} vs f32");
            }
        }
    }
}

#[test]
fn fused_ce_in_half_precision_on_cpu() {
    check_half::<Autodiff<Flex>>(&Default::default());
}

/// bf16 and f16 on CUDA with `--features cuda` (`gpu-check.sh`).
#[cfg(feature = "cuda")]
#[test]
fn fused_ce_in_half_precision_on_cuda() {
    check_half::<Autodiff<burn::backend::Cuda>>(&Default::default());
}

#[test]
fn without_autodiff_it_is_the_same_value_and_dispatch_finds_it() {
    let t = targets(9, 20, 4, 1);
    let h = Tensor::<Flex, 2>::from_data(TensorData::new(values(9 * 6, 1), [9, 6]), &Default::default());
    let w = Tensor::<Flex, 2>::from_data(TensorData::new(values(6 * 20, 2), [6, 20]), &Default::default());
    let a = host(reference_weighted_ce(h.clone(), w.clone(), &t));
    let b = host(try_weighted_ce(h, w, &t).ok().unwrap());
    assert_eq!(a, b);
}
