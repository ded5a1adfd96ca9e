//! The varlen attention on the host (CPU): the same tiling, online softmax and saved log-sum-exp
//! as the CubeCL kernels, in plain Rust over `f32` slices, parallel over tiles with rayon.
//! Burn-free; [`super::flex`] registers it on Burn's CPU backend.
//!
//! Work is cut like the GPU kernels': a task owns one tile of [`QUERY_BLOCK`] queries (forward,
//! `dq`) or of [`KEY_BLOCK`] keys (`dk`/`dv`, all query heads of its KV group), never crossing a
//! sequence, so tasks write disjoint outputs (no atomics, no locks) and the work is Σ nᵢ²/2.
//! Each output element is summed by one task in a fixed order: results do not depend on the
//! number of threads (the CPU backend's resume test relies on bit-identical reruns).
//!
//! Inner loops run over a key block transposed to `[hd, KEY_BLOCK]`, so scores for 64 keys are
//! 64 independent sums the compiler vectorises, with no horizontal reductions; `exp` is a
//! polynomial that vectorises too ([`super::vector::exp`]). On x86-64 the same code is compiled a second time
//! with AVX2 and FMA and picked at run time (see `simd!`).

use rayon::prelude::*;

use super::layout::VarlenLayout;
use super::vector::{axpy, dot_block, exp, mix_rows, row_terms, transpose_block};

/// Queries per forward / `dq` task.
pub const QUERY_BLOCK: usize = 32;
/// Keys per score block, and per `dk`/`dv` task.
pub const KEY_BLOCK: usize = 64;

/// Sizes of the packed tensors: q `[rows, heads, L, hd]`, k and v `[rows, kv_heads, L, hd]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub len: usize,
    pub hd: usize,
}

