//! Launching the CubeCL kernels on Burn's CubeCL backends (`CubeBackend<R, …>`: wgpu, CUDA).

use burn_backend::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::zeros_client;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::kernel;
use super::layout::{TILE_FIELDS, VarlenLayout};
use crate::{FloatTensor, VarlenBackend};

/// Tokens per tile: as many as fit two `[block, hd]` f32 tiles (plus two `[block]` vectors) in
/// the device's workgroup memory, at most 64, at least 4. WebGPU guarantees only 16 KiB.
pub fn block_for(hd: usize, max_shared_bytes: usize) -> usize {
    let mut block = 64;
    while block > 4 && (2 * block * hd + 2 * block) * 4 > max_shared_bytes {
        block /= 2;
    }
    block
}

/// Keys (or queries) a thread scores at once, in registers: 16, or the whole tile when it is
/// smaller (tiles are powers of two ≥ 4). See the register-blocking note in `kernel.rs`.
pub fn sub_for(block: usize) -> usize {
    block.min(16)
}

struct Launch<R: CubeRuntime> {
    client: ComputeClient<R>,
    device: R::Device,
    tiles: CubeTensor<R>,
    n_tiles: u32,
    block: usize,
    sub: usize,
    du: usize,
    hd: usize,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    window: u32,
}

fn prepare<R: CubeRuntime>(q: &CubeTensor<R>, k: &CubeTensor<R>, layout: &VarlenLayout) -> Launch<R> {
    let [rows, heads, l, hd] = dims4(q);
    let [_, kv_heads, _, _] = dims4(k);
    let client = q.client.clone();
    let block = block_for(hd, client.properties().hardware.max_shared_memory_size);
    let tiles = layout.tiles(block);
    let n_tiles = tiles.len() / TILE_FIELDS;
    debug_assert_eq!(layout.segments.len(), rows);
    debug_assert_eq!(layout.row_len, l);
    // One dummy tile keeps the buffer non-empty when nothing is to be done (all padding).
    let data = if tiles.is_empty() { vec![0u32; TILE_FIELDS] } else { tiles };
    let handle = client.create_from_slice(u32::as_bytes(&data));
    let tiles = CubeTensor::new_contiguous(
        client.clone(),
        q.device.clone(),
        Shape::new([data.len() / TILE_FIELDS, TILE_FIELDS]),
        handle,
        DType::U32,
    );
    Launch {
        client,
        device: q.device.clone(),
        tiles,
        n_tiles: n_tiles as u32,
        block,
        sub: sub_for(block),
        du: if hd.is_multiple_of(4) { 4 } else { 1 },
        hd,
        heads,
        kv_heads,
        scale: 1.0 / (hd as f32).sqrt(),
        window: layout.window.unwrap_or(0) as u32,
    }
}

fn dims4<R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; 4] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3]]
}

fn zeros<R: CubeRuntime>(at: &Launch<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    zeros_client(at.client.clone(), at.device.clone(), shape, dtype)
}

/// Forward: `(out [rows, heads, L, hd], lse [rows, heads, L] f32)`; padding rows stay zero.
pub fn forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    layout: &VarlenLayout,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let at = prepare(&q, &k, layout);
    let [rows, heads, l, hd] = dims4(&q);
    let dtype = q.dtype;
    let out = zeros(&at, Shape::new([rows, heads, l, hd]), dtype);
    let lse = zeros(&at, Shape::new([rows, heads, l]), DType::F32);
    if at.n_tiles > 0 {
        unsafe {
            kernel::forward::launch_unchecked::<R>(
                &at.client,
                CubeCount::Static(at.n_tiles, at.heads as u32, 1),
                CubeDim::new_1d(at.block as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                at.tiles.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                at.scale,
                at.window,
                at.hd as u32,
                at.hd,
                at.block,
                at.sub,
                at.du,
                dtype.into(),
            )
        }
    }
    (out, lse)
}

/// Backward: `(dq, dk, dv)` shaped like q, k, v.
#[allow(clippy::too_many_arguments)]
pub fn backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    dout: CubeTensor<R>,
    layout: &VarlenLayout,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (out, lse, dout) = (into_contiguous(out), into_contiguous(lse), into_contiguous(dout));
    let at = prepare(&q, &k, layout);
    let dtype = q.dtype;
    let dq = zeros(&at, q.shape(), dtype);
    let dk = zeros(&at, k.shape(), dtype);
    let dv = zeros(&at, v.shape(), dtype);
    if at.n_tiles > 0 {
        unsafe {
            kernel::backward_dq::launch_unchecked::<R>(
                &at.client,
                CubeCount::Static(at.n_tiles, at.heads as u32, 1),
                CubeDim::new_1d(at.block as u32),
                q.clone().into_tensor_arg(),
                k.clone().into_tensor_arg(),
                v.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                dout.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                at.tiles.clone().into_tensor_arg(),
                dq.clone().into_tensor_arg(),
                at.scale,
                at.window,
                at.hd as u32,
                at.hd,
                at.block,
                at.sub,
                at.du,
                dtype.into(),
            );
            kernel::backward_dkdv::launch_unchecked::<R>(
                &at.client,
                CubeCount::Static(at.n_tiles, at.kv_heads as u32, 1),
                CubeDim::new_1d(at.block as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                out.into_tensor_arg(),
                dout.into_tensor_arg(),
                lse.into_tensor_arg(),
                at.tiles.clone().into_tensor_arg(),
                dk.clone().into_tensor_arg(),
                dv.clone().into_tensor_arg(),
                at.scale,
                at.window,
                at.hd as u32,
                at.hd,
                at.block,
                at.sub,
                at.du,
                dtype.into(),
            );
        }
    }
    (dq, dk, dv)
}

impl<R, F, I, BT> VarlenBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn varlen_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward(q, k, v, layout)
    }

    fn varlen_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> [FloatTensor<Self>; 3] {
        let (dq, dk, dv) = backward(q, k, v, out, lse, dout, layout);
        [dq, dk, dv]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_fit_webgpu_minimum() {
        for hd in [64, 80, 96, 128] {
            let b = super::block_for(hd, 16 * 1024);
            assert!((2 * b * hd + 2 * b) * 4 <= 16 * 1024, "hd {hd} block {b}");
            assert!(b >= 4);
        }
        assert_eq!(super::block_for(64, 48 * 1024), 64);
    }
}
