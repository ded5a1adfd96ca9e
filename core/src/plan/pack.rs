//! Bin-packing of sequence lengths into rows of fixed capacity.
//!
//! All three algorithms take `lengths` (each `1..=capacity`) and return rows as lists of indices into
//! `lengths`, every index exactly once. None of them drops anything: the last, partly filled row is
//! kept (LongAlign's reference packer drops it, losing data every epoch).
//!
//! | algorithm | order            | placement                        | cost        |
//! |-----------|------------------|----------------------------------|-------------|
//! | next-fit  | input order      | current row, else close it       | O(n)        |
//! | ffd       | longest first    | lowest-numbered row with room    | O(n log n)  |
//! | bfd       | longest first    | row with the least room that fits| O(n log n)  |
//!
//! FFD uses a max segment tree over the free space of rows (leftmost leaf with free ≥ len, found by
//! one descent); BFD an ordered set of (free, row). A linear scan per item would be O(n²): minutes at
//! a million sequences instead of a fraction of a second.

use std::collections::BTreeSet;

/// Next-fit: the reference LongAlign packer. Keeps input order inside and across rows.
pub fn next_fit(lengths: &[u32], capacity: u32) -> Vec<Vec<usize>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut used = 0u64;
    for (i, &len) in lengths.iter().enumerate() {
        debug_assert!(len >= 1 && len <= capacity);
        if used + len as u64 > capacity as u64 && !row.is_empty() {
            rows.push(std::mem::take(&mut row));
            used = 0;
        }
        row.push(i);
        used += len as u64;
    }
    if !row.is_empty() {
        rows.push(row);
    }
    rows
}

/// Indices sorted by decreasing length; ties by index, so the result is deterministic.
fn decreasing(lengths: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Sort on a packed key: one u64 compare instead of a tuple compare speeds the 1M case ~2x.
    order.sort_unstable_by_key(|&i| (((u32::MAX - lengths[i]) as u64) << 32) | i as u64);
    order
}

/// First-fit decreasing.
pub fn first_fit_decreasing(lengths: &[u32], capacity: u32) -> Vec<Vec<usize>> {
    let n = lengths.len();
    if n == 0 {
        return Vec::new();
    }
    // Leaves are rows 0..n (n rows always suffice); an unopened row has full capacity, so the
    // leftmost leaf with enough room is an open row if one fits and otherwise the next new row.
    let size = n.next_power_of_two();
    let mut tree = vec![0u32; 2 * size];
    tree[size..size + n].fill(capacity);
    for node in (1..size).rev() {
        tree[node] = tree[2 * node].max(tree[2 * node + 1]);
    }
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for i in decreasing(lengths) {
        let len = lengths[i];
        debug_assert!(len >= 1 && len <= capacity && tree[1] >= len);
        let mut node = 1;
        while node < size {
            node = if tree[2 * node] >= len { 2 * node } else { 2 * node + 1 };
        }
        let row = node - size;
        if row == rows.len() {
            rows.push(Vec::new());
        }
        rows[row].push(i);
        tree[node] -= len;
        node /= 2;
        while node >= 1 {
            tree[node] = tree[2 * node].max(tree[2 * node + 1]);
            node /= 2;
        }
    }
    rows
}

/// Best-fit decreasing.
pub fn best_fit_decreasing(lengths: &[u32], capacity: u32) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    // (free space, row): the first entry at or above (len, 0) is the tightest row that fits, ties
    // broken towards the lowest row. Full rows leave the set.
    let mut open: BTreeSet<(u32, u32)> = BTreeSet::new();
    for i in decreasing(lengths) {
        let len = lengths[i];
        debug_assert!(len >= 1 && len <= capacity);
        let (free, row) = match open.range((len, 0)..).next().copied() {
            Some(entry) => {
                open.remove(&entry);
                entry
            }
            None => {
                rows.push(Vec::new());
                (capacity, (rows.len() - 1) as u32)
            }
        };
        rows[row as usize].push(i);
        if free > len {
            open.insert((free - len, row));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: &[Vec<usize>], lengths: &[u32], cap: u32) {
        let mut seen = vec![false; lengths.len()];
        for row in rows {
            assert!(!row.is_empty());
            let used: u64 = row.iter().map(|&i| lengths[i] as u64).sum();
            assert!(used <= cap as u64, "row over capacity: {used} > {cap}");
            for &i in row {
                assert!(!seen[i], "index {i} twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "an index is missing");
    }

    #[test]
    fn small_cases() {
        let lengths = [5, 4, 3, 3, 2, 2, 1];
        for rows in
            [next_fit(&lengths, 6), first_fit_decreasing(&lengths, 6), best_fit_decreasing(&lengths, 6)]
        {
            check(&rows, &lengths, 6);
        }
        // Next-fit: [5] [4] [3,3] [2,2,1]; FFD: [5,1] [4,2] [3,3] [2].
        assert_eq!(next_fit(&lengths, 6), vec![vec![0], vec![1], vec![2, 3], vec![4, 5, 6]]);
        assert_eq!(first_fit_decreasing(&lengths, 6), vec![vec![0, 6], vec![1, 4], vec![2, 3], vec![5]]);
    }

    /// Every multiset of up to five lengths in 1..=8 with capacity 8: all packings valid, FFD and
    /// BFD never use more rows than next-fit, and BFD does differ from FFD somewhere (it really
    /// chooses the tightest row, not the first).
    #[test]
    fn exhaustive_small() {
        let cap = 8;
        let mut differ = 0;
        let mut stack = vec![vec![]];
        while let Some(l) = stack.pop() {
            let nf = next_fit(&l, cap);
            let f = first_fit_decreasing(&l, cap);
            let b = best_fit_decreasing(&l, cap);
            check(&nf, &l, cap);
            check(&f, &l, cap);
            check(&b, &l, cap);
            assert!(f.len() <= nf.len() && b.len() <= nf.len());
            differ += (f != b) as usize;
            if l.len() < 5 {
                let last = l.last().copied().unwrap_or(cap);
                for x in 1..=last {
                    let mut m = l.clone();
                    m.push(x);
                    stack.push(m);
                }
            }
        }
        assert!(differ > 0, "BFD never differed from FFD");
    }
}
