//! Validate (llm.c's discipline): the varlen kernels against the dense masked reference, forward
//! and gradients, on ragged layouts. Every case runs twice: the CubeCL kernel on Burn's wgpu
//! backend (in CI: Mesa's software Vulkan driver, lavapipe) — or on CUDA with `--features cuda`
//! (`kernels/gpu-check.sh`) — and the host kernel on the CPU backend; the reference runs on the
//! CPU backend, from the same numbers.

mod common;
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use common::{host, values};
use longalign_kernels::{
    VarlenBackend, VarlenLayout, reference_attention, try_varlen_attention, varlen_attention,
};

#[cfg(not(feature = "cuda"))]
type Gpu = Autodiff<Wgpu>;
#[cfg(feature = "cuda")]
type Gpu = Autodiff<burn::backend::Cuda>;
type GpuDevice = burn::tensor::Device<Gpu>;
type Cpu = Autodiff<Flex>;

/// Deterministic values in [-1, 1) (no rand dependency).
fn tensor<B: Backend>(v: &[f32], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

/// max |a − b| / max(1e-6, max |b|): error relative to the tensor's scale.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

struct Case {
    heads: usize,
    kv_heads: usize,
    hd: usize,
    row_len: usize,
    /// Sequence lengths per row; the rest of each row is padding.
    lens: Vec<Vec<usize>>,
    window: Option<usize>,
}

impl Case {
    fn layout(&self) -> VarlenLayout {
        let cu: Vec<Vec<u32>> = self
            .lens
            .iter()
            .map(|row| {
                let mut cu = vec![0u32];
                for &n in row {
                    cu.push(cu.last().unwrap() + n as u32);
                }
                assert!(*cu.last().unwrap() as usize <= self.row_len);
                cu
            })
            .collect();
        VarlenLayout::from_cu_seqlens(self.row_len, &cu, self.window)
    }

    /// Forward and q/k/v gradients of `Σ out ∘ w` (w random): the kernel on wgpu and the host
    /// kernel on the CPU backend, each against the reference on CPU.
    fn check(&self, seed: u64, tol: f32) {
        self.check_as(seed, tol, FloatDType::F32)
    }

    /// [`Self::check`] with the kernels' inputs in `dtype` (the reference stays f32).
    fn check_as(&self, seed: u64, tol: f32, dtype: FloatDType) {
        self.check_on::<Gpu>(&GpuDevice::default(), seed, tol, dtype);
        self.check_on::<Cpu>(&Default::default(), seed, tol, dtype);
    }

    fn check_on<K: VarlenBackend + burn::tensor::backend::AutodiffBackend>(
        &self,
        dev: &K::Device,
        seed: u64,
        tol: f32,
        dtype: FloatDType,
    ) {
        let rows = self.lens.len();
        let qs = [rows, self.heads, self.row_len, self.hd];
        let ks = [rows, self.kv_heads, self.row_len, self.hd];
        let n = |s: [usize; 4]| s.iter().product::<usize>();
        let (qv, kv, vv, wv) =
            (values(n(qs), seed), values(n(ks), seed + 1), values(n(ks), seed + 2), values(n(qs), seed + 3));
        let layout = self.layout();

        let (q, k, v) = (
            tensor::<K>(&qv, qs, dev).cast(dtype).require_grad(),
            tensor::<K>(&kv, ks, dev).cast(dtype).require_grad(),
            tensor::<K>(&vv, ks, dev).cast(dtype).require_grad(),
        );
        let out = varlen_attention(q.clone(), k.clone(), v.clone(), &layout).unwrap();
        assert_eq!(out.dtype(), dtype.into());
        let grads = (out.clone().cast(FloatDType::F32) * tensor::<K>(&wv, qs, dev)).sum().backward();
        let got = [
            host(out),
            host(q.grad(&grads).unwrap()),
            host(k.grad(&grads).unwrap()),
            host(v.grad(&grads).unwrap()),
        ];

        let cpu = Default::default();
        let (q, k, v) = (
            tensor::<Cpu>(&qv, qs, &cpu).require_grad(),
            tensor::<Cpu>(&kv, ks, &cpu).require_grad(),
            tensor::<Cpu>(&vv, ks, &cpu).require_grad(),
        );
        let out = reference_attention(q.clone(), k.clone(), v.clone(), &layout).unwrap();
        let grads = (out.clone() * tensor::<Cpu>(&wv, qs, &cpu)).sum().backward();
        let want = [
            host(out),
            host(q.grad(&grads).unwrap()),
            host(k.grad(&grads).unwrap()),
            host(v.grad(&grads).unwrap()),
        ];
        for (name, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
            let e = rel_err(g, w);
            if e > tol {
                let worst = g
                    .iter()
                    .zip(w.iter())
                    .enumerate()
                    .max_by(|a, b| (a.1.0 - a.1.1).abs().total_cmp(&(b.1.0 - b.1.1).abs()))
                    .unwrap();
                let zero_tokens: Vec<usize> = (0..g.len() / self.hd)
                    .filter(|t| {
                        g[t * self.hd..(t + 1) * self.hd].iter().all(|&x| x == 0.0) && w[t * self.hd] != 0.0
                    })
                    .collect();
                eprintln!(
                    "{name}: {} zero tokens, first {:?} last {:?}",
                    zero_tokens.len(),
                    zero_tokens.first(),
                    zero_tokens.last()
                );
                eprintln!(
                    "{name}: worst at flat {} (token {}): got {} want {}",
                    worst.0,
                    worst.0 / self.hd,
                    worst.1.0,
                    worst.1.1
                );
            }
            assert!(
                e <= tol,
                "{name} on {}: relative error {e:e} > {tol:e} (lens {:?}, window {:?})",
                std::any::type_name::<K>(),
                self.lens,
                self.window
            );
        }
    }
}

#[test]
fn packed_rows_with_padding_and_single_tokens() {
    Case {
        heads: 2,
        kv_heads: 2,
        hd: 64,
        row_len: 48,
        lens: vec![vec![1, 17, 3, 1, 20], vec![40]],
        window: None,
    }
    .check(1, 1e-4);
}

#[test]
fn grouped_query_heads_and_odd_head_dims() {
    for (hd, seed) in [(80, 2), (96, 3)] {
        Case {
            heads: 4,
            kv_heads: 2,
            hd,
            row_len: 40,
            lens: vec![vec![5, 30], vec![13, 1, 9]],
            window: None,
        }
        .check(seed, 1e-4);
    }
}

#[test]
fn head_dim_128_many_sequences_per_row() {
    let lens: Vec<usize> = (0..12).map(|i| 1 + (i * 7) % 11).collect();
    let used: usize = lens.iter().sum();
    Case { heads: 2, kv_heads: 1, hd: 128, row_len: used + 3, lens: vec![lens], window: None }.check(4, 1e-4);
}

#[test]
fn sliding_window() {
    Case { heads: 2, kv_heads: 1, hd: 64, row_len: 70, lens: vec![vec![50, 19]], window: Some(7) }
        .check(5, 1e-4);
}

#[test]
fn ragged_lengths_up_to_2048() {
    Case {
        heads: 1,
        kv_heads: 1,
        hd: 64,
        row_len: 2048 + 300,
        lens: vec![vec![2048, 1, 255, 44]],
        window: None,
    }
    .check(6, 1e-4);
}

/// f16 inputs, f32 sums inside: within 2e-2 of the f32 reference.
#[test]
fn half_precision_inputs() {
    Case { heads: 2, kv_heads: 1, hd: 64, row_len: 100, lens: vec![vec![60, 1, 30]], window: None }.check_as(
        8,
        2e-2,
        FloatDType::F16,
    );
}

/// bf16 (WGSL has none, so CUDA only).
#[cfg(feature = "cuda")]
#[test]
fn bfloat16_inputs() {
    Case { heads: 4, kv_heads: 2, hd: 128, row_len: 700, lens: vec![vec![600, 1, 90]], window: None }
        .check_as(9, 2e-2, FloatDType::BF16);
}

/// A sequence long enough that, without the unrolled head-dimension loops, llvmpipe's cap of
/// 65,535 loop iterations per invocation would cut the last queries short (see `kernel.rs`).
#[test]
fn a_6000_token_sequence() {
    Case { heads: 1, kv_heads: 1, hd: 64, row_len: 6000, lens: vec![vec![6000]], window: None }
        .check(10, 1e-4);
}

#[test]
fn a_row_of_only_padding_is_zero() {
    Case { heads: 1, kv_heads: 1, hd: 64, row_len: 16, lens: vec![vec![], vec![16]], window: None }
        .check(7, 1e-4);
}

#[test]
fn dispatch_picks_the_kernel_only_where_registered() {
    assert!(longalign_kernels::supported::<Gpu>());
    assert!(longalign_kernels::supported::<Wgpu>());
    assert!(longalign_kernels::supported::<Autodiff<Wgpu>>());
    assert!(longalign_kernels::supported::<Cpu>());
    assert!(longalign_kernels::supported::<Flex>());
    // A backend the kernels are not registered for: wgpu with 8-bit booleans.
    type Other = burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u8>;
    assert!(!longalign_kernels::supported::<Other>());
    let layout = VarlenLayout::from_cu_seqlens(4, &[vec![0, 4]], None);
    let t = || tensor::<Other>(&values(4 * 64, 9), [1, 1, 4, 64], &Default::default());
    assert!(try_varlen_attention(t(), t(), t(), &layout).is_err());
    let g = || tensor::<Gpu>(&values(4 * 64, 9), [1, 1, 4, 64], &GpuDevice::default());
    assert!(try_varlen_attention(g(), g(), g(), &layout).unwrap().is_ok());
    let c = || tensor::<Cpu>(&values(4 * 64, 9), [1, 1, 4, 64], &Default::default());
    assert!(try_varlen_attention(c(), c(), c(), &layout).unwrap().is_ok());
}

#[test]
fn bad_layouts_and_shapes_are_errors() {
    let g =
        |h: usize| tensor::<Gpu>(&values(3 * 4 * 64, 9)[..h * 4 * 64], [1, h, 4, 64], &GpuDevice::default());
    let ok = VarlenLayout::from_cu_seqlens(4, &[vec![0, 4]], None);
    let e = varlen_attention(g(3), g(2), g(2), &ok).unwrap_err();
    assert!(e.0.contains("multiple of key/value heads"), "{e}");
    let past = VarlenLayout::from_cu_seqlens(4, &[vec![0, 5]], None);
    assert!(varlen_attention(g(1), g(1), g(1), &past).unwrap_err().0.contains("ends past the row"));
}
