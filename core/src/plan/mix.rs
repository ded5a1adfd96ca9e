//! Synthetic length mixes for what-if planning, benchmarks and tests.

use super::Item;
use crate::util::rng::SplitMix64;

/// A LongAlign-like mix: `n_long` documents of 8k–64k tokens (log-uniform, so long-tailed) and
/// `n_short` chats of 64–2k tokens, shuffled. Targets are 10% of the tokens, at least 1 and at most
/// 2,000 (answers are short next to their documents). Ids are positions in the returned list.
pub fn longalign_like(n_long: usize, n_short: usize, seed: u64) -> Vec<Item> {
    let mut g = SplitMix64::new(seed);
    let mut totals: Vec<u32> =
        (0..n_long + n_short)
            .map(|i| {
                if i < n_long {
                    (8192f64 * 8f64.powf(g.unit_f64())) as u32
                } else {
                    64 + g.below(2000) as u32
                }
            })
            .collect();
    g.shuffle(&mut totals);
    totals
        .into_iter()
        .enumerate()
        .map(|(id, total)| Item { id, total, target: (total / 10).clamp(1, 2000) })
        .collect()
}

/// Lines of a `--lengths` file: `total target`.
pub fn to_lengths_file(items: &[Item]) -> String {
    items.iter().map(|it| format!("{} {}\n", it.total, it.target)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mix_shape() {
        let items = super::longalign_like(1000, 1000, 3);
        let long = items.iter().filter(|it| it.total >= 8192).count();
        assert_eq!(long, 1000);
        assert!(items.iter().all(|it| it.total < 65536 && it.total >= 64 && it.target >= 1));
        assert!(items.iter().enumerate().all(|(i, it)| it.id == i));
    }
}
