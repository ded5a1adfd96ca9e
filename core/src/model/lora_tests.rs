//! LoRA against what it must equal: a fresh adapter is the base model, an adapter folded in is the
//! adapter applied, its gradients are the loss's derivatives (finite differences), only adapters
//! (and what is asked for) get gradients, dropout is recomputed exactly under checkpointing, and
//! PEFT's file format round-trips.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::model::{AttentionMode, LlamaConfig, PackedRows};
use crate::plan::{LossMode, Strategy};
use crate::train::inputs::Layout;
use crate::train::session::CpuBackend;
use crate::train::step::tests::{data, plan_of, rel};
use crate::train::step::{LossOptions, gradients, loss_sum};

type B = CpuBackend;
type Inner = burn::backend::Flex;

fn small() -> LlamaConfig {
    LlamaConfig { num_hidden_layers: 2, ..LlamaConfig::tiny() }
}

fn cfg(targets: &[Target]) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: targets.to_vec(),
        train_embeddings: false,
        train_norms: false,
    }
}

/// `m` with every adapter's B drawn at random (a fresh one is zero, which hides mistakes).
fn perturbed<Bk: burn::tensor::backend::Backend>(m: Llama<Bk>, seed: u64) -> Llama<Bk> {
    let mut rng = crate::util::rng::SplitMix64::new(seed);
    let mut layers = Vec::new();
    for block in m.layers {
        layers.push(map_projs(block, |_, mut p| {
            if let Some(l) = &mut p.lora {
                let [r, o] = l.b.val().dims();
                let v: Vec<f32> = (0..r * o).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect();
                let t = Tensor::from_data(TensorData::new(v, [r, o]), &l.b.val().device());
                let train = l.b.val().is_require_grad();
                l.b = Param::from_tensor(t).set_require_grad(train);
            }
            p
        }));
    }
    Llama { layers, ..m }
}

fn logits(m: &Llama<Inner>, mcfg: &LlamaConfig, ids: &[u32]) -> Vec<f32> {
    m.logits(mcfg, &PackedRows::single(ids), &Default::default()).into_data().to_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_fresh_adapter_is_the_base_model_and_merging_is_exact() {
    let mcfg = small();
    let base = Llama::<Inner>::init_seeded(&mcfg, 1, &Default::default());
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 200) as u32).collect();
    let before = logits(&base, &mcfg, &ids);
    let adapted = base.with_lora(&cfg(&Target::ALL), 5, &Default::default());
    assert!(adapted.has_lora());
    assert_eq!(logits(&adapted, &mcfg, &ids), before, "B = 0: no change at all");
    let adapted = perturbed(adapted, 9);
    let after = logits(&adapted, &mcfg, &ids);
    assert!(max_diff(&after, &before) > 1e-2, "the perturbed adapters change the logits");
    let merged = adapted.merged();
    assert!(!merged.has_lora());
    assert!(max_diff(&logits(&merged, &mcfg, &ids), &after) < 2e-5);
}

/// Each parameter with a gradient, by whether it is an adapter's.
struct Seen<'a>(&'a GradientsParams, Vec<(bool, usize)>);

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Seen<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        let has = self.0.get::<Bk::InnerBackend, D>(p.id).is_some();
        self.1.push((has, p.val().shape().num_elements()));
    }
}

fn step_loss_grads(m: &Llama<B>, mcfg: &LlamaConfig, opts: LossOptions) -> (f64, GradientsParams) {
    let tokens = data(8, mcfg.vocab_size);
    let plan = plan_of(&tokens, Strategy::Pack, LossMode::Sequence);
    let (losses, grads) =
        gradients(m, mcfg, &plan.steps[0].micro_batches, &tokens, 3, opts, &Default::default());
    (loss_sum(losses), grads)
}

