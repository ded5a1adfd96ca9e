//! The varlen causal attention kernels, written once in CubeCL (WGSL on wgpu, CUDA C++ on CUDA).
//!
//! FlashAttention-2's algorithm at its simplest: one workgroup (cube) per (tile, head), one unit
//! (thread) per token of the tile. Key/value (or query) tiles of the same sequence are staged in
//! workgroup memory; each unit keeps its own row in registers and an online softmax (running max
//! `m`, running sum `ℓ`), so the `[n, n]` score matrix never exists. Inputs may be f32, f16 or
//! bf16; every sum is f32. The forward saves the row log-sum-exp `lse = m + ln ℓ` (f32), from
//! which the backward recomputes each probability `p = exp(s − lse)` without a second softmax.
//!
//! Layouts (contiguous): q, out, dq `[rows, heads, L, hd]`; k, v, dk, dv `[rows, kv_heads, L, hd]`;
//! lse `[rows, heads, L]`; tiles `[n_tiles, 4]` = (row, seq_start, seq_len, offset) — see
//! `layout.rs`. Query head `h` reads key/value head `h / (heads / kv_heads)` (grouped-query).
//!
//! Notation below: `i` a query, `j` a key, `s = scale·qᵢ·kⱼ`, `D_i = Σ_d dOᵢ·Oᵢ`.
//!
//! Register blocking: each thread takes the keys (or queries) of a staged tile `sub` at a time.
//! Their scores live in a `sub`-long array indexed only by unrolled (compile-time) positions, so
//! they stay in registers, and the loop over the head dimension runs once per `sub` keys — each
//! of the thread's own row elements (`q`, the accumulator) is read once for `sub` products.
//!
//! Loops over the head dimension run `du` elements per iteration (unrolled here, 4 when the head
//! size allows) and are bounded by `hd_rt`, the head size passed at run time. Both for Mesa's
//! llvmpipe (lavapipe, CI's software Vulkan): it stops *every* loop of an invocation after 65,535
//! iterations in total — silently, leaving outputs unwritten (seen: a 577-token sequence lost its
//! last 105 rows) — and with compile-time bounds its LLVM unrolled everything and took minutes
//! per shader. Per thread the count is about `keys × (2·hd/sub + 2·hd/block) / du`: under the
//! limit up to about 20k-token sequences at head size 64. Real GPUs have no such limit.

// Kernel code is plain integer arithmetic the CubeCL frontend surely expands; `div_ceil` is a
// library call it may or may not.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

/// "Minus infinity" that stays finite: `exp(NEG − x) = 0` and `NEG − NEG = 0`, never NaN.
const NEG: f32 = -1.0e30;

/// Whether query `i` may see key `j` (both offsets in the same sequence).
#[cube]
fn visible(i: usize, j: usize, window: usize) -> bool {
    let mut ok = j <= i;
    if ok && window > 0 {
        ok = i - j < window;
    }
    ok
}

/// This workgroup's tile (`CUBE_POS_X`): (row, sequence start, sequence length, offset in it).
#[cube]
fn this_tile(tiles: &Tensor<u32>) -> (usize, usize, usize, usize) {
    let t = CUBE_POS_X as usize * 4;
    (tiles[t] as usize, tiles[t + 1] as usize, tiles[t + 2] as usize, tiles[t + 3] as usize)
}

/// Stages row `j` of a sequence (its first element at `at`) of `src` into `dst[u·hd ..]` as f32;
/// zeros past the sequence's end, so every unit of the workgroup takes part in the load.
#[cube]
fn stage_row<F: Float>(
    src: &Tensor<F>,
    at: usize,
    j: usize,
    len: usize,
    u: usize,
    hd_rt: usize,
    dst: &mut SharedMemory<f32>,
    #[comptime] hd: usize,
    #[comptime] du: usize,
) {
    for dc in 0..hd_rt / du {
        #[unroll]
        for e in 0..du {
            let d = dc * du + e;
            let mut x = 0.0f32;
            if j < len {
                x = f32::cast_from(src[at + j * hd + d]);
            }
            dst[u * hd + d] = x;
        }
    }
}

