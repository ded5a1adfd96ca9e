//! Kernels for LongAlign-rs. The GPU ones are written once in CubeCL: the same source compiles to
//! WGSL (wgpu: Vulkan, Metal, DX12, WebGPU) and to CUDA C++ (burn-cuda, NVRTC at run time). Burn's
//! CPU backend gets the same algorithm as a host kernel in plain Rust ([`varlen::host`]).
//!
//! - [`varlen_attention`]: causal attention over packed rows, each sequence attending only to
//!   itself (block-diagonal), grouped-query, optional sliding window; forward and backward
//!   (FlashAttention-2 style: the backward recomputes probabilities from the saved row
//!   log-sum-exp). Cost Σ nᵢ² instead of L², memory O(L) instead of O(L²).
//! - [`weighted_ce`]: the weighted cross entropy fused with the vocabulary projection, in token
//!   chunks, with a backward that recomputes each chunk's logits (memory: one chunk, not
//!   targets × vocab); tensor operations of the backend, so every backend has it ([`ce`]).
//! - [`rotary`]: rotary position embedding in one pass each way on the CPU backend (the tensor
//!   formula elsewhere, where fusion merges it): [`try_rotary`].
//!
//! Each has a plain reference ([`reference_attention`]: a dense score matrix with an explicit
//! block-diagonal mask; [`reference_weighted_ce`]: the chunked loss under plain autodiff) and
//! validate tests comparing the two (`tests/varlen.rs`, `tests/ce.rs`).
//!
//! The model code is generic over any Burn backend; [`try_varlen_attention`] picks the kernel at
//! run time when the backend is one it is registered for and hands the inputs back otherwise
//! ([`try_weighted_ce`] likewise).

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};

pub mod ce;
pub mod rotary;
pub mod varlen;

pub use ce::{CeTargets, WeightedCeBackend, reference_weighted_ce, weighted_ce};
pub use rotary::{RotaryBackend, rotary, try_rotary};
pub use varlen::layout::{LayoutError, VarlenLayout};

/// A backend's float tensor primitive.
pub type FloatTensor<B> = burn_backend::tensor::FloatTensor<B>;

/// Backends the varlen attention kernels run on: every CubeCL backend (wgpu, CUDA), with or
/// without fusion, and the CPU backend (`Flex`), each with or without autodiff.
pub trait VarlenBackend: Backend {
    /// `(out [rows, heads, L, hd], lse [rows, heads, L] f32)`.
    fn varlen_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `[dq, dk, dv]` from the forward's inputs and outputs and the output gradient.
    fn varlen_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> [FloatTensor<Self>; 3];
}

