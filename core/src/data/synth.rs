//! The bundled sample dataset: long-context retrieval tasks a tiny model can learn in minutes, plus
//! short chats, in the LongAlign `messages` format.
//!
//! * `passkey` — the passkey test of Mohtashami & Jaggi (2023): a five-digit key hidden at a random
//!   depth in repetitive filler; the answer is "The pass key is NNNNN.".
//! * `kv` — key–value retrieval (as in "Lost in the Middle", Liu et al. 2023): a list of random
//!   hex keys and values; the answer is the asked entry, "key: value".
//! * `chat` — short instructions (reverse, upper-case, repeat, count words, copy random letters)
//!   answered directly.
//!
//! Lengths are in bytes, which are tokens for the built-in byte-level tokenizer. The mix is
//! long-tailed like LongAlign's (many short chats, long documents up to the maximum), so packing and
//! loss weighting matter on it as on the real data. Deterministic for a seed: `core-cli data synth`
//! regenerates `datasets/sample/*.jsonl` byte for byte (a test checks it).

use super::{Example, Message, Role};
use crate::util::rng::SplitMix64;

/// Sentences of the filler, from the passkey test.
const FILLER: [&str; 5] =
    ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."];

const WORDS: [&str; 24] = [
    "apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano", "ocean", "candle", "forest",
    "silver", "garden", "rocket", "winter", "yellow", "bridge", "castle", "planet", "spider", "butter",
    "mirror", "pencil", "window",
];

/// Generation settings of the sample.
#[derive(Debug, Clone, Copy)]
pub struct SynthConfig {
    pub examples: usize,
    pub seed: u64,
    /// Shortest document in bytes (tokens for the byte-level tokenizer).
    pub min_len: usize,
    /// Longest document in bytes.
    pub max_len: usize,
    /// Relative shares of passkey, key-value and chat examples.
    pub mix: [u64; 3],
}

/// The long-tailed mix of the benchmarks and `data synth-custom`: 40% passkey, 30% key-value,
/// 30% chat.
pub const MIX: [u64; 3] = [4, 3, 3];

/// A document length: long-tailed between `min_len` and `max_len` (log-uniform).
fn doc_len(g: &mut SplitMix64, min_len: usize, max_len: usize) -> usize {
    let lo = min_len.max(64) as f64;
    let hi = (max_len as f64).max(lo * 1.01);
    (lo * (hi / lo).powf(g.unit_f64())) as usize
}

fn pick<'a>(g: &mut SplitMix64, xs: &[&'a str]) -> &'a str {
    xs[g.below(xs.len() as u64) as usize]
}

fn passkey(g: &mut SplitMix64, min_len: usize, max_len: usize) -> Example {
    let key = 10_000 + g.below(90_000);
    let target = doc_len(g, min_len, max_len);
    let head =
        "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n";
    let needle = format!(" The pass key is {key}. Remember it. {key} is the pass key.");
    let question = "\nWhat is the pass key?";
    let budget = target.saturating_sub(head.len() + needle.len() + question.len());
    let mut filler = String::new();
    while filler.len() < budget {
        filler.push(' ');
        filler.push_str(pick(g, &FILLER));
    }
    // Insert at a random sentence boundary: every depth is exercised.
    // Each sentence is pushed as " Sentence.", so a boundary is a space at the start or after a
    // full stop (a space inside "Here we go." is not one).
    let bounds: Vec<usize> = filler
        .match_indices(' ')
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || filler.as_bytes()[i - 1] == b'.')
        .chain([filler.len()])
        .collect();
    let at = bounds[g.below(bounds.len() as u64) as usize];
    let doc = format!("{head}{}{needle}{}{question}", &filler[..at], &filler[at..]);
    Example {
        messages: vec![
            Message::new(Role::User, doc),
            // The answer restates the needle's own words before the key, as passkey answers
            // usually do: "key is " occurs once in the document, right before the key, so the
            // digits are an in-context copy (an induction head can find them). With the bare key
            // as the answer the tiny model stayed at chance.
            Message::new(Role::Assistant, format!("The pass key is {key}.")),
        ],
        source: Some("passkey".into()),
    }
}

fn hex(g: &mut SplitMix64, n: usize) -> String {
    (0..n).map(|_| char::from_digit(g.below(16) as u32, 16).unwrap()).collect()
}

fn kv(g: &mut SplitMix64, min_len: usize, max_len: usize) -> Example {
    let target = doc_len(g, min_len, max_len);
    let head = "Below is a list of keys and their values. Answer with the value of the requested key.\n";
    // One entry "  abcdef: 0123456789\n" is 21 bytes.
    let n = ((target.saturating_sub(head.len() + 60)) / 21).max(2);
    let pairs: Vec<(String, String)> = (0..n).map(|_| (hex(g, 6), hex(g, 10))).collect();
    let (k, v) = pairs[g.below(n as u64) as usize].clone();
    let mut doc = String::from(head);
    for (a, b) in &pairs {
        doc.push_str(&format!("  {a}: {b}\n"));
    }
    doc.push_str(&format!("What is the value of key {k}?"));
    Example {
        // The answer is the asked entry as the list writes it, so the value follows the same
        // "key: " as in the list (again an in-context copy).
        messages: vec![Message::new(Role::User, doc), Message::new(Role::Assistant, format!("{k}: {v}"))],
        source: Some("kv".into()),
    }
}

