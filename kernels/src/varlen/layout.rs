//! Where the sequences of a packed batch are, and how the kernels cut them into work tiles.
//! Burn-free: plain integers, tested on their own.
//!
//! A packed row holds several sequences end to end, then padding:
//!
//! ```text
//! row 0:  a a a a a b b b c ·      (· = padding)
//!         └ seq a ┘ └seq b┘ c
//! ```
//!
//! Each sequence is cut into tiles of `block` consecutive tokens. A tile never crosses a sequence
//! boundary, so a workgroup that owns a query tile only ever visits the key tiles of its own
//! sequence (causal: those at or before it): the work is Σ nᵢ²/2, not L².

use std::fmt;

/// The sequences of every row of a packed batch, and the attention window if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarlenLayout {
    /// Tokens per row (`L`); tokens after a row's last sequence are padding.
    pub row_len: usize,
    /// Per row, `(start, len)` of each sequence, in order, not overlapping, `len ≥ 1`.
    pub segments: Vec<Vec<(usize, usize)>>,
    /// Sliding window (Mistral, Qwen2 with `use_sliding_window`): query `i` sees keys `j` with
    /// `i - j < window`. `None`: plain causal.
    pub window: Option<usize>,
}

/// A layout the kernels cannot run: names the row and sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutError {}

/// Fields per tile in [`VarlenLayout::tiles`].
pub const TILE_FIELDS: usize = 4;

impl VarlenLayout {
    /// From per-row cumulative sequence lengths (`[0, n₀, n₀+n₁, …]`, flash-attn's `cu_seqlens`).
    pub fn from_cu_seqlens(row_len: usize, cu_seqlens: &[Vec<u32>], window: Option<usize>) -> Self {
        let segments = cu_seqlens
            .iter()
            .map(|cu| cu.windows(2).map(|w| (w[0] as usize, (w[1] - w[0]) as usize)).collect())
            .collect();
        Self { row_len, segments, window }
    }

    /// Checks what the kernels rely on: `rows` rows, sequences in order, inside the row, non-empty.
    pub fn check(&self, rows: usize, row_len: usize) -> Result<(), LayoutError> {
        if self.segments.len() != rows || self.row_len != row_len {
            return Err(LayoutError(format!(
                "varlen layout is for {} rows of {} tokens, the tensors have {rows} rows of {row_len}",
                self.segments.len(),
                self.row_len
            )));
        }
        if self.window == Some(0) {
            return Err(LayoutError("varlen layout: a window of 0 tokens sees nothing".into()));
        }
        for (r, segs) in self.segments.iter().enumerate() {
            let mut end = 0;
            for (s, &(start, len)) in segs.iter().enumerate() {
                if len == 0 || start < end || start + len > row_len {
                    return Err(LayoutError(format!(
                        "varlen layout: row {r} sequence {s} (start {start}, len {len}) is empty, \
                         overlaps the previous one or ends past the row ({row_len} tokens)"
                    )));
                }
                end = start + len;
            }
        }
        Ok(())
    }

    /// The work tiles: for each row, each sequence, each run of `block` tokens,
    /// `[row, seq_start, seq_len, offset_in_seq]` (flattened, [`TILE_FIELDS`] per tile).
    pub fn tiles(&self, block: usize) -> Vec<u32> {
        let mut tiles = Vec::new();
        for (r, segs) in self.segments.iter().enumerate() {
            for &(start, len) in segs {
                for off in (0..len).step_by(block) {
                    tiles.extend([r as u32, start as u32, len as u32, off as u32]);
                }
            }
        }
        tiles
    }

    /// Key–query pairs attention actually computes (causal, window): Σ over sequences.
    pub fn pairs(&self) -> u64 {
        let per = |n: u64| match self.window {
            None => n * (n + 1) / 2,
            Some(w) => {
                let w = (w as u64).min(n);
                // Queries 0..w see i+1 keys, the rest see w.
                w * (w + 1) / 2 + (n - w) * w
            }
        };
        self.segments.iter().flatten().map(|&(_, n)| per(n as u64)).sum()
    }

    /// The dense block-diagonal mask, `true` = may attend, row-major `[rows, L, L]`: what the
    /// reference computes, for tests.
    pub fn allowed(&self) -> Vec<bool> {
        let l = self.row_len;
        let mut m = vec![false; self.segments.len() * l * l];
        for (r, segs) in self.segments.iter().enumerate() {
            for &(start, len) in segs {
                for i in 0..len {
                    for j in 0..=i {
                        if self.window.is_none_or(|w| i - j < w) {
                            m[(r * l + start + i) * l + start + j] = true;
                        }
                    }
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> VarlenLayout {
        VarlenLayout::from_cu_seqlens(10, &[vec![0, 5, 8, 9], vec![0, 10]], None)
    }

    #[test]
    fn tiles_never_cross_a_sequence() {
        let t = layout().tiles(4);
        let tiles: Vec<&[u32]> = t.chunks(TILE_FIELDS).collect();
        assert_eq!(
            tiles,
            vec![
                &[0, 0, 5, 0][..],
                &[0, 0, 5, 4],
                &[0, 5, 3, 0],
                &[0, 8, 1, 0],
                &[1, 0, 10, 0],
                &[1, 0, 10, 4],
                &[1, 0, 10, 8]
            ]
        );
    }

    #[test]
    fn bad_layouts_are_named() {
        let mut l = layout();
        assert!(l.check(2, 10).is_ok());
        assert!(l.check(3, 10).unwrap_err().0.contains("2 rows"));
        l.segments[1] = vec![(0, 4), (3, 2)];
        assert!(l.check(2, 10).unwrap_err().0.contains("row 1 sequence 1"));
        l.segments[1] = vec![(0, 11)];
        assert!(l.check(2, 10).unwrap_err().0.contains("ends past the row"));
    }

    proptest! {
        /// Tiles cover each sequence's tokens exactly once; pairs() counts the mask's true cells.
        #[test]
        fn tiles_cover_and_pairs_count(
            lens in prop::collection::vec(1usize..40, 1..6),
            pad in 0usize..5,
            block in 1usize..9,
            window in prop::option::of(1usize..12),
        ) {
            let row_len = lens.iter().sum::<usize>() + pad;
            let mut cu = vec![0u32];
            for n in &lens { cu.push(cu.last().unwrap() + *n as u32); }
            let l = VarlenLayout::from_cu_seqlens(row_len, &[cu], window);
            prop_assert!(l.check(1, row_len).is_ok());
            let mut covered = vec![0u8; row_len];
            for t in l.tiles(block).chunks(TILE_FIELDS) {
                let (start, len, off) = (t[1] as usize, t[2] as usize, t[3] as usize);
                for i in off..(off + block).min(len) { covered[start + i] += 1; }
            }
            let used: usize = lens.iter().sum();
            prop_assert!(covered[..used].iter().all(|&c| c == 1));
            prop_assert!(covered[used..].iter().all(|&c| c == 0));
            prop_assert_eq!(l.pairs(), l.allowed().iter().filter(|&&a| a).count() as u64);
        }
    }
}