impl Dims {
    pub(super) fn q_at(&self, row: usize, head: usize, t: usize) -> usize {
        ((row * self.heads + head) * self.len + t) * self.hd
    }
    pub(super) fn kv_at(&self, row: usize, kv: usize, t: usize) -> usize {
        ((row * self.kv_heads + kv) * self.len + t) * self.hd
    }
    pub(super) fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Keys `[lo, hi)` of its sequence that query `i` sees (causal, window), both offsets in the
/// sequence.
#[inline(always)]
pub(super) fn visible(i: usize, window: Option<usize>) -> (usize, usize) {
    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
    (lo, i + 1)
}

/// Key blocks `(start, len)` that a tile of `nq` queries starting at `t.off` reads: from its
/// first query's window start up to its last query.
#[inline(always)]
fn key_blocks(t: &Tile, nq: usize, window: Option<usize>) -> impl Iterator<Item = (usize, usize)> {
    let (lo, _) = visible(t.off, window);
    let len = t.len;
    // Block indices, not `step_by` over tokens: a plain range keeps the loop as tight as a `while`.
    (lo / KEY_BLOCK..(t.off + nq).div_ceil(KEY_BLOCK)).map(move |b| {
        let jb = b * KEY_BLOCK;
        (jb, KEY_BLOCK.min(len - jb))
    })
}

/// The keys `[a, b)` of the block of `nk` keys at `jb` that query `i` sees, as offsets in the
/// block; empty (`a >= b`) when it sees none.
#[inline(always)]
fn seen(i: usize, jb: usize, nk: usize, window: Option<usize>) -> (usize, usize) {
    let (lo, hi) = visible(i, window);
    (lo.max(jb) - jb, hi.min(jb + nk).saturating_sub(jb))
}

/// One forward task: a tile of queries of one sequence and head.
struct Tile {
    row: usize,
    start: usize,
    len: usize,
    /// Offset of the tile's first query (forward, dq) or key (dk/dv) in the sequence.
    off: usize,
    /// Query head (forward, dq) or KV head (dk/dv).
    head: usize,
}

fn tiles(layout: &VarlenLayout, heads: usize, block: usize) -> Vec<Tile> {
    let mut out = Vec::new();
    for (row, segs) in layout.segments.iter().enumerate() {
        for &(start, len) in segs {
            for head in 0..heads {
                for off in (0..len).step_by(block) {
                    out.push(Tile { row, start, len, off, head });
                }
            }
        }
    }
    out
}

/// Runs `$f::<FMA>(…)` (an `#[inline(always)]` function) compiled for AVX2 with fused
/// multiply-add where the CPU has both, else for the baseline target without fusing (aarch64
/// always has FMA). Fused sums round once instead of twice, so the two builds can differ in the
/// last bits; on one machine the path, and so every bit, is fixed.
/// `$fast = false` forces the baseline (tests cover both).
macro_rules! simd {
    ($fast:expr, $hd:expr, $f:ident($($a:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn avx2<R>(f: impl FnOnce() -> R) -> R { f() }
            if $fast && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { avx2(|| by_hd!(true, $hd, $f($($a),*))) }
            } else {
                by_hd!(false, $hd, $f($($a),*))
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $fast;
            by_hd!({ cfg!(target_arch = "aarch64") }, $hd, $f($($a),*))
        }
    }};
}

/// `$f::<FMA, HD>(…)` with `HD` = the head size where it is a common one (accumulators in
/// registers, see [`mix_rows`]), else 0 (any size).
macro_rules! by_hd {
    ($fma:tt, $hd:expr, $f:ident($($a:expr),*)) => {
        match $hd {
            32 => $f::<$fma, 32>($($a),*),
            64 => $f::<$fma, 64>($($a),*),
            128 => $f::<$fma, 128>($($a),*),
            _ => $f::<$fma, 0>($($a),*),
        }
    };
}

#[inline(always)]
fn forward_tile<const FMA: bool, const HD: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: &Dims,
    window: Option<usize>,
    t: &Tile,
) -> (Vec<f32>, Vec<f32>) {
    let hd = dims.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let nq = QUERY_BLOCK.min(t.len - t.off);
    let qbase = dims.q_at(t.row, t.head, t.start);
    let kvbase = dims.kv_at(t.row, t.head / dims.group(), t.start);
    let (k, v) = (&k[kvbase..], &v[kvbase..]);
    let mut acc = vec![0.0f32; nq * hd];
    let mut m = [f32::NEG_INFINITY; QUERY_BLOCK];
    let mut l = [0.0f32; QUERY_BLOCK];
    let mut kt = vec![0.0f32; hd * KEY_BLOCK];
    let mut s = [0.0f32; KEY_BLOCK];
    for (jb, nk) in key_blocks(t, nq, window) {
        transpose_block(k, jb, nk, hd, &mut kt);
        for qi in 0..nq {
            let i = t.off + qi;
            let (a, b) = seen(i, jb, nk, window);
            if a >= b {
                continue;
            }
            dot_block::<FMA>(&q[qbase + i * hd..][..hd], &kt, &mut s);
            let mut bm = f32::NEG_INFINITY;
            for sj in &mut s[a..b] {
                *sj *= scale;
                bm = bm.max(*sj);
            }
            let m_new = m[qi].max(bm);
            let c = (m[qi] - m_new).exp(); // 0 on the first block (m = -inf)
            let mut sum = 0.0;
            for sj in &mut s[a..b] {
                *sj = exp(*sj - m_new);
                sum += *sj;
            }
            l[qi] = l[qi] * c + sum;
            m[qi] = m_new;
            mix_rows::<FMA, HD>(&mut acc[qi * hd..][..hd], c, &s[a..b], &v[(jb + a) * hd..], hd);
        }
    }
    let mut lse = vec![0.0f32; nq];
    for qi in 0..nq {
        let inv = 1.0 / l[qi];
        acc[qi * hd..][..hd].iter_mut().for_each(|x| *x *= inv);
        lse[qi] = m[qi] + l[qi].ln();
    }
    (acc, lse)
}

/// Attention forward: `(out [rows, heads, L, hd], lse [rows, heads, L])`, zero at padding.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], dims: Dims, layout: &VarlenLayout) -> (Vec<f32>, Vec<f32>) {
    forward_on(true, q, k, v, dims, layout)
}

