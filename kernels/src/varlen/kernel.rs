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
//! Loops over the head dimension run in chunks of `unroll` (unrolled here) times `chunks` (a
//! run-time bound). Why both: Mesa's llvmpipe (lavapipe, CI's software Vulkan) stops *every* loop
//! of an invocation after 65,535 iterations in total — silently, leaving outputs unwritten
//! (seen: a 577-token sequence lost its last 105 rows). Unrolling keeps the count at about
//! `keys × (2·hd/unroll + 1)` per thread; a run-time bound stops llvmpipe's LLVM from unrolling
//! the rest itself, which took it minutes per shader. Real GPUs have no such limit.

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
    chunks: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] unroll: usize,
    #[define(F)] _dtype: StorageType,
) {
    let t = CUBE_POS_X as usize * 4;
    let head = CUBE_POS_Y as usize;
    let (row, start, len, off) =
        (tiles[t] as usize, tiles[t + 1] as usize, tiles[t + 2] as usize, tiles[t + 3] as usize);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let kvh = head / (heads / kv_heads);
    let window = window as usize;
    // hd / unroll, passed at run time so the driver's compiler does not unroll these loops
    // again (llvmpipe then compiled for minutes).
    let chunks = chunks as usize;
    let u = UNIT_POS_X as usize;
    let i = off + u;
    let valid = i < len;
    let q_at = ((row * heads + head) * l + start + i) * hd;
    let kv_at = ((row * kv_heads + kvh) * l + start) * hd;

    let mut qv = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    for dc in 0..chunks {
        #[unroll]
        for du in 0..unroll {
            let d = dc * unroll + du;
            qv[d] = 0.0;
            acc[d] = 0.0;
        }
    }
    if valid {
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                qv[d] = f32::cast_from(q[q_at + d]) * scale;
            }
        }
    }
    let mut m = f32::new(NEG);
    let mut sum = 0.0f32;
    let mut ks = SharedMemory::<f32>::new(block * hd);
    let mut vs = SharedMemory::<f32>::new(block * hd);
    let mut sc = Array::<f32>::new(block);

    // Key tiles this query tile can see: from the window's reach (rounded to a tile) to its end.
    let k_end = (off + block).min(len);
    let mut k_lo = 0usize;
    if window > 0 && off + 1 > window {
        k_lo = (off + 1 - window) / block * block;
    }
    let n_kt = (k_end - k_lo + block - 1) / block;
    for tk in 0..n_kt {
        let kt = k_lo + tk * block;
        let j = kt + u;
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                let mut kx = 0.0f32;
                let mut vx = 0.0f32;
                if j < len {
                    kx = f32::cast_from(k[kv_at + j * hd + d]);
                    vx = f32::cast_from(v[kv_at + j * hd + d]);
                }
                ks[u * hd + d] = kx;
                vs[u * hd + d] = vx;
            }
        }
        sync_cube();
        if valid {
            // Scores of this tile, then one rescale of the accumulator per tile (not per key).
            let mut tmax = f32::new(NEG);
            for jj in 0..block {
                let mut s = f32::new(NEG);
                if visible(i, kt + jj, window) {
                    let mut dot = 0.0f32;
                    for dc in 0..chunks {
                        #[unroll]
                        for du in 0..unroll {
                            let d = dc * unroll + du;
                            dot += qv[d] * ks[jj * hd + d];
                        }
                    }
                    s = dot;
                }
                sc[jj] = s;
                tmax = max(tmax, s);
            }
            let m_new = max(m, tmax);
            let corr = (m - m_new).exp();
            sum *= corr;
            for dc in 0..chunks {
                #[unroll]
                for du in 0..unroll {
                    let d = dc * unroll + du;
                    acc[d] *= corr;
                }
            }
            for jj in 0..block {
                if visible(i, kt + jj, window) {
                    let p = (sc[jj] - m_new).exp();
                    sum += p;
                    for dc in 0..chunks {
                        #[unroll]
                        for du in 0..unroll {
                            let d = dc * unroll + du;
                            acc[d] += p * vs[jj * hd + d];
                        }
                    }
                }
            }
            m = m_new;
        }
        sync_cube();
    }
    if valid {
        // Every query sees at least itself, so `sum ≥ 1` here.
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                out[q_at + d] = F::cast_from(acc[d] / sum);
            }
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
    chunks: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] unroll: usize,
    #[define(F)] _dtype: StorageType,
) {
    let t = CUBE_POS_X as usize * 4;
    let head = CUBE_POS_Y as usize;
    let (row, start, len, off) =
        (tiles[t] as usize, tiles[t + 1] as usize, tiles[t + 2] as usize, tiles[t + 3] as usize);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let kvh = head / (heads / kv_heads);
    let window = window as usize;
    // hd / unroll, passed at run time so the driver's compiler does not unroll these loops
    // again (llvmpipe then compiled for minutes).
    let chunks = chunks as usize;
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
    for dc in 0..chunks {
        #[unroll]
        for du in 0..unroll {
            let d = dc * unroll + du;
            qv[d] = 0.0;
            dov[d] = 0.0;
            acc[d] = 0.0;
        }
    }
    if valid {
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                qv[d] = f32::cast_from(q[q_at + d]) * scale;
                let g = f32::cast_from(dout[q_at + d]);
                dov[d] = g;
                di += g * f32::cast_from(out[q_at + d]);
            }
        }
        li = lse[(row * heads + head) * l + start + i];
    }
    let mut ks = SharedMemory::<f32>::new(block * hd);
    let mut vs = SharedMemory::<f32>::new(block * hd);

    let k_end = (off + block).min(len);
    let mut k_lo = 0usize;
    if window > 0 && off + 1 > window {
        k_lo = (off + 1 - window) / block * block;
    }
    let n_kt = (k_end - k_lo + block - 1) / block;
    for tk in 0..n_kt {
        let kt = k_lo + tk * block;
        let j = kt + u;
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                let mut kx = 0.0f32;
                let mut vx = 0.0f32;
                if j < len {
                    kx = f32::cast_from(k[kv_at + j * hd + d]);
                    vx = f32::cast_from(v[kv_at + j * hd + d]);
                }
                ks[u * hd + d] = kx;
                vs[u * hd + d] = vx;
            }
        }
        sync_cube();
        if valid {
            for jj in 0..block {
                if visible(i, kt + jj, window) {
                    let mut s = 0.0f32;
                    let mut dp = 0.0f32;
                    for dc in 0..chunks {
                        #[unroll]
                        for du in 0..unroll {
                            let d = dc * unroll + du;
                            s += qv[d] * ks[jj * hd + d];
                            dp += dov[d] * vs[jj * hd + d];
                        }
                    }
                    let ds = (s - li).exp() * (dp - di);
                    for dc in 0..chunks {
                        #[unroll]
                        for du in 0..unroll {
                            let d = dc * unroll + du;
                            acc[d] += ds * ks[jj * hd + d];
                        }
                    }
                }
            }
        }
        sync_cube();
    }
    if valid {
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                dq[q_at + d] = F::cast_from(acc[d] * scale);
            }
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
    chunks: u32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
    #[comptime] unroll: usize,
    #[define(F)] _dtype: StorageType,
) {
    let t = CUBE_POS_X as usize * 4;
    let kvh = CUBE_POS_Y as usize;
    let (row, start, len, off) =
        (tiles[t] as usize, tiles[t + 1] as usize, tiles[t + 2] as usize, tiles[t + 3] as usize);
    let (heads, kv_heads, l) = (q.shape(1), k.shape(1), q.shape(2));
    let group = heads / kv_heads;
    let window = window as usize;
    // hd / unroll, passed at run time so the driver's compiler does not unroll these loops
    // again (llvmpipe then compiled for minutes).
    let chunks = chunks as usize;
    let u = UNIT_POS_X as usize;
    let j = off + u;
    let valid = j < len;
    let kv_at = ((row * kv_heads + kvh) * l + start + j) * hd;

    let mut kx = Array::<f32>::new(hd);
    let mut vx = Array::<f32>::new(hd);
    let mut dkv = Array::<f32>::new(hd);
    let mut dvv = Array::<f32>::new(hd);
    for dc in 0..chunks {
        #[unroll]
        for du in 0..unroll {
            let d = dc * unroll + du;
            kx[d] = 0.0;
            vx[d] = 0.0;
            dkv[d] = 0.0;
            dvv[d] = 0.0;
        }
    }
    if valid {
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                kx[d] = f32::cast_from(k[kv_at + d]);
                vx[d] = f32::cast_from(v[kv_at + d]);
            }
        }
    }
    let mut qs = SharedMemory::<f32>::new(block * hd);
    let mut dos = SharedMemory::<f32>::new(block * hd);
    let mut ls = SharedMemory::<f32>::new(block);
    let mut dd = SharedMemory::<f32>::new(block);

    // Query tiles that can see this key tile: from the tile itself to the window's reach.
    let mut q_end = len;
    if window > 0 {
        q_end = (off + block - 1 + window).min(len);
    }
    for g in 0..group {
        let head = kvh * group + g;
        let q_base = (row * heads + head) * l + start;
        let n_qt = (q_end - off + block - 1) / block;
        for tq in 0..n_qt {
            let qt = off + tq * block;
            let i = qt + u;
            let mut di = 0.0f32;
            let mut li = 0.0f32;
            for dc in 0..chunks {
                #[unroll]
                for du in 0..unroll {
                    let d = dc * unroll + du;
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
                for ii in 0..block {
                    let qi = qt + ii;
                    if qi < len && visible(qi, j, window) {
                        let mut s = 0.0f32;
                        let mut dp = 0.0f32;
                        for dc in 0..chunks {
                            #[unroll]
                            for du in 0..unroll {
                                let d = dc * unroll + du;
                                s += qs[ii * hd + d] * kx[d];
                                dp += dos[ii * hd + d] * vx[d];
                            }
                        }
                        let p = (s * scale - ls[ii]).exp();
                        let ds = p * (dp - dd[ii]);
                        for dc in 0..chunks {
                            #[unroll]
                            for du in 0..unroll {
                                let d = dc * unroll + du;
                                dvv[d] += p * dos[ii * hd + d];
                                dkv[d] += ds * qs[ii * hd + d];
                            }
                        }
                    }
                }
            }
            sync_cube();
        }
    }
    if valid {
        for dc in 0..chunks {
            #[unroll]
            for du in 0..unroll {
                let d = dc * unroll + du;
                dk[kv_at + d] = F::cast_from(dkv[d] * scale);
                dv[kv_at + d] = F::cast_from(dvv[d]);
            }
        }
    }
}
