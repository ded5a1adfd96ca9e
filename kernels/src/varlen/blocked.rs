//! The varlen attention on the host as blocked matrix products: the CPU backend's kernel.
//!
//! [`super::host`] computes scores one query at a time (1 × 64-key dot blocks): simple, but
//! every multiply–add loads an operand, so at model widths it ran at a fraction of the machine's
//! GEMM speed and was half of a d = 512 training step. Here each task multiplies whole blocks
//! with the `gemm` crate (the same microkernels as Burn's CPU matmul), as FlashAttention's CPU
//! path in PyTorch does:
//!
//! ```text
//!   forward, per (row, sequence, head, block of QUERY_BLOCK queries [i0, i1)):
//!     S = Q[i0:i1]·K[k0:i1]ᵀ·scale        k0 = the block's first visible key (0 without a window)
//!     P = softmax(S) over each query's visible keys (causal, window), lse saved
//!     O = P·V[k0:i1]
//!   backward, per (row, sequence, KV head), over its query heads and query blocks:
//!     P  = exp(S − lse)                    (recomputed)
//!     dP = dO·V[k0:i1]ᵀ,  dS = P ⊙ (dP − D),  D = rowsum(dO ⊙ O)
//!     dQ = dS·K·scale;  dK += dSᵀ·Q·scale;  dV += Pᵀ·dO
//! ```
//!
//! A block's scores span all the keys its queries see, so the softmax is exact (no online
//! rescaling); the triangle past the diagonal costs at most QUERY_BLOCK²/2 wasted products per
//! block. Memory is one `[QUERY_BLOCK, i1 − k0]` block per running task. Every output element is
//! written by one task, its sums in a fixed order with single-threaded `gemm`s, so results do not
//! depend on the thread count (the CPU resume test needs bit-identical reruns). Tested against
//! [`super::host`] and the textbook computation.

use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::host::{Dims, visible};
use super::layout::VarlenLayout;
use super::vector::{exp, row_terms};

/// Queries per block.
pub const QUERY_BLOCK: usize = 128;

/// `dst (m×n) = [dst +] alpha_ab · a (m×k) · b (k×n)`, each operand given by its row and column
/// strides (so a transpose is a swap of strides). Single-threaded: tasks are the parallelism.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, accumulate): (usize, bool),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    alpha_ab: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(dst.len() >= extent(m, n, dst_rs, 1), "dst is {m}×{n}");
    if k > 0 {
        assert!(a.len() >= extent(m, k, a_rs, a_cs) && b.len() >= extent(k, n, b_rs, b_cs));
    }
    // SAFETY: the asserts above keep every index the strides reach inside the slices; `dst` does
    // not alias `a` or `b` (a `&mut` and two `&`).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            alpha_ab,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// One block of queries: its sequence and head, first query, size, and the first key any of them
/// sees.
#[derive(Clone, Copy)]
struct Block {
    row: usize,
    start: usize,
    head: usize,
    i0: usize,
    nq: usize,
    k0: usize,
}

impl Block {
    fn nk(&self) -> usize {
        self.i0 + self.nq - self.k0
    }
}

fn blocks(len: usize, window: Option<usize>) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..len).step_by(QUERY_BLOCK).map(move |i0| (i0, QUERY_BLOCK.min(len - i0), visible(i0, window).0))
}

/// `s (nq × nk)` ← the block's probabilities: `exp(s − shift)` on each query's visible keys, 0
/// elsewhere. `lse = None`: the softmax of each row (its log-sum-exp returned per row); else
/// `exp(s − lse)` with the saved log-sum-exp of each row. Compiled a second time for AVX2 + FMA
/// and picked at run time where the CPU has them (the `exp` polynomial vectorises).
fn probabilities(s: &mut [f32], b: &Block, window: Option<usize>, lse: Option<&[f32]>) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(s: &mut [f32], b: &Block, window: Option<usize>, lse: Option<&[f32]>) -> Vec<f32> {
            probabilities_on(s, b, window, lse)
        }
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2(s, b, window, lse) };
    }
    probabilities_on(s, b, window, lse)
}