/// The key tiles a query tile at `off` can see: the first one (the window's reach, rounded down
/// to a tile) and how many, up to the query tile itself.
#[cube]
fn key_tiles(off: usize, len: usize, window: usize, #[comptime] block: usize) -> (usize, usize) {
    let k_end = (off + block).min(len);
    let mut k_lo = 0usize;
    if window > 0 && off + 1 > window {
        k_lo = (off + 1 - window) / block * block;
    }
    (k_lo, (k_end - k_lo + block - 1) / block)
}

/// out, lse = softmax(scale·q·kᵀ)·v over each sequence's visible keys.
///
/// Cube (tile, head); unit `u` owns query `offset + u` of the tile's sequence.
#[cube(launch_unchecked)]
pub fn forward<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    tiles: &Tensor<u32>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    window: u32,
    hd_rt: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] sub: usize,
    #[comptime] du: usize,
    #[define(F)] _dtype: StorageType,
) {
    let head = CUBE_POS_Y as usize;
    let (row, start, len, off) = this_tile(tiles);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let kvh = head / (heads / kv_heads);
    let window = window as usize;
    let hd_rt = hd_rt as usize;
    let u = UNIT_POS_X as usize;
    let i = off + u;
    let valid = i < len;
    let q_at = ((row * heads + head) * l + start + i) * hd;
    let kv_at = ((row * kv_heads + kvh) * l + start) * hd;

    let mut qv = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    for d in 0..hd_rt {
        let mut x = 0.0f32;
        if valid {
            x = f32::cast_from(q[q_at + d]) * scale;
        }
        qv[d] = x;
        acc[d] = 0.0;
    }
    let mut m = f32::new(NEG);
    let mut sum = 0.0f32;
    let mut ks = SharedMemory::<f32>::new(block * hd);
    let mut vs = SharedMemory::<f32>::new(block * hd);
    let mut sc = Array::<f32>::new(sub);

    let (k_lo, n_kt) = key_tiles(off, len, window, block);
    for tk in 0..n_kt {
        let kt = k_lo + tk * block;
        stage_row(k, kv_at, kt + u, len, u, hd_rt, &mut ks, hd, du);
        stage_row(v, kv_at, kt + u, len, u, hd_rt, &mut vs, hd, du);
        sync_cube();
        if valid {
            for jb in 0..block / sub {
                let j0 = kt + jb * sub;
                // Keys after the query (the diagonal tile's upper half) are skipped whole.
                if j0 <= i {
                    let base = jb * sub * hd;
                    #[unroll]
                    for jj in 0..sub {
                        sc[jj] = 0.0;
                    }
                    for dc in 0..hd_rt / du {
                        #[unroll]
                        for e in 0..du {
                            let d = dc * du + e;
                            let qd = qv[d];
                            #[unroll]
                            for jj in 0..sub {
                                sc[jj] += qd * ks[base + jj * hd + d];
                            }
                        }
                    }
                    let mut smax = f32::new(NEG);
                    #[unroll]
                    for jj in 0..sub {
                        if visible(i, j0 + jj, window) {
                            smax = max(smax, sc[jj]);
                        }
                    }
                    let m_new = max(m, smax);
                    let corr = (m - m_new).exp();
                    sum *= corr;
                    #[unroll]
                    for jj in 0..sub {
                        let mut p = 0.0f32;
                        if visible(i, j0 + jj, window) {
                            p = (sc[jj] - m_new).exp();
                        }
                        sc[jj] = p;
                        sum += p;
                    }
                    for dc in 0..hd_rt / du {
                        #[unroll]
                        for e in 0..du {
                            let d = dc * du + e;
                            let mut a = acc[d] * corr;
                            #[unroll]
                            for jj in 0..sub {
                                a += sc[jj] * vs[base + jj * hd + d];
                            }
                            acc[d] = a;
                        }
                    }
                    m = m_new;
                }
            }
        }
        sync_cube();
    }
    if valid {
        // Every query sees at least itself, so `sum ≥ 1` here.
        for d in 0..hd_rt {
            out[q_at + d] = F::cast_from(acc[d] / sum);
        }
        lse[(row * heads + head) * l + start + i] = m + sum.ln();
    }
}

