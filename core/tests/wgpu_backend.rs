//! The wgpu backend computes what the CPU backend computes. In CI this runs on Mesa's software
//! Vulkan driver (lavapipe, installed by .ci/run): correct but slow, so the model is tiny.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use longalign::model::load::{load_hf, save_hf};
use longalign::model::loss::{row_targets, weighted_cross_entropy};
use longalign::model::{AttentionMode, LlamaConfig};
use longalign::model::{Llama, PackedRows};

/// The backend `--backend wgpu` runs: Burn's kernel fusion and autotune as shipped.
type Wgpu = burn::backend::Wgpu;
/// The plain (unfused) kernels, for the generation test's comparison.
type Plain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Each test process tunes from a fresh autotune cache, as a new user's first run does (CubeCL
/// would otherwise reuse the results in `target/`): run the binary again for another fresh tune.
/// `LONGALIGN_TEST_KERNEL_CACHE=DIR` uses DIR instead (to read, or edit, what was tuned).
fn fresh_kernel_cache() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let dir = std::env::var_os("LONGALIGN_TEST_KERNEL_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap().keep());
        // SAFETY: set once, before any JIT device exists: every test calls this first.
        unsafe { std::env::set_var("LONGALIGN_KERNEL_CACHE", dir) };
        longalign::jit::init();
    });
}

fn cfg() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 48,
        hidden_size: 32,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        qkv_bias: true,
        o_bias: true,
        ..LlamaConfig::tiny()
    }
}