#[test]
fn only_the_adapters_and_what_is_asked_for_get_gradients() {
    let mcfg = small();
    let opts = LossOptions::new(64, None, AttentionMode::Varlen).with_layout(Layout::Stream { bucket: 1 });
    for (extra, ck) in [((false, false), false), ((true, true), false), ((false, true), true)] {
        let mut c = cfg(&[Target::Q, Target::V, Target::Down]);
        (c.train_embeddings, c.train_norms) = extra;
        let m = Llama::<B>::init_seeded(&mcfg, 0, &Default::default()).with_lora(&c, 1, &Default::default());
        let counted = Trainable::of(&m);
        assert_eq!(counted.trainable, c.trainable_parameters(&mcfg));
        assert_eq!(counted.total, mcfg.num_parameters() + c.adapter_parameters(&mcfg));
        let (loss, grads) = step_loss_grads(&m, &mcfg, opts.with_checkpointing(ck));
        assert!(loss > 0.0);
        let mut seen = Seen(&grads, Vec::new());
        m.visit(&mut seen);
        let with: usize = seen.1.iter().filter(|(h, _)| *h).map(|(_, n)| n).sum();
        assert_eq!(
            with,
            c.trainable_parameters(&mcfg),
            "{extra:?} checkpointed {ck}: gradients exactly for the trainable"
        );
    }
}

/// The loss of the step's micro-batches as a function of the model (no gradients).
fn loss_of(m: &Llama<B>, mcfg: &LlamaConfig, opts: LossOptions) -> f64 {
    step_loss_grads(m, mcfg, opts).0
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let mcfg = small();
    let opts = LossOptions::new(64, None, AttentionMode::Varlen).with_layout(Layout::Stream { bucket: 1 });
    let m = perturbed(
        Llama::<B>::init_seeded(&mcfg, 0, &Default::default()).with_lora(
            &cfg(&[Target::Q, Target::O, Target::Up]),
            2,
            &Default::default(),
        ),
        3,
    );
    let (_, grads) = step_loss_grads(&m, &mcfg, opts);
    // The directional derivative along the gradient itself (|g|², the largest there is, so f32
    // rounding is small beside it) and along a random direction, by central differences.
    let g = |l: &Lora<B>| -> [Vec<f32>; 2] {
        [&l.a, &l.b].map(|p| grads.get::<Inner, 2>(p.id).unwrap().into_data().to_vec().unwrap())
    };
    let all: Vec<[Vec<f32>; 2]> = m
        .layers
        .iter()
        .flat_map(|b| Target::ALL.iter().filter_map(|&t| proj(b, t).lora.as_ref().map(g)))
        .collect();
    let mut rng = crate::util::rng::SplitMix64::new(11);
    let random: Vec<[Vec<f32>; 2]> = all
        .iter()
        .map(|ab| {
            ab.clone().map(|v| {
                v.iter().map(|_| if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 }).collect()
            })
        })
        .collect();
    for (name, dir) in [("gradient", &all), ("random", &random)] {
        let norm: f64 = dir.iter().flatten().flatten().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let expect: f64 = dir
            .iter()
            .zip(&all)
            .flat_map(|(d, g)| d.iter().zip(g).flat_map(|(d, g)| d.iter().zip(g)))
            .map(|(&d, &g)| d as f64 * g as f64)
            .sum::<f64>()
            / norm;
        let eps = 2e-3;
        let moved = |sign: f64| {
            let mut k = 0;
            let layers = m.layers.iter().cloned().map(|b| {
                map_projs(b, |_, mut p| {
                    if let Some(l) = &mut p.lora {
                        let [da, db] = &dir[k];
                        k += 1;
                        let shift = |t: Tensor<B, 2>, d: &[f32]| {
                            let dims = t.dims();
                            let v: Vec<f32> =
                                d.iter().map(|&x| (sign * eps * x as f64 / norm) as f32).collect();
                            // On the inner backend: a fresh leaf, as a parameter must be.
                            let t = t.inner()
                                + Tensor::<Inner, 2>::from_data(
                                    TensorData::new(v, dims),
                                    &Default::default(),
                                );
                            Tensor::<B, 2>::from_inner(t)
                        };
                        l.a = Param::from_tensor(shift(l.a.val(), da));
                        l.b = Param::from_tensor(shift(l.b.val(), db));
                    }
                    p
                })
            });
            let layers: Vec<_> = layers.collect();
            loss_of(&Llama { layers, ..m.clone() }, &mcfg, opts)
        };
        let fd = (moved(1.0) - moved(-1.0)) / (2.0 * eps);
        assert!(expect.abs() > 1e-3, "{name}: a derivative to measure ({expect})");
        assert!(
            (fd - expect).abs() < 2e-2 * expect.abs() + 2e-4,
            "{name}: finite difference {fd} vs autodiff {expect}"
        );
    }
}