#[inline(always)]
fn probabilities_on(s: &mut [f32], b: &Block, window: Option<usize>, lse: Option<&[f32]>) -> Vec<f32> {
    let nk = b.nk();
    let mut out = vec![0.0f32; b.nq];
    for (qi, row) in s.chunks_exact_mut(nk).enumerate() {
        let (lo, hi) = visible(b.i0 + qi, window);
        let (a, e) = (lo - b.k0, hi - b.k0);
        row[..a].fill(0.0);
        row[e..].fill(0.0);
        let seen = &mut row[a..e];
        let shift =
            lse.map_or_else(|| lanes(seen, f32::NEG_INFINITY, |m, x| if x > m { x } else { m }), |l| l[qi]);
        seen.iter_mut().for_each(|x| *x = exp(*x - shift));
        if lse.is_none() {
            let sum = lanes(seen, 0.0, |acc, x| acc + x);
            let inv = 1.0 / sum;
            seen.iter_mut().for_each(|x| *x *= inv);
            out[qi] = shift + sum.ln();
        }
    }
    out
}

/// A reduction over 16 lanes, then over the lanes, in a fixed order: it vectorises (a plain
/// left-to-right fold of floats cannot) and gives the same bits every run.
#[inline(always)]
fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32 + Copy) -> f32 {
    let mut acc = [init; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Attention forward: `(out [rows, heads, L, hd], lse [rows, heads, L])`, zero at padding.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], d: Dims, layout: &VarlenLayout) -> (Vec<f32>, Vec<f32>) {
    let hd = d.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut work = Vec::new();
    for (row, segs) in layout.segments.iter().enumerate() {
        for &(start, len) in segs {
            for head in 0..d.heads {
                for (i0, nq, k0) in blocks(len, layout.window) {
                    work.push(Block { row, start, head, i0, nq, k0 });
                }
            }
        }
    }
    let parts: Vec<(Vec<f32>, Vec<f32>)> = work
        .par_iter()
        .map(|b| {
            let nk = b.nk();
            let qa = d.q_at(b.row, b.head, b.start + b.i0);
            let ka = d.kv_at(b.row, b.head / d.group(), b.start + b.k0);
            let mut s = vec![0.0f32; b.nq * nk];
            matmul((b.nq, nk, hd), &mut s, (nk, false), &q[qa..], (hd, 1), &k[ka..], (1, hd), scale);
            let lse = probabilities(&mut s, b, layout.window, None);
            let mut o = vec![0.0f32; b.nq * hd];
            matmul((b.nq, hd, nk), &mut o, (hd, false), &s, (nk, 1), &v[ka..], (hd, 1), 1.0);
            (o, lse)
        })
        .collect();
    let mut out = vec![0.0f32; q.len()];
    let mut lse = vec![0.0f32; q.len() / hd.max(1)];
    for (b, (o, l)) in work.iter().zip(parts) {
        let at = d.q_at(b.row, b.head, b.start + b.i0);
        out[at..at + o.len()].copy_from_slice(&o);
        lse[at / hd..at / hd + l.len()].copy_from_slice(&l);
    }
    (out, lse)
}