#[test]
fn wgpu_logits_match_cpu() {
    fresh_kernel_cache();
    let d = tempfile::tempdir().unwrap();
    let cfg = cfg();
    let cpu = Default::default();
    let m = Llama::<Flex>::init(&cfg, &cpu);
    save_hf(&m, &cfg, d.path(), &[]).unwrap();
    let rows = PackedRows {
        tokens: vec![3, 9, 27, 4, 1, 40, 2, 0, 0, 0],
        cu_seqlens: vec![vec![0, 4, 7]],
        rows: 1,
        row_len: 10,
    };
    let want = m.logits(&cfg, &rows, &cpu).into_data().to_vec::<f32>().unwrap();
    let gpu = Default::default();
    // The same seed makes the same model on either backend.
    let fresh = Llama::<Wgpu>::init(&cfg, &gpu);
    assert_eq!(
        fresh.embed_tokens.weight.val().into_data().to_vec::<f32>().unwrap(),
        m.embed_tokens.weight.val().into_data().to_vec::<f32>().unwrap()
    );
    let (cfg2, g) = load_hf::<Wgpu>(d.path(), &gpu).unwrap();
    for mode in [AttentionMode::Reference, AttentionMode::Segmented, AttentionMode::Varlen] {
        let h = g.hidden_with(&cfg2, &rows, mode, &gpu);
        let got = g.head(h.reshape([10, cfg.hidden_size])).into_data().to_vec::<f32>().unwrap();
        // Compare the 7 real tokens (padding outputs differ by design between modes).
        for i in 0..7 * cfg.vocab_size {
            assert!(
                (got[i] - want[i]).abs() <= 1e-4 * want[i].abs().max(1.0),
                "{mode:?} [{i}]: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

/// The varlen kernel inside the model: the packed, weighted loss and every parameter's gradient
/// equal the reference mask's (both on wgpu), for three sequences, GQA and a padding tail.
#[test]
fn varlen_kernel_in_the_model_matches_the_reference() {
    fresh_kernel_cache();
    type G = Autodiff<Wgpu>;
    let cfg = cfg();
    let device = Default::default();
    let m = Llama::<G>::init_seeded(&cfg, 11, &device);
    assert_eq!(AttentionMode::Auto.resolve::<G>(64), AttentionMode::Varlen);
    assert_eq!(AttentionMode::Auto.resolve::<Autodiff<Flex>>(64), AttentionMode::Varlen);
    let (a, b, c): (Vec<u32>, Vec<u32>, Vec<u32>) =
        ((1..12).collect(), (20..25).collect(), (30..38).map(|t| t % 48).collect());
    let targets = |n: usize| -> Vec<bool> { (0..n).map(|t| t >= n / 2).collect() };
    let (ta, tb, tc) = (targets(a.len()), targets(b.len()), targets(c.len()));
    let row_len = 30;
    let mut tokens: Vec<u32> = [a.clone(), b.clone(), c.clone()].concat();
    tokens.resize(row_len, 0);
    let rows = PackedRows { tokens, cu_seqlens: vec![vec![0, 11, 16, 24]], rows: 1, row_len };
    let (labels, weights) =
        row_targets(&[(&a[..], &ta[..], 0.2), (&b[..], &tb[..], 0.5), (&c[..], &tc[..], 0.3)], row_len);
    let run = |mode: AttentionMode| {
        let hidden = m.hidden_with(&cfg, &rows, mode, &device);
        let loss = weighted_cross_entropy(&m, hidden, &labels, &weights, 16);
        let value = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        (value, grad_vector(&m, &grads))
    };
    let (want_loss, want) = run(AttentionMode::Reference);
    let (got_loss, got) = run(AttentionMode::Varlen);
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {got_loss} vs {want_loss}");
    let scale = want.iter().fold(0f32, |s, x| s.max(x.abs()));
    let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "gradients: max abs diff {worst} vs scale {scale}");
}

/// All gradients of the model, flattened in parameter order.
fn grad_vector(model: &Llama<Autodiff<Wgpu>>, grads: &GradientsParams) -> Vec<f32> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
    }
    impl ModuleVisitor<Autodiff<Wgpu>> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<Wgpu>, D>>) {
            let g = self.grads.get::<Wgpu, D>(param.id).expect("every parameter has a gradient");
            self.out.extend(g.into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect { grads, out: Vec::new() };
    model.visit(&mut c);
    c.out
}

/// Greedy decoding, 64 new tokens (no stop token, so all 64 are compared) from a trained tiny
/// model, one token per decode step: with the KV cache on the fused wgpu backend (what
/// `--backend wgpu` runs) and on the plain one, and without the cache on the fused one, each
/// against the CPU. Before the patched fusion crate (`vendor/burn-cubecl-fusion/PATCH.md`), the
/// fused GEMV autotune picked for one-row products made the cached path repeat its first token.
#[test]
fn greedy_generation_on_wgpu_equals_the_cpu() {
    use longalign::data::{Message, Role};
    use longalign::infer::ChatModel;
    use longalign::model::generate::{GenerateConfig, generate, generate_uncached};
    type Fused = burn::backend::Wgpu;
    fresh_kernel_cache();
    let d = tempfile::tempdir().unwrap();
    let cfg = longalign::train::TrainConfig {
        max_steps: Some(40),
        lr: 2e-3,
        ..longalign::train::TrainConfig::embedded_default()
    };
    longalign::train::train::<Autodiff<Flex>>(&cfg, d.path(), false, &Default::default(), true).unwrap();
    let dir = d.path().join("export");
    let cpu = ChatModel::<Flex>::load(&dir, None, None, None, &Default::default()).unwrap();
    let prompt = cpu
        .fitted_prompt(&[Message::new(Role::User, "Find the pass key in the text and repeat it.")], None)
        .unwrap();
    let gc =
        GenerateConfig { max_new_tokens: 64, temperature: 0.0, stop_tokens: vec![], ..Default::default() };
    let (want, _) = generate(&cpu.model, &cpu.cfg, &prompt, &gc, &Default::default(), |_| true);
    assert_eq!(want.len(), 64);
    let fused = ChatModel::<Fused>::load(&dir, None, None, None, &Default::default()).unwrap();
    let plain = ChatModel::<Plain>::load(&dir, None, None, None, &Default::default()).unwrap();
    let (uncached, _) = generate_uncached(&fused.model, &fused.cfg, &prompt, &gc, &Default::default());
    let (f, _) = generate(&fused.model, &fused.cfg, &prompt, &gc, &Default::default(), |_| true);
    let (p, _) = generate(&plain.model, &plain.cfg, &prompt, &gc, &Default::default(), |_| true);
    let first_diff = |got: &[u32]| got.iter().zip(&want).position(|(a, b)| a != b);
    eprintln!(
        "first differing token: fused+cache {:?}, plain+cache {:?}, fused uncached {:?}",
        first_diff(&f),
        first_diff(&p),
        first_diff(&uncached)
    );
    assert_eq!(uncached, want, "fused, no cache");
    assert_eq!(p, want, "plain kernels, KV cache");
    assert_eq!(f, want, "fused, KV cache");
}