/// [`forward`], on the vector units when `fast` (and the CPU has them), else the baseline.
fn forward_on(
    fast: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: Dims,
    layout: &VarlenLayout,
) -> (Vec<f32>, Vec<f32>) {
    let work = tiles(layout, dims.heads, QUERY_BLOCK);
    let parts: Vec<_> = work
        .par_iter()
        .map(|t| simd!(fast, dims.hd, forward_tile(q, k, v, &dims, layout.window, t)))
        .collect();
    let mut out = vec![0.0f32; dims.rows * dims.heads * dims.len * dims.hd];
    let mut lse = vec![0.0f32; dims.rows * dims.heads * dims.len];
    for (t, (o, s)) in work.iter().zip(parts) {
        let at = dims.q_at(t.row, t.head, t.start + t.off);
        out[at..at + o.len()].copy_from_slice(&o);
        let at = at / dims.hd;
        lse[at..at + s.len()].copy_from_slice(&s);
    }
    (out, lse)
}

/// What every backward tile reads: the forward's inputs and saved row log-sum-exp, the output
/// gradient and its row term `delta` (all laid out as in [`forward`]).
struct BackwardInputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    delta: &'a [f32],
    dims: Dims,
    window: Option<usize>,
}

/// `dq` for one tile of queries.
#[inline(always)]
fn dq_tile<const FMA: bool, const HD: usize>(g: &BackwardInputs, t: &Tile) -> Vec<f32> {
    let BackwardInputs { q, k, v, dout, lse, delta, ref dims, window } = *g;
    let hd = dims.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let nq = QUERY_BLOCK.min(t.len - t.off);
    let qbase = dims.q_at(t.row, t.head, t.start);
    let kvbase = dims.kv_at(t.row, t.head / dims.group(), t.start);
    let (k, v) = (&k[kvbase..], &v[kvbase..]);
    let mut dq = vec![0.0f32; nq * hd];
    let (mut kt, mut vt) = (vec![0.0f32; hd * KEY_BLOCK], vec![0.0f32; hd * KEY_BLOCK]);
    let (mut s, mut dp) = ([0.0f32; KEY_BLOCK], [0.0f32; KEY_BLOCK]);
    for (jb, nk) in key_blocks(t, nq, window) {
        transpose_block(k, jb, nk, hd, &mut kt);
        transpose_block(v, jb, nk, hd, &mut vt);
        for qi in 0..nq {
            let i = t.off + qi;
            let (a, b) = seen(i, jb, nk, window);
            if a >= b {
                continue;
            }
            let at = qbase + i * hd;
            let (li, di) = (lse[at / hd], delta[at / hd]);
            dot_block::<FMA>(&q[at..][..hd], &kt, &mut s);
            dot_block::<FMA>(&dout[at..][..hd], &vt, &mut dp);
            for j in a..b {
                s[j] = exp(s[j] * scale - li) * (dp[j] - di); // ds = p · (dp − D)
            }
            mix_rows::<FMA, HD>(&mut dq[qi * hd..][..hd], 1.0, &s[a..b], &k[(jb + a) * hd..], hd);
        }
    }
    dq.iter_mut().for_each(|x| *x *= scale);
    dq
}

