//! Text generation: prefill the prompt into a KV cache, then one token at a time, greedy or
//! sampled (temperature, top-p, seeded), until an end-of-turn token, a stop string or the token
//! limit. [`generate_uncached`] recomputes the whole sequence every step: slow, obviously right,
//! and the oracle the cached path is tested against.

use burn::tensor::backend::Backend;
use burn::tensor::cast::ToElement;

use super::config::LlamaConfig;
use super::kv_cache::KvCache;
use super::llama::Llama;
use super::packed::PackedRows;
use crate::util::rng::SplitMix64;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax, first index on ties, as `torch.argmax`).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
    /// Token ids that end the answer (not included in it): EOS / end of turn.
    pub stop_tokens: Vec<u32>,
    /// The prefill's queries and each step's keys are counted in multiples of this
    /// ([`KvCache::bucket`]): 1 computes exact lengths (the CPU); the JIT backends want 64, so a
    /// generation meets a new shape once per 64 tokens instead of at every token.
    pub kv_bucket: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
            kv_bucket: 1,
        }
    }
}

/// Why generation ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens` reached (or the model's context is full).
    Length,
}

/// Picks the next token from `logits` as `cfg` says.
pub fn pick(logits: &[f32], cfg: &GenerateConfig, rng: &mut SplitMix64) -> u32 {
    if cfg.temperature <= 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    // Softmax at temperature, in f64, then the nucleus in descending probability.
    let t = cfg.temperature as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &x)| (i, ((x as f64 - max) / t).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut n = 0;
    for p in &probs {
        kept += p.1 / total;
        n += 1;
        if kept >= cfg.top_p as f64 {
            break;
        }
    }
    let nucleus = &probs[..n];
    let mass: f64 = nucleus.iter().map(|p| p.1).sum();
    let mut u = rng.unit_f64() * mass;
    for p in nucleus {
        u -= p.1;
        if u <= 0.0 {
            return p.0 as u32;
        }
    }
    nucleus[n - 1].0 as u32
}

/// Generates after `prompt` with a KV cache. `on_token` sees each new token as it is picked and
/// may return `false` to stop there (stop strings, client gone); the stopping token is kept.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    prompt: &[u32],
    gc: &GenerateConfig,
    device: &B::Device,
    mut on_token: impl FnMut(u32) -> bool,
) -> (Vec<u32>, FinishReason) {
    assert!(!prompt.is_empty(), "generation needs a prompt of at least one token");
    let room = cfg.max_position_embeddings.max(prompt.len() + 1);
    let new = gc.max_new_tokens.min(room - prompt.len());
    let mut cache = KvCache::new(cfg, prompt.len() + new, gc.kv_bucket, device);
    let mut rng = SplitMix64::new(gc.seed);
    let mut out = Vec::new();
    let mut logits = model.forward_cached(cfg, prompt, &mut cache, device);
    while out.len() < new {
        let next = pick(&to_vec(logits), gc, &mut rng);
        if gc.stop_tokens.contains(&next) {
            return (out, FinishReason::Stop);
        }
        out.push(next);
        if !on_token(next) {
            return (out, FinishReason::Stop);
        }
        if out.len() == new {
            break;
        }
        logits = model.forward_cached(cfg, &[next], &mut cache, device);
    }
    (out, FinishReason::Length)
}

/// [`generate`] without a cache: each step runs the whole sequence through the training forward
/// pass. The reference for the cached path.
pub fn generate_uncached<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    prompt: &[u32],
    gc: &GenerateConfig,
    device: &B::Device,
) -> (Vec<u32>, FinishReason) {
    let mut rng = SplitMix64::new(gc.seed);
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < gc.max_new_tokens {
        let n = seq.len();
        let rows =
            PackedRows { tokens: seq.clone(), cu_seqlens: vec![vec![0, n as u32]], rows: 1, row_len: n };
        let h = model.hidden(cfg, &rows, device); // [1, n, d]
        let last = h.narrow(1, n - 1, 1).reshape([1, cfg.hidden_size]);
        let logits = model.head(last).reshape([cfg.vocab_size]);
        let next = pick(&to_vec(logits), gc, &mut rng);
        if gc.stop_tokens.contains(&next) {
            return (out, FinishReason::Stop);
        }
        out.push(next);
        seq.push(next);
    }
    (out, FinishReason::Length)
}

fn to_vec<B: Backend>(t: burn::tensor::Tensor<B, 1>) -> Vec<f32> {
    let data = t.into_data();
    match data.as_slice::<f32>() {
        Ok(s) => s.to_vec(),
        Err(_) => data.iter::<f32>().map(|x| x.to_f32()).collect(),
    }
}

