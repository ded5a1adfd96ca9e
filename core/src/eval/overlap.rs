//! Reference-overlap scores for when no judge is configured: ROUGE-L F1 and token F1 against the
//! reference answer. They are *not* LongBench-Chat's protocol (an LLM judge is) and are labelled
//! so wherever they appear. Tokens: lower-cased words, and single characters for CJK text.

/// Lower-cased word tokens; each CJK character is a token of its own.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if ('\u{4e00}'..='\u{9fff}').contains(&c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn f1(overlap: f64, n_pred: usize, n_ref: usize) -> f64 {
    if overlap == 0.0 || n_pred == 0 || n_ref == 0 {
        return 0.0;
    }
    let (p, r) = (overlap / n_pred as f64, overlap / n_ref as f64);
    2.0 * p * r / (p + r)
}

/// ROUGE-L F1: longest common subsequence of tokens.
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (a, b) = (tokens(prediction), tokens(reference));
    let mut prev = vec![0usize; b.len() + 1];
    for x in &a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        prev = cur;
    }
    f1(prev[b.len()] as f64, a.len(), b.len())
}

/// Bag-of-tokens F1 (SQuAD-style).
pub fn token_f1(prediction: &str, reference: &str) -> f64 {
    let (a, b) = (tokens(prediction), tokens(reference));
    let mut counts = std::collections::HashMap::<&str, i64>::new();
    for t in &b {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in &a {
        if let Some(c) = counts.get_mut(t.as_str()).filter(|c| **c > 0) {
            *c -= 1;
            common += 1;
        }
    }
    f1(common as f64, a.len(), b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_scores() {
        assert_eq!(tokens("The cat, 猫咪!"), vec!["the", "cat", "猫", "咪"]);
        assert_eq!(rouge_l("a b c d", "a b c d"), 1.0);
        assert_eq!(rouge_l("x y", "a b"), 0.0);
        // LCS "a c" = 2 of 3 and 2 of 4: P 2/3, R 1/2, F1 4/7.
        assert!((rouge_l("a x c", "a b c d") - 4.0 / 7.0).abs() < 1e-12);
        // Order does not matter for token F1 but does for ROUGE-L.
        assert_eq!(token_f1("b a", "a b"), 1.0);
        assert!(rouge_l("b a", "a b") < 1.0);
    }
}