#[test]
fn dropout_is_reproducible_and_recomputed_exactly_under_checkpointing() {
    let mcfg = small();
    let opts = LossOptions::new(64, None, AttentionMode::Varlen).with_layout(Layout::Stream { bucket: 1 });
    let c = LoraConfig { dropout: 0.3, ..cfg(&Target::ALL) };
    let m = perturbed(
        Llama::<B>::init_seeded(&mcfg, 0, &Default::default()).with_lora(&c, 1, &Default::default()),
        4,
    );
    let flat = |m: &Llama<B>, g: &GradientsParams| -> Vec<f32> {
        struct All<'a>(&'a GradientsParams, Vec<f32>);
        impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for All<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
                if let Some(g) = self.0.get::<Bk::InnerBackend, D>(p.id) {
                    self.1.extend(g.into_data().to_vec::<f32>().unwrap());
                }
            }
        }
        let mut a = All(g, Vec::new());
        m.visit(&mut a);
        a.1
    };
    let run = |key: Option<u64>, ck: bool| {
        let (l, g) =
            step_loss_grads(&m, &mcfg, LossOptions { dropout_key: key, ..opts.with_checkpointing(ck) });
        (l, flat(&m, &g))
    };
    let (l_off, _) = run(None, false);
    let (l1, g1) = run(Some(1), false);
    let (l1b, g1b) = run(Some(1), false);
    let (l1c, g1c) = run(Some(1), true);
    let (l2, _) = run(Some(2), false);
    assert_eq!((l1, &g1), (l1b, &g1b), "the same key draws the same masks");
    assert!(
        (l1 - l_off).abs() > 1e-4 && (l1 - l2).abs() > 1e-4,
        "dropout acts, and per key: {l_off} {l1} {l2}"
    );
    assert!((l1c - l1).abs() < 1e-5 * l1.abs(), "checkpointed loss {l1c} vs {l1}");
    assert!(rel(&g1c, &g1) < 1e-4, "checkpointing recomputes the forward's masks: {}", rel(&g1c, &g1));
    // Outside a training scope (scoring, generation) dropout is off.
    let inner = burn::module::AutodiffModule::valid(&m);
    let ids: Vec<u32> = (0..30).collect();
    assert_eq!(logits(&inner, &mcfg, &ids), logits(&inner, &mcfg, &ids));
}

#[cfg(feature = "native")]
#[test]
fn peft_adapters_round_trip() {
    let mcfg = LlamaConfig { tie_word_embeddings: false, ..small() };
    let dir = tempfile::tempdir().unwrap();
    let c = LoraConfig { train_norms: true, train_embeddings: true, ..cfg(&[Target::K, Target::Gate]) };
    let base = Llama::<Inner>::init_seeded(&mcfg, 1, &Default::default());
    let mut adapted = perturbed(base.clone().with_lora(&c, 2, &Default::default()), 6);
    // Trained norms and embeddings differ from the base's: the adapter must carry them.
    adapted.norm.weight = Param::from_tensor(adapted.norm.weight.val().mul_scalar(1.5));
    adapted.embed_tokens.weight = Param::from_tensor(adapted.embed_tokens.weight.val().mul_scalar(0.5));
    crate::model::peft::save_adapter(&adapted, &mcfg, &c, "base", dir.path()).unwrap();
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg_json["target_modules"], serde_json::json!(["gate_proj", "k_proj"]));
    assert_eq!(cfg_json["r"], 4);
    let loaded = crate::model::peft::apply_adapter(base, &mcfg, dir.path(), &Default::default()).unwrap();
    let ids: Vec<u32> = (0..30).map(|i| (i * 13 % 250) as u32).collect();
    assert!(max_diff(&logits(&loaded, &mcfg, &ids), &logits(&adapted, &mcfg, &ids)) < 2e-5);
    // A tensor of another kind is refused by name.
    let bad = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("adapter_config.json"), bad.path().join("adapter_config.json")).unwrap();
    let t = std::collections::BTreeMap::from([(
        "base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector".to_string(),
        (vec![3], vec![1.0f32; 3]),
    )]);
    std::fs::write(
        bad.path().join("adapter_model.safetensors"),
        crate::model::load::safetensors_f32(t).unwrap(),
    )
    .unwrap();
    let base = Llama::<Inner>::init_seeded(&mcfg, 1, &Default::default());
    let err = crate::model::peft::apply_adapter(base, &mcfg, bad.path(), &Default::default()).unwrap_err();
    assert!(format!("{err:#}").contains("lora_magnitude_vector"), "{err:#}");
}