/// LongBench-Chat's truncation of an over-long prompt: keep the first and the last `max_len / 2`
/// tokens, drop the middle (where the question never is). Returns the token ids to decode.
pub fn middle_truncate(ids: &[u32], max_len: usize) -> Vec<u32> {
    if ids.len() <= max_len {
        return ids.to_vec();
    }
    let half = max_len / 2;
    let mut out = ids[..half].to_vec();
    out.extend_from_slice(&ids[ids.len() - half..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn tiny_model(window: Option<usize>, kv_heads: usize) -> (LlamaConfig, Llama<Flex>) {
        let mut cfg = LlamaConfig::tiny();
        cfg.num_key_value_heads = kv_heads;
        cfg.sliding_window = window;
        let device = Default::default();
        <Flex as Backend>::seed(&device, 7);
        let mut model = Llama::<Flex>::init(&cfg, &device);
        model.sliding_window = window;
        (cfg, model)
    }

    #[test]
    fn cached_greedy_equals_uncached_greedy() {
        // Buckets of 1 (exact), 4 (the prefill of 11 padded to 12, keys rounded up, a bucket
        // crossed every 4 tokens) and 64 (everything inside one bucket).
        for (window, kv, bucket) in
            [(None, 2, 1), (None, 4, 1), (Some(5), 2, 1), (None, 2, 4), (Some(5), 4, 4), (None, 2, 64)]
        {
            let (cfg, model) = tiny_model(window, kv);
            let prompt: Vec<u32> = (0..11).map(|i| (i * 37 % 250) as u32).collect();
            let gc = GenerateConfig { max_new_tokens: 12, kv_bucket: bucket, ..Default::default() };
            let device = Default::default();
            let (a, ra) = generate(&model, &cfg, &prompt, &gc, &device, |_| true);
            let (b, rb) = generate_uncached(&model, &cfg, &prompt, &gc, &device);
            assert_eq!(a, b, "window {window:?}, kv heads {kv}, bucket {bucket}");
            assert_eq!((ra, rb), (FinishReason::Length, FinishReason::Length));
            assert_eq!(a.len(), 12);
        }
    }

    #[test]
    fn cached_logits_match_the_full_forward_at_every_step() {
        let (cfg, model) = tiny_model(None, 2);
        let device = Default::default();
        let seq: Vec<u32> = (0..9).map(|i| (i * 91 % 255) as u32).collect();
        let rows = PackedRows { tokens: seq.clone(), cu_seqlens: vec![vec![0, 9]], rows: 1, row_len: 9 };
        let full = to_vec(model.logits(&cfg, &rows, &device).reshape([9 * cfg.vocab_size]));
        // Bucket 1: exact counts; 4: a prefill of 3 padded to 4 queries, keys rounded up to 4
        // and 8 (the cache itself to 12), so padded keys are masked at every step.
        for (bucket, prefill) in [(1, 4), (4, 3)] {
            let mut cache = KvCache::new(&cfg, 9, bucket, &device);
            // Prefill some tokens in one go, then one at a time, then check each step's last logits.
            let mut got = to_vec(model.forward_cached(&cfg, &seq[..prefill], &mut cache, &device));
            for i in prefill - 1..9 {
                let want = &full[i * cfg.vocab_size..(i + 1) * cfg.vocab_size];
                let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-5, "bucket {bucket}, position {i}: max diff {diff}");
                if i + 1 < 9 {
                    got = to_vec(model.forward_cached(&cfg, &seq[i + 1..i + 2], &mut cache, &device));
                }
            }
            assert_eq!(cache.len, 9);
        }
    }

    #[test]
    fn stop_tokens_end_generation_and_are_not_returned() {
        let (cfg, model) = tiny_model(None, 2);
        let device = Default::default();
        let prompt = [1u32, 2, 3];
        let free = GenerateConfig { max_new_tokens: 6, ..Default::default() };
        let (toks, _) = generate(&model, &cfg, &prompt, &free, &device, |_| true);
        let stop = GenerateConfig { stop_tokens: vec![toks[2]], ..free.clone() };
        let (cut, reason) = generate(&model, &cfg, &prompt, &stop, &device, |_| true);
        let first = toks.iter().position(|&t| t == toks[2]).unwrap();
        assert_eq!(cut, toks[..first].to_vec());
        assert_eq!(reason, FinishReason::Stop);
        // A callback that says stop after two tokens.
        let mut n = 0;
        let (two, reason) = generate(&model, &cfg, &prompt, &free, &device, |_| {
            n += 1;
            n < 2
        });
        assert_eq!((two.as_slice(), reason), (&toks[..2], FinishReason::Stop));
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_p() {
        let logits = [0.0f32, 3.0, 2.9, -5.0];
        let gc = GenerateConfig { temperature: 1.0, top_p: 1.0, seed: 3, ..Default::default() };
        let draw = |g: &GenerateConfig| {
            let mut rng = SplitMix64::new(g.seed);
            (0..400).map(|_| pick(&logits, g, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&gc), draw(&gc), "same seed, same tokens");
        assert!(draw(&gc).contains(&0), "full distribution reaches the unlikely token");
        // p ≈ [0.025, 0.512, 0.463, 0.0002]: top_p 0.5 keeps token 1 alone, 0.9 keeps 1 and 2.
        let xs = draw(&GenerateConfig { top_p: 0.5, ..gc.clone() });
        assert!(xs.iter().all(|&t| t == 1), "{xs:?}");
        let xs = draw(&GenerateConfig { top_p: 0.9, ..gc.clone() });
        assert!(xs.iter().all(|&t| t == 1 || t == 2), "{xs:?}");
        assert!(xs.contains(&1) && xs.contains(&2));
        assert_eq!(pick(&logits, &GenerateConfig::default(), &mut SplitMix64::new(0)), 1);
        assert_eq!(pick(&[1.0, 1.0], &GenerateConfig::default(), &mut SplitMix64::new(0)), 0, "ties: first");
    }

    #[test]
    fn middle_truncation_keeps_both_ends() {
        let ids: Vec<u32> = (0..10).collect();
        assert_eq!(middle_truncate(&ids, 20), ids);
        assert_eq!(middle_truncate(&ids, 4), vec![0, 1, 8, 9]);
        assert_eq!(middle_truncate(&ids, 5), vec![0, 1, 8, 9]);
    }
}