fn chat(g: &mut SplitMix64) -> Example {
    let n = 1 + g.below(4) as usize;
    let words: Vec<&str> = (0..n).map(|_| pick(g, &WORDS)).collect();
    let phrase = words.join(" ");
    let (q, a) = match g.below(5) {
        0 => (format!("Reverse the text: {phrase}"), phrase.chars().rev().collect()),
        1 => (format!("Write in upper case: {phrase}"), phrase.to_uppercase()),
        2 => (format!("Repeat twice: {phrase}"), format!("{phrase} {phrase}")),
        3 => (format!("How many words are in: {phrase}"), format!("{n}")),
        _ => {
            // Distinct random letters: nothing to copy but the prompt, so every answer token
            // trains in-context copying, the skill the retrieval tasks need, on short cheap rows.
            let mut letters: Vec<u8> = (b'a'..=b'z').chain(b'A'..=b'Z').collect();
            let n = 8 + g.below(17) as usize;
            for i in 0..n {
                let j = i + g.below((letters.len() - i) as u64) as usize;
                letters.swap(i, j);
            }
            let s = String::from_utf8(letters[..n].to_vec()).expect("ascii");
            (format!("Repeat exactly: {s}"), s)
        }
    };
    Example {
        messages: vec![Message::new(Role::User, q), Message::new(Role::Assistant, a)],
        source: Some("chat".into()),
    }
}

/// Generates the sample, drawing each example's task by `cfg.mix`.
pub fn generate(cfg: SynthConfig) -> Vec<Example> {
    let mut g = SplitMix64::new(cfg.seed);
    let [p, k, c] = cfg.mix;
    (0..cfg.examples)
        .map(|_| {
            let r = g.below(p + k + c);
            if r < p {
                passkey(&mut g, cfg.min_len, cfg.max_len)
            } else if r < p + k {
                kv(&mut g, cfg.min_len, cfg.max_len)
            } else {
                chat(&mut g)
            }
        })
        .collect()
}

/// One JSON line per example: `{"messages":[...],"meta":{"source":...}}`.
pub fn to_jsonl(examples: &[Example]) -> String {
    let mut out = String::new();
    for ex in examples {
        let line = serde_json::json!({
            "messages": ex.messages,
            "meta": {"source": ex.source},
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The bundled training split: 8,000 examples of 64–768 tokens, seed 1; 70% passkey, 10%
/// key-value, 20% chat. Sized by measurement: the tiny model starts retrieving pass keys only
/// after thousands of them (transformers' Llama at the same shape needed ~6,000 to copy half the
/// digits), so the split is mostly pass keys, as short as still makes a haystack, and seen once.
pub const TRAIN: SynthConfig =
    SynthConfig { examples: 8000, seed: 1, min_len: 64, max_len: 768, mix: [14, 2, 4] };
pub const EVAL: SynthConfig = SynthConfig { examples: 200, seed: 2, ..TRAIN };

/// The bundled training split, as shipped in `datasets/sample/train.jsonl` and embedded in the binary.
pub const TRAIN_JSONL: &str = include_str!("../../../datasets/sample/train.jsonl");
/// The bundled evaluation split (`datasets/sample/eval.jsonl`).
pub const EVAL_JSONL: &str = include_str!("../../../datasets/sample/eval.jsonl");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_files_are_what_the_generator_makes() {
        assert_eq!(TRAIN_JSONL, to_jsonl(&generate(TRAIN)), "run `core-cli data synth` to regenerate");
        assert_eq!(EVAL_JSONL, to_jsonl(&generate(EVAL)), "run `core-cli data synth` to regenerate");
    }

    #[test]
    fn answers_are_in_the_documents() {
        for ex in generate(SynthConfig { examples: 200, seed: 9, min_len: 128, max_len: 2048, mix: MIX }) {
            let (q, a) = (&ex.messages[0].content, &ex.messages[1].content);
            match ex.source.as_deref() {
                Some("passkey") => {
                    assert!(a.starts_with("The pass key is ") && q.contains(a.as_str()), "{a}");
                    // The needle sits between whole filler sentences.
                    let at = q.find(" The pass key is ").unwrap();
                    assert!(q[..at].ends_with('.') || q[..at].ends_with('\n'), "{}", &q[..at]);
                    let after = &q[at..].split_once(" is the pass key.").unwrap().1;
                    assert!(
                        after.starts_with(" The") || after.starts_with(" Here") || after.starts_with("\n"),
                        "{after}"
                    );
                }
                Some("kv") => {
                    let key = q.rsplit("key ").next().unwrap().trim_end_matches('?');
                    assert!(a.starts_with(&format!("{key}: ")) && q.contains(&format!("  {a}\n")), "{a}");
                }
                _ => assert!(!a.is_empty()),
            }
            assert!(q.len() <= 2048 + 64, "{}", q.len());
        }
    }
}
