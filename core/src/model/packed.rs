//! Packed rows on the host: several sequences laid end to end in one row of `L` tokens, and what
//! the model derives from them (positions that restart per sequence, segment ids, the reference
//! block-diagonal mask).

/// Which token belongs to which sequence. Built once per micro-batch and turned into the tensors
/// the model needs (token ids, rotary cos/sin, attention layout).
#[derive(Debug, Clone)]
pub struct PackedRows {
    /// Token ids, `rows × row_len`, padding included.
    pub tokens: Vec<u32>,
    /// Per row, sequence offsets as in the plan: `[0, n₁, n₁+n₂, …]`. Tokens after the last offset
    /// are padding.
    pub cu_seqlens: Vec<Vec<u32>>,
    pub rows: usize,
    pub row_len: usize,
}

impl PackedRows {
    /// One row holding one whole sequence.
    pub fn single(tokens: &[u32]) -> Self {
        let n = tokens.len();
        Self { tokens: tokens.to_vec(), cu_seqlens: vec![vec![0, n as u32]], rows: 1, row_len: n }
    }

    /// Position of every token: 0, 1, … restarting at each sequence (padding counts on as its own
    /// segment so its positions stay small; its outputs carry no loss).
    pub fn positions(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows * self.row_len);
        for cu in &self.cu_seqlens {
            let start = out.len();
            for w in cu.windows(2) {
                out.extend(0..w[1] - w[0]);
            }
            let used = out.len() - start;
            out.extend(0..(self.row_len - used) as u32);
        }
        out
    }

    /// Segment id of every token (sequence index within its row; padding is one more segment).
    pub fn segments(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.rows * self.row_len);
        for cu in &self.cu_seqlens {
            for (k, w) in cu.windows(2).enumerate() {
                out.extend(std::iter::repeat_n(k as u32, (w[1] - w[0]) as usize));
            }
            let used = *cu.last().unwrap_or(&0) as usize;
            out.extend(std::iter::repeat_n((cu.len() - 1) as u32, self.row_len - used));
        }
        out
    }

    /// The reference attention mask, `true` = may NOT attend. Row-major `[rows, row_len, row_len]`.
    ///
    /// Three sequences of 3, 2 and 1 tokens (a, b, c) in a row of 6, `·` = attends, `x` = masked:
    ///
    /// ```text
    ///        a0 a1 a2 b0 b1 c0
    ///   a0    ·  x  x  x  x  x
    ///   a1    ·  ·  x  x  x  x
    ///   a2    ·  ·  ·  x  x  x
    ///   b0    x  x  x  ·  x  x
    ///   b1    x  x  x  ·  ·  x
    ///   c0    x  x  x  x  x  ·
    /// ```
    ///
    /// With a sliding window w, a query also ignores keys w or more positions back.
    pub fn mask(&self, window: Option<usize>) -> Vec<bool> {
        let seg = self.segments();
        let l = self.row_len;
        let mut m = vec![true; self.rows * l * l];
        for r in 0..self.rows {
            let s = &seg[r * l..(r + 1) * l];
            for q in 0..l {
                for k in 0..=q {
                    let in_window = window.is_none_or(|w| q - k < w);
                    if s[q] == s[k] && in_window {
                        m[(r * l + q) * l + k] = false;
                    }
                }
            }
        }
        m
    }
}

/// Size `n` items are computed at with `bucket` on backends that compile per shape: `n` itself for
/// bucket 1, else a few repeated sizes — the next power of two (at least `bucket`) up to 1,024,
/// then the next multiple of 1,024 (at most 1,023 items of padding). A micro-batch's stream of
/// tokens and its loss targets are both padded this way, so a run meets few distinct shapes.
pub fn bucketed_len(n: usize, bucket: usize) -> usize {
    match bucket {
        0 | 1 => n.max(1),
        b if n <= 1024 => n.max(1).next_power_of_two().max(b).div_ceil(b) * b,
        _ => n.div_ceil(1024) * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_segments_and_mask_of_a_packed_row() {
        let rows = PackedRows { tokens: vec![0; 7], cu_seqlens: vec![vec![0, 3, 5, 6]], rows: 1, row_len: 7 };
        assert_eq!(rows.positions(), vec![0, 1, 2, 0, 1, 0, 0]);
        assert_eq!(rows.segments(), vec![0, 0, 0, 1, 1, 2, 3]);
        let m = rows.mask(None);
        let show: Vec<String> =
            (0..7).map(|q| (0..7).map(|k| if m[q * 7 + k] { 'x' } else { '.' }).collect()).collect();
        assert_eq!(show, vec![".xxxxxx", "..xxxxx", "...xxxx", "xxx.xxx", "xxx..xx", "xxxxx.x", "xxxxxx."]);
        let w = rows.mask(Some(2));
        assert!(w[2 * 7] && !w[2 * 7 + 1] && !w[2 * 7 + 2], "window 2: a2 sees a1, a2 only");
        let one = PackedRows::single(&[4, 5]);
        assert_eq!((one.cu_seqlens, one.rows, one.row_len), (vec![vec![0, 2]], 1, 2));
    }
}