/// Attention backward: `[dq, dk, dv]` from the forward's inputs, output, lse and the output
/// gradient (as laid out by [`forward`]); zero at padding.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    d: Dims,
    layout: &VarlenLayout,
) -> [Vec<f32>; 3] {
    let hd = d.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let delta = row_terms(out, dout, hd);
    // One task per (row, sequence, KV head): it owns dq of its query heads and dk, dv of its keys.
    let mut work = Vec::new();
    for (row, segs) in layout.segments.iter().enumerate() {
        for &(start, len) in segs {
            for kvh in 0..d.kv_heads {
                work.push((row, start, len, kvh));
            }
        }
    }
    let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = work
        .par_iter()
        .map(|&(row, start, len, kvh)| {
            let ka0 = d.kv_at(row, kvh, start);
            let (kk, vv) = (&k[ka0..ka0 + len * hd], &v[ka0..ka0 + len * hd]);
            let group = d.group();
            let mut dq = vec![0.0f32; group * len * hd];
            let (mut dk, mut dv) = (vec![0.0f32; len * hd], vec![0.0f32; len * hd]);
            for g in 0..group {
                let head = kvh * group + g;
                for (i0, nq, k0) in blocks(len, layout.window) {
                    let b = Block { row, start, head, i0, nq, k0 };
                    let nk = b.nk();
                    let qa = d.q_at(row, head, start + i0);
                    let (qb, gb) = (&q[qa..qa + nq * hd], &dout[qa..qa + nq * hd]);
                    let (lb, db) = (&lse[qa / hd..][..nq], &delta[qa / hd..][..nq]);
                    let mut p = vec![0.0f32; nq * nk];
                    matmul((nq, nk, hd), &mut p, (nk, false), qb, (hd, 1), &kk[k0 * hd..], (1, hd), scale);
                    probabilities(&mut p, &b, layout.window, Some(lb));
                    let mut ds = vec![0.0f32; nq * nk];
                    matmul((nq, nk, hd), &mut ds, (nk, false), gb, (hd, 1), &vv[k0 * hd..], (1, hd), 1.0);
                    for ((dsr, pr), &di) in ds.chunks_exact_mut(nk).zip(p.chunks_exact(nk)).zip(db) {
                        dsr.iter_mut().zip(pr).for_each(|(x, &pj)| *x = pj * (*x - di));
                    }
                    let dqb = &mut dq[(g * len + i0) * hd..][..nq * hd];
                    matmul((nq, hd, nk), dqb, (hd, false), &ds, (nk, 1), &kk[k0 * hd..], (hd, 1), scale);
                    let (dkb, dvb) = (&mut dk[k0 * hd..], &mut dv[k0 * hd..]);
                    matmul((nk, hd, nq), dkb, (hd, true), &ds, (1, nk), qb, (hd, 1), scale);
                    matmul((nk, hd, nq), dvb, (hd, true), &p, (1, nk), gb, (hd, 1), 1.0);
                }
            }
            (dq, dk, dv)
        })
        .collect();
    let mut dq = vec![0.0f32; q.len()];
    let (mut dk, mut dv) = (vec![0.0f32; k.len()], vec![0.0f32; v.len()]);
    for (&(row, start, len, kvh), (gq, gk, gv)) in work.iter().zip(parts) {
        for g in 0..d.group() {
            let at = d.q_at(row, kvh * d.group() + g, start);
            dq[at..at + len * hd].copy_from_slice(&gq[g * len * hd..][..len * hd]);
        }
        let at = d.kv_at(row, kvh, start);
        dk[at..at + len * hd].copy_from_slice(&gk);
        dv[at..at + len * hd].copy_from_slice(&gv);
    }
    [dq, dk, dv]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::host::tests::{case, naive, noise};
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Ragged rows (single tokens, sequences across several query blocks, padding tails),
        /// GQA, odd head sizes, windows: forward and all three gradients within 1e-5 of the f64
        /// textbook computation, and of the per-query host kernel.
        #[test]
        fn blocked_kernel_matches_the_textbook_and_the_host_kernel(
            lens in prop::collection::vec(prop::collection::vec(1usize..300, 0..4), 1..3),
            pad in 0usize..9,
            (heads, kv_heads) in prop::sample::select(vec![(1, 1), (2, 1), (4, 2), (3, 3)]),
            hd in prop::sample::select(vec![4usize, 13, 32, 64]),
            window in prop::option::of(1usize..200),
            seed in 0u64..1000,
        ) {
            let (d, layout) = case(&lens, pad, heads, kv_heads, hd, window);
            let (qn, kn) = (d.rows * heads * d.len * hd, d.rows * kv_heads * d.len * hd);
            let (q, k, v, g) = (noise(qn, seed), noise(kn, seed + 1), noise(kn, seed + 2), noise(qn, seed + 3));
            let want = naive(&q, &k, &v, &g, d, &layout);
            let (out, lse) = forward(&q, &k, &v, d, &layout);
            let grads = backward(&q, &k, &v, &out, &lse, &g, d, &layout);
            let (hout, hlse) = super::super::host::forward(&q, &k, &v, d, &layout);
            let got = [&out, &grads[0], &grads[1], &grads[2]];
            for (name, (got, want)) in ["out", "dq", "dk", "dv"].iter().zip(got.into_iter().zip(&want)) {
                let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
                let err = got.iter().zip(want).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
                prop_assert!(err <= 1e-5 * scale + 2e-6, "{}: error {:e}, scale {:e}", name, err, scale);
            }
            let near = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
            prop_assert!(near(&out, &hout) && near(&lse, &hlse), "forward differs from the host kernel");
        }
    }

    /// One thread or many: the same bits.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (d, layout) = case(&[vec![300, 1, 77], vec![129]], 5, 4, 2, 32, Some(100));
        let (qn, kn) = (d.rows * d.heads * d.len * d.hd, d.rows * d.kv_heads * d.len * d.hd);
        let (q, k, v, g) = (noise(qn, 1), noise(kn, 2), noise(kn, 3), noise(qn, 4));
        let run = || {
            let (out, lse) = forward(&q, &k, &v, d, &layout);
            let grads = backward(&q, &k, &v, &out, &lse, &g, d, &layout);
            (out, lse, grads)
        };
        let many = run();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
        assert!(many == one);
    }
}
