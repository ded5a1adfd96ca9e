//! Duplicate detection for long documents: exact (hash of the normalised text) and near-duplicate
//! (MinHash over word 5-gram shingles, LSH banding to find candidates, then the estimated Jaccard
//! similarity against a threshold). Edited copies of a document — a changed sentence, a new
//! header — share almost all their shingles, so they collide in some band and are caught.

use std::collections::HashMap;

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

/// FNV-1a of a byte string, continuing from `h`.
fn fnv_from(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(bytes: &[u8]) -> u64 {
    fnv_from(FNV_OFFSET, bytes)
}

/// Hashes of the lower-cased words (alphanumeric runs): spacing, punctuation and case edits do not
/// matter. Lower-casing allocates only for words that have upper-case letters.
fn word_hashes(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.chars().any(char::is_uppercase) {
                fnv(w.to_lowercase().as_bytes())
            } else {
                fnv(w.as_bytes())
            }
        })
        .collect()
}

/// Hash of the normalised text (exact duplicates up to case, spacing and punctuation).
pub fn exact_key(text: &str) -> u64 {
    exact_key_of(&word_hashes(text))
}

fn exact_key_of(words: &[u64]) -> u64 {
    words.iter().fold(FNV_OFFSET, |h, &w| mix(h ^ w))
}

/// Shingle hashes: each run of `k` consecutive words, hashed in order.
fn shingles(words: &[u64], k: usize) -> Vec<u64> {
    if words.len() < k {
        return vec![words.iter().fold(FNV_OFFSET, |h, &w| mix(h ^ w))];
    }
    words.windows(k).map(|s| s.iter().fold(FNV_OFFSET, |h, &w| mix(h ^ w))).collect()
}

/// The MinHash signature, by one-permutation hashing (Li, Owen & Zhang 2012): each shingle is
/// hashed once and falls into one of `bands × rows` bins; a bin keeps its minimum. That is one hash
/// per shingle instead of one per shingle *and* bin — 128× less work on a 30k-word document — and,
/// on documents this long, estimates Jaccard similarity as well as 128 separate permutations. Bins
/// no shingle reached (short texts) borrow the next filled bin's value, rehashed with the distance
/// (rotation densification, Shrivastava & Li 2014), so equal sets still give equal signatures.
pub fn signature(text: &str, cfg: &DedupeConfig) -> Vec<u64> {
    signature_of(&word_hashes(text), cfg)
}

fn signature_of(words: &[u64], cfg: &DedupeConfig) -> Vec<u64> {
    let n = (cfg.bands * cfg.rows).max(1);
    let mut sig = vec![u64::MAX; n];
    let mut filled = vec![false; n];
    for s in shingles(words, cfg.shingle.max(1)) {
        let h = mix(s);
        // The high bits choose the bin (multiply-shift: unbiased enough for 128 bins), the whole
        // hash is the value.
        let bin = (((h >> 32) * n as u64) >> 32) as usize;
        if h < sig[bin] {
            sig[bin] = h;
        }
        filled[bin] = true;
    }
    if filled.iter().any(|&f| f) {
        for i in 0..n {
            if !filled[i] {
                let mut d = 1;
                while !filled[(i + d) % n] {
                    d += 1;
                }
                sig[i] = mix(sig[(i + d) % n] ^ d as u64);
            }
        }
    }
    sig
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
    use rayon::prelude::*;
    // Hashing is the expensive part and independent per text: all cores. The LSH pass that
    // decides which copy is "first" stays sequential, so the result does not depend on threads.
    let keyed: Vec<(u64, Vec<u64>)> = texts
        .par_iter()
        .map(|t| {
            let w = word_hashes(t);
            (exact_key_of(&w), signature_of(&w, cfg))
        })
        .collect();
    let mut exact: HashMap<u64, usize> = HashMap::new();
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut out = Vec::new();
    for (i, (key, sig)) in keyed.iter().enumerate() {
        if let Some(&j) = exact.get(key) {
            out.push(Duplicate { index: i, of: j, similarity: 1.0, exact: true });
            continue;
        }
        let band_keys: Vec<(usize, u64)> = sig
            .chunks(cfg.rows)
            .enumerate()
            .map(|(b, r)| (b, r.iter().fold(b as u64, |h, &x| mix(h ^ x))))
            .collect();
        let mut best: Option<(usize, f64)> = None;
        for key in &band_keys {
            for &j in buckets.get(key).into_iter().flatten() {
                let s = similarity(sig, &keyed[j].1);
                if s >= cfg.threshold && best.is_none_or(|(_, b)| s > b) {
                    best = Some((j, s));
                }
            }
        }
        if let Some((j, s)) = best {
            out.push(Duplicate { index: i, of: j, similarity: s, exact: false });
            continue;
        }
        exact.insert(*key, i);
        for key in band_keys {
            buckets.entry(key).or_default().push(i);
        }
    }
    out
}

/// A record dropped as a duplicate, by 1-based line of the data file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DroppedRecord {
    pub line: usize,
    pub duplicate_of_line: usize,
    pub similarity: f64,
    pub exact: bool,
}

/// What [`dedupe_file`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DedupeReport {
    pub records: usize,
    pub kept: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    pub skipped_invalid: usize,
    pub dropped: Vec<DroppedRecord>,
}

impl DedupeReport {
    /// One line of counts, then one line per dropped record.
    pub fn render(&self, threshold: f64, out: &std::path::Path) -> String {
        let mut s = format!(
            "{} records: kept {}, dropped {} exact and {} near duplicates (threshold {threshold}) → {}\n",
            self.records,
            self.kept,
            self.exact_duplicates,
            self.near_duplicates,
            out.display()
        );
        for d in &self.dropped {
            let how = if d.exact { "exact".to_string() } else { format!("similarity {:.2}", d.similarity) };
            s += &format!("  line {} duplicates line {} ({how})\n", d.line, d.duplicate_of_line);
        }
        s
    }
}

/// Drops exact and near-duplicate records of `data` (compared on all their message text), keeping
/// the first of each group, and writes the rest to `out` in the messages format.
pub fn dedupe_file(
    data: &std::path::Path,
    out: &std::path::Path,
    threshold: f64,
    skip_invalid: bool,
) -> anyhow::Result<DedupeReport> {
    if !(0.0..=1.0).contains(&threshold) {
        anyhow::bail!("--threshold must be within 0–1");
    }
    let r = super::read_file(data, None, skip_invalid)?;
    let texts: Vec<String> = r
        .examples
        .iter()
        .map(|(_, e)| e.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dups = find_duplicates(&refs, &DedupeConfig { threshold, ..DedupeConfig::default() });
    let dropped: std::collections::HashSet<usize> = dups.iter().map(|d| d.index).collect();
    let kept: Vec<super::Example> = r
        .examples
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, (_, e))| e.clone())
        .collect();
    crate::util::write_atomic(out, super::synth::to_jsonl(&kept).as_bytes())?;
    let line_of = |i: usize| r.examples[i].0;
    Ok(DedupeReport {
        records: r.examples.len(),
        kept: kept.len(),
        exact_duplicates: dups.iter().filter(|d| d.exact).count(),
        near_duplicates: dups.iter().filter(|d| !d.exact).count(),
        skipped_invalid: r.skipped.len(),
        dropped: dups
            .iter()
            .map(|d| DroppedRecord {
                line: line_of(d.index),
                duplicate_of_line: line_of(d.of),
                similarity: d.similarity,
                exact: d.exact,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::SplitMix64;

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