/// dq_i = scale · Σ_j p_ij (dO_i·v_j − D_i) k_j, with p_ij = exp(s_ij − lse_i).
///
/// Same grid as [`forward`]: cube (tile, head), unit = query.
#[cube(launch_unchecked)]
pub fn backward_dq<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    tiles: &Tensor<u32>,
    dq: &mut Tensor<F>,
    scale: f32,
    window: u32,
    hd_rt: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] sub: usize,
    #[comptime] du: usize,
    #[define(F)] _dtype: StorageType,
) {
    let head = CUBE_POS_Y as usize;
    let (row, start, len, off) = this_tile(tiles);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let kvh = head / (heads / kv_heads);
    let window = window as usize;
    let hd_rt = hd_rt as usize;
    let u = UNIT_POS_X as usize;
    let i = off + u;
    let valid = i < len;
    let q_at = ((row * heads + head) * l + start + i) * hd;
    let kv_at = ((row * kv_heads + kvh) * l + start) * hd;

    let mut qv = Array::<f32>::new(hd);
    let mut dov = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    let mut di = 0.0f32;
    let mut li = 0.0f32;
    for d in 0..hd_rt {
        let mut x = 0.0f32;
        let mut g = 0.0f32;
        if valid {
            x = f32::cast_from(q[q_at + d]) * scale;
            g = f32::cast_from(dout[q_at + d]);
            di += g * f32::cast_from(out[q_at + d]);
        }
        qv[d] = x;
        dov[d] = g;
        acc[d] = 0.0;
    }
    if valid {
        li = lse[(row * heads + head) * l + start + i];
    }
    let mut ks = SharedMemory::<f32>::new(block * hd);
    let mut vs = SharedMemory::<f32>::new(block * hd);
    let mut sc = Array::<f32>::new(sub);
    let mut dp = Array::<f32>::new(sub);

    let (k_lo, n_kt) = key_tiles(off, len, window, block);
    for tk in 0..n_kt {
        let kt = k_lo + tk * block;
        stage_row(k, kv_at, kt + u, len, u, hd_rt, &mut ks, hd, du);
        stage_row(v, kv_at, kt + u, len, u, hd_rt, &mut vs, hd, du);
        sync_cube();
        if valid {
            for jb in 0..block / sub {
                let j0 = kt + jb * sub;
                if j0 <= i {
                    let base = jb * sub * hd;
                    #[unroll]
                    for jj in 0..sub {
                        sc[jj] = 0.0;
                        dp[jj] = 0.0;
                    }
                    for dc in 0..hd_rt / du {
                        #[unroll]
                        for e in 0..du {
                            let d = dc * du + e;
                            let (qd, gd) = (qv[d], dov[d]);
                            #[unroll]
                            for jj in 0..sub {
                                sc[jj] += qd * ks[base + jj * hd + d];
                                dp[jj] += gd * vs[base + jj * hd + d];
                            }
                        }
                    }
                    #[unroll]
                    for jj in 0..sub {
                        let mut ds = 0.0f32;
                        if visible(i, j0 + jj, window) {
                            ds = (sc[jj] - li).exp() * (dp[jj] - di);
                        }
                        sc[jj] = ds;
                    }
                    for dc in 0..hd_rt / du {
                        #[unroll]
                        for e in 0..du {
                            let d = dc * du + e;
                            let mut a = acc[d];
                            #[unroll]
                            for jj in 0..sub {
                                a += sc[jj] * ks[base + jj * hd + d];
                            }
                            acc[d] = a;
                        }
                    }
                }
            }
        }
        sync_cube();
    }
    if valid {
        for d in 0..hd_rt {
            dq[q_at + d] = F::cast_from(acc[d] * scale);
        }
    }
}

