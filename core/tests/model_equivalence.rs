//! The packed, weighted forward/backward computes exactly what the unpacked one does: packing
//! changes the memory layout, never the objective. CPU (Flex) backend with autodiff.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use longalign::model::loss::{row_targets, weighted_cross_entropy_padded, weighted_cross_entropy_plain};
use longalign::model::{AttentionMode, LlamaConfig};
use longalign::model::{Llama, PackedRows};
use longalign::plan::weights::{LossMode, step_weights};
use longalign::util::rng::SplitMix64;

type B = Autodiff<Flex>;
type Inner = <B as AutodiffBackend>::InnerBackend;

fn cfg() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        tie_word_embeddings: false,
        qkv_bias: true,
        ..LlamaConfig::tiny()
    }
}

/// A sequence: token ids and target mask (the last `answer` tokens).
struct Seq {
    ids: Vec<u32>,
    targets: Vec<bool>,
}

fn seqs(lens: &[(usize, usize)], seed: u64) -> Vec<Seq> {
    let mut g = SplitMix64::new(seed);
    lens.iter()
        .map(|&(n, answer)| Seq {
            ids: (0..n).map(|_| g.below(61) as u32).collect(),
            targets: (0..n).map(|t| t >= n - answer).collect(),
        })
        .collect()
}

fn n_targets(s: &Seq) -> u32 {
    s.targets[1..].iter().filter(|&&t| t).count() as u32
}

/// Loss of one micro-batch: `rows[r]` lists (sequence index, weight) packed in row r.
fn micro_batch_loss_with(
    mode: AttentionMode,
    model: &Llama<B>,
    cfg: &LlamaConfig,
    all: &[Seq],
    rows: &[Vec<(usize, f32)>],
    row_len: usize,
) -> Tensor<B, 1> {
    micro_batch_loss_via(true, mode, model, cfg, all, rows, row_len)
}

/// [`micro_batch_loss_with`], through the fused loss (`fused`, what training uses) or the plain one.
fn micro_batch_loss_via(
    fused: bool,
    mode: AttentionMode,
    model: &Llama<B>,
    cfg: &LlamaConfig,
    all: &[Seq],
    rows: &[Vec<(usize, f32)>],
    row_len: usize,
) -> Tensor<B, 1> {
    let device = Default::default();
    let mut tokens = Vec::new();
    let mut cu = Vec::new();
    let (mut labels, mut weights) = (Vec::new(), Vec::new());
    for row in rows {
        let mut offsets = vec![0u32];
        let mut row_tokens = Vec::new();
        for &(i, _) in row {
            row_tokens.extend(&all[i].ids);
            offsets.push(row_tokens.len() as u32);
        }
        row_tokens.resize(row_len, 0);
        tokens.extend(row_tokens);
        cu.push(offsets);
        let parts: Vec<(&[u32], &[bool], f32)> =
            row.iter().map(|&(i, w)| (&all[i].ids[..], &all[i].targets[..], w)).collect();
        let (l, w) = row_targets(&parts, row_len);
        labels.extend(l);
        weights.extend(w);
    }
    let packed = PackedRows { tokens, cu_seqlens: cu, rows: rows.len(), row_len };
    let hidden = model.hidden_with(cfg, &packed, mode, &device);
    // Bucketed mode also pads the loss chunks (of 7) to the bucket: covered by the same checks.
    let pad = match mode {
        AttentionMode::Bucketed(b) => b,
        _ => 1,
    };
    if fused {
        weighted_cross_entropy_padded(model, hidden, &labels, &weights, 7, pad)
    } else {
        weighted_cross_entropy_plain(model, hidden, &labels, &weights, 7, pad)
    }
}

fn micro_batch_loss(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    all: &[Seq],
    rows: &[Vec<(usize, f32)>],
    row_len: usize,
) -> Tensor<B, 1> {
    // What training uses: the varlen host kernel on this backend.
    micro_batch_loss_with(AttentionMode::Auto, model, cfg, all, rows, row_len)
}

/// All gradients of the model, flattened in parameter order.
fn grad_vector(model: &Llama<B>, grads: &GradientsParams) -> Vec<f32> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
    }
    impl ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = self.grads.get::<Inner, D>(param.id).expect("every parameter has a gradient");
            self.out.extend(g.into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect { grads, out: Vec::new() };
    model.visit(&mut c);
    c.out
}

fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst <= rel * scale, "{what}: max abs diff {worst} vs scale {scale}");
}

fn model(seed: u64) -> Llama<B> {
    let device = Default::default();
    B::seed(&device, seed);
    Llama::init(&cfg(), &device)
}

fn loss_and_grads(model: &Llama<B>, loss: Tensor<B, 1>) -> (f32, Vec<f32>) {
    let value = loss.clone().into_scalar();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (value, grad_vector(model, &grads))
}

#[test]
fn packed_sequence_weighted_equals_unpacked_per_sequence_mean() {
    let cfg = cfg();
    let m = model(1);
    let all = seqs(&[(9, 4), (5, 2), (12, 6), (3, 3)], 11);
    let targets: Vec<u32> = all.iter().map(n_targets).collect();
    let w = step_weights(&targets, LossMode::Sequence);

    // Packed: all four in one row of 32 (29 used + 3 padding).
    let packed_rows = vec![(0..4).map(|i| (i, w[i])).collect::<Vec<_>>()];
    let (packed_loss, packed_grads) = loss_and_grads(&m, micro_batch_loss(&m, &cfg, &all, &packed_rows, 32));

    // Unpacked: each sequence alone in its own row; per-sequence mean loss, averaged.
    let mut total: Option<Tensor<B, 1>> = None;
    for (i, s) in all.iter().enumerate() {
        let l = micro_batch_loss(&m, &cfg, &all, &[vec![(i, 1.0 / targets[i] as f32)]], s.ids.len())
            .div_scalar(4.0);
        total = Some(match total {
            Some(t) => t + l,
            None => l,
        });
    }
    let (unpacked_loss, unpacked_grads) = loss_and_grads(&m, total.unwrap());
    assert!(
        (packed_loss - unpacked_loss).abs() <= 1e-5 * unpacked_loss.abs(),
        "{packed_loss} vs {unpacked_loss}"
    );
    assert_close(&packed_grads, &unpacked_grads, 1e-5, "gradients");
    // And the value is a real cross entropy of a near-uniform model: about ln(61).
    assert!((packed_loss - 61f32.ln()).abs() < 0.5, "{packed_loss}");
}

/// Accumulating 4 micro-batches of one row each (weights from the whole step) gives the same loss
/// and gradients as one micro-batch of the 4 rows, for both loss modes.
#[test]
fn accumulation_of_4_micro_batches_equals_one_batch_of_4() {
    let cfg = cfg();
    let m = model(2);
    let all = seqs(&[(7, 3), (6, 2), (10, 5), (4, 2), (8, 8), (5, 1), (9, 2), (3, 2)], 5);
    let targets: Vec<u32> = all.iter().map(n_targets).collect();
    for mode in [LossMode::Sequence, LossMode::Token] {
        let w = step_weights(&targets, mode);
        // Four packed rows of two sequences each.
        let rows: Vec<Vec<(usize, f32)>> =
            (0..4).map(|r| vec![(2 * r, w[2 * r]), (2 * r + 1, w[2 * r + 1])]).collect();
        let (one_loss, one_grads) = loss_and_grads(&m, micro_batch_loss(&m, &cfg, &all, &rows, 20));

        let mut acc = GradientsAccumulator::<Llama<B>>::new();
        let mut acc_loss = 0f32;
        for row in &rows {
            let l = micro_batch_loss(&m, &cfg, &all, std::slice::from_ref(row), 20);
            acc_loss += l.clone().into_scalar();
            acc.accumulate(&m, GradientsParams::from_grads(l.backward(), &m));
        }
        let acc_grads = grad_vector(&m, &acc.grads());
        assert!((one_loss - acc_loss).abs() <= 1e-5 * one_loss.abs(), "{mode}: {one_loss} vs {acc_loss}");
        assert_close(&acc_grads, &one_grads, 1e-5, &format!("{mode} gradients"));
    }
}

