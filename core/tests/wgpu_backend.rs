//! The wgpu backend computes what the CPU backend computes. In CI this runs on Mesa's software
//! Vulkan driver (lavapipe, installed by .ci/run): correct but slow, so the model is tiny.

use burn::backend::Flex;
use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::tensor::backend::Backend;
use longalign::model::llama::{Llama, PackedRows};
use longalign::model::load::{load_hf, save_hf};
use longalign::model::{AttentionMode, LlamaConfig};

/// The unfused wgpu backend. With Burn's kernel fusion (the `Wgpu` alias), a fresh autotune on
/// lavapipe has picked fused reduce/matmul kernels whose logits differ from the CPU by up to 4e-3
/// (16% on a small logit), while other runs matched within 1e-4: an open item against the fused
/// path, tracked in the README. The model code itself is checked here on the plain kernels.
type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

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
    let d = tempfile::tempdir().unwrap();
    let cfg = cfg();
    let cpu = Default::default();
    Flex::seed(&cpu, 7);
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
    let (cfg2, g) = load_hf::<Wgpu>(d.path(), &gpu).unwrap();
    for mode in [AttentionMode::Reference, AttentionMode::Segmented] {
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