/// Checks shapes and layout against each other.
fn check<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    layout: &VarlenLayout,
) -> Result<(), LayoutError> {
    let [rows, heads, l, hd] = q.dims();
    let [kr, kv_heads, kl, khd] = k.dims();
    if k.dims() != v.dims()
        || kr != rows
        || kl != l
        || khd != hd
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(LayoutError(format!(
            "varlen attention: q {:?}, k {:?}, v {:?} do not fit (k and v alike, same rows, tokens \
             and head size, query heads a multiple of key/value heads)",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    layout.check(rows, l)
}

/// Causal attention within each packed sequence, on the kernel.
///
/// # Shapes
/// - q: `[rows, heads, L, hd]`; k, v: `[rows, kv_heads, L, hd]` (not repeated for GQA)
/// - output: `[rows, heads, L, hd]`, zero at padding
pub fn varlen_attention<B: VarlenBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &VarlenLayout,
) -> Result<Tensor<B, 4>, LayoutError> {
    check(&q, &k, &v, layout)?;
    let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
    let (out, _lse) = B::varlen_forward(prim(q), prim(k), prim(v), layout);
    Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// The oracle: one dense `[L, L]` score matrix per (row, head) with the block-diagonal mask of
/// `layout`; keys and values repeated for grouped-query heads. O(L²) memory, obviously right.
///
/// # Shapes
/// - as [`varlen_attention`]
pub fn reference_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &VarlenLayout,
) -> Result<Tensor<B, 4>, LayoutError> {
    check(&q, &k, &v, layout)?;
    let [rows, heads, l, hd] = q.dims();
    let kv_heads = k.dims()[1];
    let repeat = |t: Tensor<B, 4>| {
        t.reshape([rows, kv_heads, 1, l, hd]).repeat_dim(2, heads / kv_heads).reshape([rows, heads, l, hd])
    };
    let (k, v) = (repeat(k), repeat(v));
    let device = q.device();
    let allowed =
        Tensor::<B, 4, Bool>::from_data(TensorData::new(layout.allowed(), [rows, 1, l, l]), &device);
    // Padding queries see nothing: give them a finite row, then zero their output.
    let real: Vec<f32> = (0..rows * l)
        .map(|t| {
            let (r, i) = (t / l, t % l);
            layout.segments[r].iter().any(|&(s, n)| i >= s && i < s + n) as u8 as f32
        })
        .collect();
    let real = Tensor::<B, 4>::from_data(TensorData::new(real, [rows, 1, l, 1]), &device);
    let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt());
    let scores = scores.mask_fill(allowed.bool_not().expand([rows, heads, l, l]), -1.0e30);
    Ok(burn::tensor::activation::softmax(scores, 3).matmul(v) * real)
}

/// Moves a tensor between two names of the same backend type (checked by the caller).
pub(crate) fn same<A: Backend, C: Backend, const D: usize>(t: Tensor<A, D>) -> Tensor<C, D> {
    let boxed: Box<dyn Any> = Box::new(t);
    *boxed.downcast::<Tensor<C, D>>().expect("TypeId checked equal")
}

/// Whether [`try_varlen_attention`] runs the kernel on backend `B`.
pub fn supported<B: Backend>() -> bool {
    let b = TypeId::of::<B>();
    registered().contains(&b)
}

macro_rules! registered {
    ($mac:ident) => {{
        use burn::backend::Autodiff;
        use burn::backend::Wgpu;
        use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
        type WgpuPlain = CubeBackend<WgpuRuntime, f32, i32, u32>;
        $mac!(Wgpu, Autodiff<Wgpu>, Autodiff<Wgpu, BalancedCheckpointing>);
        $mac!(WgpuPlain, Autodiff<WgpuPlain>);
        {
            use burn::backend::Flex;
            $mac!(Flex, Autodiff<Flex>, Autodiff<Flex, BalancedCheckpointing>);
        }
        #[cfg(feature = "cuda")]
        {
            use burn::backend::Cuda;
            $mac!(Cuda, Autodiff<Cuda>, Autodiff<Cuda, BalancedCheckpointing>);
        }
    }};
}

fn registered() -> Vec<TypeId> {
    let mut ids = Vec::new();
    macro_rules! push {
        ($($t:ty),*) => { $( ids.push(TypeId::of::<$t>()); )* };
    }
    registered!(push);
    ids
}

/// [`varlen_attention`] where backend `B` has the kernel (the backends Burn names `Flex`, `Wgpu`
/// and `Cuda`, with or without `Autodiff` and checkpointing, and wgpu without fusion); otherwise
/// q, k, v come back for the caller's own path.
#[allow(clippy::type_complexity)]
pub fn try_varlen_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layout: &VarlenLayout,
) -> Result<Result<Tensor<B, 4>, LayoutError>, [Tensor<B, 4>; 3]> {
    macro_rules! run {
        ($($t:ty),*) => { $(
            if TypeId::of::<B>() == TypeId::of::<$t>() {
                let out = varlen_attention::<$t>(same(q), same(k), same(v), layout);
                return Ok(out.map(same));
            }
        )* };
    }
    registered!(run);
    Err([q, k, v])
}

/// [`weighted_ce`] (the fused loss: logits recomputed chunk by chunk in the backward) where
/// backend `B` is one of those [`try_varlen_attention`] knows; otherwise h and w come back.
pub fn try_weighted_ce<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    t: &CeTargets,
) -> Result<Tensor<B, 1>, (Tensor<B, 2>, Tensor<B, 2>)> {
    macro_rules! run {
        ($($t:ty),*) => { $(
            if TypeId::of::<B>() == TypeId::of::<$t>() {
                return Ok(same(weighted_ce::<$t>(same(h), same(w), t)));
            }
        )* };
    }
    registered!(run);
    Err((h, w))
}

/// Bytes the device's memory pool holds (reserved pages), after releasing what it can first when
/// `cleanup`: a benchmark's measure of device memory. `device` is a Burn wgpu or CUDA device;
/// `None` for anything else.
pub fn pool_bytes(device: &dyn Any, cleanup: bool) -> Option<u64> {
    use cubecl::prelude::Runtime;
    if let Some(d) = device.downcast_ref::<burn::backend::wgpu::WgpuDevice>() {
        let client = burn::backend::wgpu::WgpuRuntime::client(d);
        if cleanup {
            client.memory_cleanup();
        }
        return client.memory_usage().ok().map(|u| u.bytes_reserved);
    }
    #[cfg(feature = "cuda")]
    if let Some(d) = device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        let client = cubecl::cuda::CudaRuntime::client(d);
        if cleanup {
            client.memory_cleanup();
        }
        return client.memory_usage().ok().map(|u| u.bytes_reserved);
    }
    None
}