/// Token-mean over a step equals the plain mean of all target tokens' cross entropy, computed
/// unpacked.
#[test]
fn token_mode_is_the_mean_over_target_tokens_of_the_step() {
    let cfg = cfg();
    let m = model(3);
    let all = seqs(&[(9, 4), (5, 2), (12, 6)], 17);
    let targets: Vec<u32> = all.iter().map(n_targets).collect();
    let w = step_weights(&targets, LossMode::Token);
    let packed = micro_batch_loss(&m, &cfg, &all, &[(0..3).map(|i| (i, w[i])).collect()], 26).into_scalar();
    let t: u32 = targets.iter().sum();
    let mut sum = 0f32;
    for (i, s) in all.iter().enumerate() {
        sum += micro_batch_loss(&m, &cfg, &all, &[vec![(i, 1.0)]], s.ids.len()).into_scalar();
    }
    assert!((packed - sum / t as f32).abs() <= 1e-5 * packed.abs(), "{packed} vs {}", sum / t as f32);
}

/// The segmented (per-sequence) attention and the varlen host kernel equal the reference
/// block-diagonal mask, in loss and gradients, on rows with several sequences and a padding tail.
#[test]
fn segmented_attention_equals_the_reference_mask() {
    let cfg = cfg();
    let m = model(4);
    let all = seqs(&[(9, 4), (1, 0), (12, 6), (5, 5), (7, 3)], 23);
    let targets: Vec<u32> = all.iter().map(n_targets).collect();
    let w = step_weights(&targets, LossMode::Sequence);
    let rows = vec![vec![(0, w[0]), (1, w[1]), (2, w[2])], vec![(3, w[3]), (4, w[4])]];
    let (a, ga) =
        loss_and_grads(&m, micro_batch_loss_with(AttentionMode::Reference, &m, &cfg, &all, &rows, 24));
    let (b, gb) =
        loss_and_grads(&m, micro_batch_loss_with(AttentionMode::Segmented, &m, &cfg, &all, &rows, 24));
    assert!((a - b).abs() <= 1e-5 * a.abs(), "{a} vs {b}");
    assert_close(&gb, &ga, 1e-5, "gradients");
    let (v, gv) = loss_and_grads(&m, micro_batch_loss_with(AttentionMode::Varlen, &m, &cfg, &all, &rows, 24));
    assert!((a - v).abs() <= 1e-5 * a.abs(), "varlen: {a} vs {v}");
    assert_close(&gv, &ga, 1e-5, "varlen gradients");
    // Bucketed (sequences zero-padded to a multiple of 4, then of 8): the same loss and gradients.
    for bucket in [4, 8] {
        let (c, gc) = loss_and_grads(
            &m,
            micro_batch_loss_with(AttentionMode::Bucketed(bucket), &m, &cfg, &all, &rows, 24),
        );
        assert!((a - c).abs() <= 1e-5 * a.abs(), "bucket {bucket}: {a} vs {c}");
        assert_close(&gc, &ga, 1e-5, "bucketed gradients");
    }
}

/// The fused loss (logits recomputed per chunk in the backward) equals the plain chunked loss in
/// value and in every parameter's gradient, with tied and untied embeddings, chunks of 7 tokens
/// over 23 targets, padded chunks too.
#[test]
fn fused_loss_equals_the_plain_loss() {
    for tie in [true, false] {
        let cfg = LlamaConfig { tie_word_embeddings: tie, ..cfg() };
        let device = Default::default();
        B::seed(&device, 5);
        let m = Llama::<B>::init(&cfg, &device);
        assert!(m.head_weight().is_some());
        let all = seqs(&[(9, 4), (1, 0), (12, 6), (5, 5), (7, 3), (14, 9)], 31);
        let targets: Vec<u32> = all.iter().map(n_targets).collect();
        let w = step_weights(&targets, LossMode::Sequence);
        let rows = vec![vec![(0, w[0]), (1, w[1]), (2, w[2])], vec![(3, w[3]), (4, w[4]), (5, w[5])]];
        for mode in [AttentionMode::Auto, AttentionMode::Bucketed(4)] {
            let (a, ga) = loss_and_grads(&m, micro_batch_loss_via(false, mode, &m, &cfg, &all, &rows, 40));
            let (b, gb) = loss_and_grads(&m, micro_batch_loss_via(true, mode, &m, &cfg, &all, &rows, 40));
            assert!((a - b).abs() <= 1e-6 * a.abs(), "tie {tie} {mode:?}: {a} vs {b}");
            assert_close(&gb, &ga, 1e-5, "fused loss gradients");
        }
    }
}
