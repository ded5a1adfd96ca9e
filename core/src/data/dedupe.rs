//! Duplicate detection for long documents: exact (hash of the normalised text) and near-duplicate
//! (MinHash over word 5-gram shingles, LSH banding to find candidates, then the estimated Jaccard
//! similarity against a threshold). Edited copies of a document — a changed sentence, a new
//! header — share almost all their shingles, so they collide in some band and are caught.

use std::collections::{HashMap, HashSet};

/// MinHash settings.
#[derive(Debug, Clone, Copy)]
pub struct DedupeConfig {
    /// Words per shingle.
    pub shingle: usize,
    /// LSH bands × rows per band = number of hash functions.
    pub bands: usize,
    pub rows: usize,
    /// Estimated Jaccard similarity at or above which two documents are duplicates.
    pub threshold: f64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self { shingle: 5, bands: 32, rows: 4, threshold: 0.8 }
    }
}

/// SplitMix64's finaliser: a good 64-bit mixer, fixed forever so signatures are reproducible.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a byte string.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Lower-cased words (alphanumeric runs): spacing and punctuation edits do not matter.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Hash of the normalised text (exact duplicates up to case, spacing and punctuation).
pub fn exact_key(text: &str) -> u64 {
    fnv(words(text).join(" ").as_bytes())
}

/// The MinHash signature: for each of `bands × rows` hash functions, the minimum over shingles.
pub fn signature(text: &str, cfg: &DedupeConfig) -> Vec<u64> {
    let w = words(text);
    let k = cfg.shingle.max(1);
    let shingles: HashSet<u64> = if w.len() < k {
        std::iter::once(fnv(w.join(" ").as_bytes())).collect()
    } else {
        w.windows(k).map(|s| fnv(s.join(" ").as_bytes())).collect()
    };
    (0..cfg.bands * cfg.rows)
        .map(|i| {
            let salt = mix(i as u64 + 1);
            shingles.iter().map(|&s| mix(s ^ salt)).min().unwrap_or(u64::MAX)
        })
        .collect()
}

/// Estimated Jaccard similarity of two signatures.
pub fn similarity(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// Why a document was dropped: a duplicate of an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub index: usize,
    pub of: usize,
    /// 1.0 for exact duplicates, else the estimated Jaccard similarity.
    pub similarity: f64,
    pub exact: bool,
}

/// Finds duplicates among `texts`, keeping the first of each group. Returns the dropped ones in
/// index order.
pub fn find_duplicates(texts: &[&str], cfg: &DedupeConfig) -> Vec<Duplicate> {
    let mut exact: HashMap<u64, usize> = HashMap::new();
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut kept_sigs: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if let Some(&j) = exact.get(&exact_key(t)) {
            out.push(Duplicate { index: i, of: j, similarity: 1.0, exact: true });
            continue;
        }
        let sig = signature(t, cfg);
        let band_keys: Vec<(usize, u64)> = sig
            .chunks(cfg.rows)
            .enumerate()
            .map(|(b, r)| (b, r.iter().fold(b as u64, |h, &x| mix(h ^ x))))
            .collect();
        let mut best: Option<(usize, f64)> = None;
        for key in &band_keys {
            for &j in buckets.get(key).into_iter().flatten() {
                let s = similarity(&sig, &kept_sigs[&j]);
                if s >= cfg.threshold && best.is_none_or(|(_, b)| s > b) {
                    best = Some((j, s));
                }
            }
        }
        if let Some((j, s)) = best {
            out.push(Duplicate { index: i, of: j, similarity: s, exact: false });
            continue;
        }
        exact.insert(exact_key(t), i);
        for key in band_keys {
            buckets.entry(key).or_default().push(i);
        }
        kept_sigs.insert(i, sig);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::rng::SplitMix64;

    /// A random "document" of n words from a 2,000-word vocabulary.
    fn doc(seed: u64, n: usize) -> String {
        let mut g = SplitMix64::new(seed);
        (0..n).map(|_| format!("w{}", g.below(2000))).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn edited_copies_are_near_duplicates_and_different_documents_are_not() {
        let cfg = DedupeConfig::default();
        let a = doc(1, 3000);
        let b = doc(2, 3000);
        // Edited copies of a: a new header, one sentence changed, punctuation and case changed.
        let header = format!("CHAPTER ONE. {a}");
        let mut words: Vec<&str> = a.split(' ').collect();
        words[1500] = "changed";
        words[1501] = "here";
        let edited = words.join(" ");
        let shouted = a.to_uppercase().replace(' ', ",  ");
        let texts = [a.as_str(), b.as_str(), header.as_str(), edited.as_str(), shouted.as_str()];
        let d = find_duplicates(&texts, &cfg);
        let dropped: Vec<(usize, usize, bool)> = d.iter().map(|x| (x.index, x.of, x.exact)).collect();
        assert_eq!(dropped, vec![(2, 0, false), (3, 0, false), (4, 0, true)], "{d:?}");
        assert!(d[0].similarity >= 0.8 && d[1].similarity >= 0.8);
        // Half-overlapping documents stay (similarity well under the threshold).
        let half = format!("{} {}", &a[..a.len() / 2], &b[..b.len() / 2]);
        assert!(find_duplicates(&[a.as_str(), half.as_str()], &cfg).is_empty());
        assert!(similarity(&signature(&a, &cfg), &signature(&b, &cfg)) < 0.1);
    }
}