/// dv_j = Σ_i p_ij dO_i and dk_j = scale · Σ_i p_ij (dO_i·v_j − D_i) q_i, summed over the query
/// heads that share key/value head `kvh` — no atomics: each key is owned by one unit.
///
/// Cube (tile, kv head); unit `u` owns key `offset + u`; query tiles of the same sequence at or
/// after it (within the window) are staged in workgroup memory with their `lse` and `D`.
#[cube(launch_unchecked)]
pub fn backward_dkdv<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &Tensor<F>,
    dout: &Tensor<F>,
    lse: &Tensor<f32>,
    tiles: &Tensor<u32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    window: u32,
    hd_rt: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] sub: usize,
    #[comptime] du: usize,
    #[define(F)] _dtype: StorageType,
) {
    let kvh = CUBE_POS_Y as usize;
    let (row, start, len, off) = this_tile(tiles);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let group = heads / kv_heads;
    let window = window as usize;
    let hd_rt = hd_rt as usize;
    let u = UNIT_POS_X as usize;
    let j = off + u;
    let valid = j < len;
    let kv_at = ((row * kv_heads + kvh) * l + start + j) * hd;

    let mut kx = Array::<f32>::new(hd);
    let mut vx = Array::<f32>::new(hd);
    let mut dkv = Array::<f32>::new(hd);
    let mut dvv = Array::<f32>::new(hd);
    for d in 0..hd_rt {
        let mut a = 0.0f32;
        let mut b = 0.0f32;
        if valid {
            a = f32::cast_from(k[kv_at + d]);
            b = f32::cast_from(v[kv_at + d]);
        }
        kx[d] = a;
        vx[d] = b;
        dkv[d] = 0.0;
        dvv[d] = 0.0;
    }
    let mut qs = SharedMemory::<f32>::new(block * hd);
    let mut dos = SharedMemory::<f32>::new(block * hd);
    let mut ls = SharedMemory::<f32>::new(block);
    let mut dd = SharedMemory::<f32>::new(block);
    let mut sc = Array::<f32>::new(sub);
    let mut dp = Array::<f32>::new(sub);

    // Query tiles that can see this key tile: from the tile itself to the window's reach.
    let mut q_end = len;
    if window > 0 {
        q_end = (off + block - 1 + window).min(len);
    }
    let n_qt = (q_end - off + block - 1) / block;
    for g in 0..group {
        let head = kvh * group + g;
        let q_base = (row * heads + head) * l + start;
        for tq in 0..n_qt {
            let qt = off + tq * block;
            let i = qt + u;
            let mut di = 0.0f32;
            let mut li = 0.0f32;
            for dc in 0..hd_rt / du {
                #[unroll]
                for e in 0..du {
                    let d = dc * du + e;
                    let mut qx = 0.0f32;
                    let mut gx = 0.0f32;
                    if i < len {
                        qx = f32::cast_from(q[(q_base + i) * hd + d]);
                        gx = f32::cast_from(dout[(q_base + i) * hd + d]);
                        di += gx * f32::cast_from(out[(q_base + i) * hd + d]);
                    }
                    qs[u * hd + d] = qx;
                    dos[u * hd + d] = gx;
                }
            }
            if i < len {
                li = lse[q_base + i];
            }
            ls[u] = li;
            dd[u] = di;
            sync_cube();
            if valid {
                for ib in 0..block / sub {
                    let i0 = qt + ib * sub;
                    // Queries before the key (the diagonal tile's lower half) are skipped whole.
                    if i0 + sub > j {
                        let base = ib * sub;
                        #[unroll]
                        for ii in 0..sub {
                            sc[ii] = 0.0;
                            dp[ii] = 0.0;
                        }
                        for dc in 0..hd_rt / du {
                            #[unroll]
                            for e in 0..du {
                                let d = dc * du + e;
                                let (kd, vd) = (kx[d], vx[d]);
                                #[unroll]
                                for ii in 0..sub {
                                    sc[ii] += qs[(base + ii) * hd + d] * kd;
                                    dp[ii] += dos[(base + ii) * hd + d] * vd;
                                }
                            }
                        }
                        #[unroll]
                        for ii in 0..sub {
                            let qi = i0 + ii;
                            let mut p = 0.0f32;
                            let mut ds = 0.0f32;
                            if qi < len && visible(qi, j, window) {
                                p = (sc[ii] * scale - ls[base + ii]).exp();
                                ds = p * (dp[ii] - dd[base + ii]);
                            }
                            sc[ii] = p;
                            dp[ii] = ds;
                        }
                        for dc in 0..hd_rt / du {
                            #[unroll]
                            for e in 0..du {
                                let d = dc * du + e;
                                let mut a = dkv[d];
                                let mut b = dvv[d];
                                #[unroll]
                                for ii in 0..sub {
                                    a += dp[ii] * qs[(base + ii) * hd + d];
                                    b += sc[ii] * dos[(base + ii) * hd + d];
                                }
                                dkv[d] = a;
                                dvv[d] = b;
                            }
                        }
                    }
                }
            }
            sync_cube();
        }
    }
    if valid {
        for d in 0..hd_rt {
            dk[kv_at + d] = F::cast_from(dkv[d] * scale);
            dv[kv_at + d] = F::cast_from(dvv[d]);
        }
    }
}