/// `dk`, `dv` for one tile of keys of one KV head: sums over every query head of its group.
#[inline(always)]
fn dkdv_tile<const FMA: bool, const HD: usize>(g: &BackwardInputs, t: &Tile) -> (Vec<f32>, Vec<f32>) {
    let BackwardInputs { q, k, v, dout, lse, delta, ref dims, window } = *g;
    let hd = dims.hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let nk = KEY_BLOCK.min(t.len - t.off);
    let kvbase = dims.kv_at(t.row, t.head, t.start + t.off);
    let (mut kt, mut vt) = (vec![0.0f32; hd * KEY_BLOCK], vec![0.0f32; hd * KEY_BLOCK]);
    transpose_block(&k[kvbase..], 0, nk, hd, &mut kt);
    transpose_block(&v[kvbase..], 0, nk, hd, &mut vt);
    let (mut dk, mut dv) = (vec![0.0f32; nk * hd], vec![0.0f32; nk * hd]);
    let (mut s, mut dp) = ([0.0f32; KEY_BLOCK], [0.0f32; KEY_BLOCK]);
    // Queries that see some key of the tile: from its first key to the last key's window end.
    let last = window.map_or(t.len, |w| (t.off + nk - 1 + w).min(t.len));
    for hq in t.head * dims.group()..(t.head + 1) * dims.group() {
        let qbase = dims.q_at(t.row, hq, t.start);
        for i in t.off..last {
            let (a, b) = seen(i, t.off, nk, window);
            if a >= b {
                continue;
            }
            let at = qbase + i * hd;
            let (li, di) = (lse[at / hd], delta[at / hd]);
            let (qi, doi) = (&q[at..][..hd], &dout[at..][..hd]);
            dot_block::<FMA>(qi, &kt, &mut s);
            dot_block::<FMA>(doi, &vt, &mut dp);
            // p and ds for the whole block first: this loop vectorises, the row updates do not.
            for j in a..b {
                let p = exp(s[j] * scale - li);
                s[j] = p;
                dp[j] = p * (dp[j] - di);
            }
            for j in a..b {
                axpy::<FMA>(&mut dv[j * hd..][..hd], s[j], doi);
                axpy::<FMA>(&mut dk[j * hd..][..hd], dp[j], qi);
            }
        }
    }
    dk.iter_mut().for_each(|x| *x *= scale);
    (dk, dv)
}

/// Attention backward: `[dq, dk, dv]` from the forward's inputs, output, lse and the output
/// gradient (all as laid out by [`forward`]); zero at padding.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dims: Dims,
    layout: &VarlenLayout,
) -> [Vec<f32>; 3] {
    backward_on(true, q, k, v, out, lse, dout, dims, layout)
}

