//! The host kernel's vector arithmetic (`host.rs`): a vectorising `exp`, key-block transposes,
//! block dot products and row mixes, each written so the compiler keeps them in SIMD registers;
//! `FMA` picks fused multiply-add where the CPU has it.

use super::host::KEY_BLOCK;

/// `e^x` to about 1 ulp (Cephes' `expf` polynomial) in operations that vectorise: round by the
/// 1.5·2²³ trick, scale by writing the exponent bits. Inputs below -87 give ~1e-38, not 0:
/// callers zero masked entries themselves.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4; // x - n·ln2 in two parts
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let e = (t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23;
    y * f32::from_bits(e as u32)
}

/// `D_i = dO_i · O_i` for every row of `hd` values: the softmax backward's row term (both host
/// kernels' backward).
pub(super) fn row_terms(out: &[f32], dout: &[f32], hd: usize) -> Vec<f32> {
    use rayon::prelude::*;
    out.par_chunks(hd)
        .zip(dout.par_chunks(hd))
        .map(|(o, g)| o.iter().zip(g).map(|(a, b)| a * b).sum())
        .collect()
}

/// `dst[d·KEY_BLOCK + j] = src[(at + j)·hd + d]` for `j < n`; zero past `n`.
#[inline(always)]
pub(super) fn transpose_block(src: &[f32], at: usize, n: usize, hd: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    for j in 0..n {
        let row = &src[(at + j) * hd..][..hd];
        for (d, &x) in row.iter().enumerate() {
            dst[d * KEY_BLOCK + j] = x;
        }
    }
}

/// `a · b + c`, fused (one rounding) where `FMA`: only where the CPU has fused multiply-add,
/// else `mul_add` would be a slow library call.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `s[j] = Σ_d a[d] · bt[d·KEY_BLOCK + j]` for the whole block.
#[inline(always)]
pub(super) fn dot_block<const FMA: bool>(a: &[f32], bt: &[f32], s: &mut [f32; KEY_BLOCK]) {
    *s = [0.0; KEY_BLOCK];
    for (&ad, col) in a.iter().zip(bt.chunks_exact(KEY_BLOCK)) {
        for (sj, &b) in s.iter_mut().zip(col) {
            *sj = madd::<FMA>(ad, b, *sj);
        }
    }
}

/// `y += a · x`.
#[inline(always)]
pub(super) fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = madd::<FMA>(a, x, *y);
    }
}

/// `o = c·o + Σ_j w[j] · x[j·hd ..][..hd]`, in that order. With `HD` = hd (> 0) the
/// accumulator is a fixed-size local the compiler keeps in registers across the sum; `HD` = 0
/// is the same for any hd, through memory.
#[inline(always)]
pub(super) fn mix_rows<const FMA: bool, const HD: usize>(
    o: &mut [f32],
    c: f32,
    w: &[f32],
    x: &[f32],
    hd: usize,
) {
    if HD > 0 {
        let mut r = [0.0f32; HD];
        for (r, &o) in r.iter_mut().zip(o.iter()) {
            *r = o * c;
        }
        for (j, &wj) in w.iter().enumerate() {
            let xj = &x[j * HD..][..HD];
            for d in 0..HD {
                r[d] = madd::<FMA>(wj, xj[d], r[d]);
            }
        }
        o.copy_from_slice(&r);
    } else {
        o.iter_mut().for_each(|v| *v *= c);
        for (j, &wj) in w.iter().enumerate() {
            axpy::<FMA>(o, wj, &x[j * hd..][..hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) < 1e-37 && exp(-1e30) >= 0.0);
    }
}