/// [`backward`], on the vector units when `fast` (and the CPU has them), else the baseline.
#[allow(clippy::too_many_arguments)]
fn backward_on(
    fast: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    dims: Dims,
    layout: &VarlenLayout,
) -> [Vec<f32>; 3] {
    let hd = dims.hd;
    let delta = row_terms(out, dout, hd);
    let g = &BackwardInputs { q, k, v, dout, lse, delta: &delta, dims, window: layout.window };
    let qwork = tiles(layout, dims.heads, QUERY_BLOCK);
    let dqs: Vec<_> = qwork.par_iter().map(|t| simd!(fast, dims.hd, dq_tile(g, t))).collect();
    let kwork = tiles(layout, dims.kv_heads, KEY_BLOCK);
    let dkvs: Vec<_> = kwork.par_iter().map(|t| simd!(fast, 0, dkdv_tile(g, t))).collect();
    let mut dq = vec![0.0f32; q.len()];
    for (t, g) in qwork.iter().zip(dqs) {
        let at = dims.q_at(t.row, t.head, t.start + t.off);
        dq[at..at + g.len()].copy_from_slice(&g);
    }
    let (mut dk, mut dv) = (vec![0.0f32; k.len()], vec![0.0f32; v.len()]);
    for (t, (gk, gv)) in kwork.iter().zip(dkvs) {
        let at = dims.kv_at(t.row, t.head, t.start + t.off);
        dk[at..at + gk.len()].copy_from_slice(&gk);
        dv[at..at + gv.len()].copy_from_slice(&gv);
    }
    [dq, dk, dv]
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Softmax attention and its gradients the textbook way, in f64, one query at a time.
    pub(in crate::varlen) fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        d: Dims,
        layout: &VarlenLayout,
    ) -> [Vec<f64>; 4] {
        let hd = d.hd;
        let scale = 1.0 / (hd as f64).sqrt();
        let (mut out, mut dq) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        let (mut dk, mut dv) = (vec![0.0; k.len()], vec![0.0; v.len()]);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
        for (r, segs) in layout.segments.iter().enumerate() {
            for &(start, n) in segs {
                for h in 0..d.heads {
                    let kvh = h / d.group();
                    for i in 0..n {
                        let qa = d.q_at(r, h, start + i);
                        let (lo, hi) = visible(i, layout.window);
                        let ka = |j: usize| d.kv_at(r, kvh, start + j);
                        let s: Vec<f64> =
                            (lo..hi).map(|j| dot(&q[qa..][..hd], &k[ka(j)..][..hd]) * scale).collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                        let dp: Vec<f64> =
                            (lo..hi).map(|j| dot(&dout[qa..][..hd], &v[ka(j)..][..hd])).collect();
                        let row: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                        for (x, j) in (lo..hi).enumerate() {
                            let ds = p[x] * (dp[x] - row) * scale;
                            for e in 0..hd {
                                out[qa + e] += p[x] * v[ka(j) + e] as f64;
                                dv[ka(j) + e] += p[x] * dout[qa + e] as f64;
                                dq[qa + e] += ds * k[ka(j) + e] as f64;
                                dk[ka(j) + e] += ds * q[qa + e] as f64;
                            }
                        }
                    }
                }
            }
        }
        [out, dq, dk, dv]
    }

    pub(in crate::varlen) fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub(in crate::varlen) fn case(
        lens: &[Vec<usize>],
        pad: usize,
        heads: usize,
        kv_heads: usize,
        hd: usize,
        window: Option<usize>,
    ) -> (Dims, VarlenLayout) {
        let len = lens.iter().map(|r| r.iter().sum::<usize>()).max().unwrap_or(0) + pad;
        let cu: Vec<Vec<u32>> = lens
            .iter()
            .map(|r| {
                std::iter::once(0)
                    .chain(r.iter().scan(0u32, |a, &n| {
                        *a += n as u32;
                        Some(*a)
                    }))
                    .collect()
            })
            .collect();
        (Dims { rows: lens.len(), heads, kv_heads, len, hd }, VarlenLayout::from_cu_seqlens(len, &cu, window))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Ragged rows (single tokens, sequences across several key blocks, padding tails),
        /// GQA, head sizes that are not multiples of 8, windows: forward and all three gradients
        /// within 1e-5 of the f64 textbook computation.
        #[test]
        fn host_kernel_matches_the_textbook(
            lens in prop::collection::vec(prop::collection::vec(1usize..150, 0..5), 1..3),
            pad in 0usize..9,
            (heads, kv_heads) in prop::sample::select(vec![(1, 1), (2, 1), (4, 2), (3, 3)]),
            hd in prop::sample::select(vec![4usize, 13, 32, 64, 128]),
            window in prop::option::of(1usize..90),
            seed in 0u64..1000,
        ) {
            let (d, layout) = case(&lens, pad, heads, kv_heads, hd, window);
            let (qn, kn) = (d.rows * heads * d.len * hd, d.rows * kv_heads * d.len * hd);
            let (q, k, v, g) = (noise(qn, seed), noise(kn, seed + 1), noise(kn, seed + 2), noise(qn, seed + 3));
            let want = naive(&q, &k, &v, &g, d, &layout);
            for fast in [true, false] {
            let (out, lse) = forward_on(fast, &q, &k, &v, d, &layout);
            let grads = backward_on(fast, &q, &k, &v, &out, &lse, &g, d, &layout);
            for (name, (got, want)) in ["out", "dq", "dk", "dv"].iter().zip([&out, &grads[0], &grads[1], &grads[2]].into_iter().zip(&want)) {
                // 1e-5 of the tensor's scale, plus 2e-6 absolute: a gradient that cancels to 0
                // (a lone token's dq: p = 1, dp = D) keeps f32 rounding of O(1) terms.
                let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
                let err = got.iter().zip(want).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
                prop_assert!(err <= 1e-5 * scale + 2e-6, "{} (fast {}): error {:e}, scale {:e}", name, fast, err, scale);
            }
            }
        }
    }

    /// One thread or many: the same bits (each output is summed by one task, in one order).
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (d, layout) = case(&[vec![300, 1, 77], vec![129]], 5, 4, 2, 32, None);
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
