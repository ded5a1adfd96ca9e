//! LoRA (Hu et al. 2021): a frozen projection `W` plus a trained low-rank update,
//!
//! ```text
//!   x ──▶ base: x·W  (W [in, out], frozen) ─────────────────────┐
//!    └──▶ dropout ──▶ ·A [in, r] ──▶ ·B [r, out] ──▶ × α/r ─────▶ + ──▶ y
//! ```
//!
//! `B` starts at zero, so a fresh adapter changes nothing; `A` is PEFT's Kaiming-uniform draw.
//! LongLoRA (Chen et al. 2024) found that long-context LoRA also needs the embeddings and norms
//! trained (`--train embeddings,norms`); everything else is frozen with Burn's
//! `require_grad = false`, so a frozen weight gets no gradient (its weight-gradient matmul is never
//! computed) and, having none, no AdamW moments. PEFT's file format lives in `peft.rs`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::llama::{Block, Llama};

/// A projection LoRA can adapt, by its Hugging Face module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] =
        [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The module's name in transformers (and in PEFT's `target_modules`).
    pub fn hf(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// Where the module sits under `model.layers.{i}.` (`self_attn.q_proj`, `mlp.up_proj`, …).
    pub fn path(self) -> String {
        let parent = if self < Self::Gate { "self_attn" } else { "mlp" };
        format!("{parent}.{}", self.hf())
    }

    /// `q`, `q_proj`, … → the target.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| s == t.hf() || s == &t.hf()[..t.hf().len() - 5])
    }

    /// A comma-separated list (`q,k,v,o`; `all` = every projection).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        if s.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut out: Vec<Self> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                Self::from_name(p).ok_or_else(|| {
                    format!("unknown LoRA target {p:?} (expected q, k, v, o, gate, up, down or all)")
                })
            })
            .collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err("no LoRA targets given".into());
        }
        Ok(out)
    }
}

/// What an adapted run trains; saved in `config.toml` as `[lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on each adapter's input (training only).
    #[serde(default)]
    pub dropout: f64,
    pub targets: Vec<Target>,
    /// Also train the token embeddings (LongLoRA's `embed`).
    #[serde(default)]
    pub train_embeddings: bool,
    /// Also train every RMSNorm weight (LongLoRA's `norm`).
    #[serde(default)]
    pub train_norms: bool,
}

impl LoraConfig {
    /// The update's scale, `α / r` (PEFT's default; not rsLoRA's `α / √r`).
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// `(in, out)` of target `t`'s projection in a model of `mcfg`.
    pub fn shape(t: Target, mcfg: &super::LlamaConfig) -> (usize, usize) {
        let (d, f) = (mcfg.hidden_size, mcfg.intermediate_size);
        let (q, kv) = (mcfg.num_attention_heads * mcfg.head_dim, mcfg.num_key_value_heads * mcfg.head_dim);
        match t {
            Target::Q => (d, q),
            Target::K | Target::V => (d, kv),
            Target::O => (q, d),
            Target::Gate | Target::Up => (d, f),
            Target::Down => (f, d),
        }
    }

    /// Parameters of the adapters alone on a model of `mcfg`.
    pub fn adapter_parameters(&self, mcfg: &super::LlamaConfig) -> usize {
        let per_layer: usize =
            self.targets.iter().map(|&t| Self::shape(t, mcfg)).map(|(i, o)| self.rank * (i + o)).sum();
        per_layer * mcfg.num_hidden_layers
    }

    /// Parameters trained on a model of `mcfg`: the adapters and what else `self` trains.
    pub fn trainable_parameters(&self, mcfg: &super::LlamaConfig) -> usize {
        let d = mcfg.hidden_size;
        self.adapter_parameters(mcfg)
            + if self.train_embeddings { mcfg.vocab_size * d } else { 0 }
            + if self.train_norms { (2 * mcfg.num_hidden_layers + 1) * d } else { 0 }
    }

    /// What a run of this trains and what that saves, in one line.
    pub fn describe(&self, mcfg: &super::LlamaConfig) -> String {
        let (t, all) = (self.trainable_parameters(mcfg), mcfg.num_parameters());
        let extra: Vec<&str> = [(self.train_embeddings, "embeddings"), (self.train_norms, "norms")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        let targets: Vec<&str> = self.targets.iter().map(|t| t.hf()).collect();
        let adam = |p: usize| crate::util::table::compact(8.0 * p as f64);
        format!(
            "LoRA r={} alpha={} dropout {} on {}{}: {} of {} parameters trainable ({:.2}%); AdamW state {}B instead of {}B",
            self.rank,
            self.alpha,
            self.dropout,
            targets.join(","),
            if extra.is_empty() { String::new() } else { format!(" + {}", extra.join(", ")) },
            crate::util::table::thousands(t as u64),
            crate::util::table::thousands(all as u64),
            100.0 * t as f64 / all as f64,
            adam(t),
            adam(all),
        )
    }

    /// An error naming the flag when a value is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("--lora-rank must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("--lora-dropout must be in [0, 1), not {}", self.dropout));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(format!("--lora-alpha must be positive, not {}", self.alpha));
        }
        if self.targets.is_empty() {
            return Err("--lora-targets names no projection".into());
        }
        Ok(())
    }
}

/// One adapter: `(α/r) · drop(x) · A · B`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, r]`: PEFT's `lora_A.weight` transposed.
    pub a: Param<Tensor<B, 2>>,
    /// `[r, out]`: PEFT's `lora_B.weight` transposed.
    pub b: Param<Tensor<B, 2>>,
    pub scale: f64,
    pub dropout: f64,
    /// Which projection of the model this is, so that each has its own dropout stream.
    pub salt: u64,
}

impl<B: Backend> Lora<B> {
    /// # Shapes
    /// - x: `[batch, seq, in]` → `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = super::lora_dropout::apply(x, self.dropout, self.salt);
        x.matmul(self.a.val().unsqueeze()).matmul(self.b.val().unsqueeze()).mul_scalar(self.scale)
    }

    /// The full-rank update `(α/r)·A·B`, `[in, out]`.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// A linear projection with an optional adapter.
#[derive(Module, Debug)]
pub struct Proj<B: Backend> {
    pub base: Linear<B>,
    pub lora: Option<Lora<B>>,
}

impl<B: Backend> From<Linear<B>> for Proj<B> {
    fn from(base: Linear<B>) -> Self {
        Self { base, lora: None }
    }
}

impl<B: Backend> Proj<B> {
    /// # Shapes
    /// - x: `[batch, seq, in]` → `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lora {
            None => self.base.forward(x),
            Some(l) => self.base.forward(x.clone()) + l.forward(x),
        }
    }

    /// The plain projection with the adapter folded in: `W + (α/r)·A·B`.
    pub fn merged(self) -> Linear<B> {
        match self.lora {
            None => self.base,
            Some(l) => {
                let w = (self.base.weight.val() + l.delta()).detach();
                Linear { weight: Param::from_tensor(w), bias: self.base.bias }
            }
        }
    }
}

/// Sets `require_grad` on every float parameter it maps.
struct SetGrad(bool);

impl<B: Backend> ModuleMapper<B> for SetGrad {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        p.set_require_grad(self.0)
    }
}

fn grad<B: Backend, M: Module<B>>(m: M, on: bool) -> M {
    m.map(&mut SetGrad(on))
}

/// The projection of `block` that `t` names.
pub fn proj<B: Backend>(block: &Block<B>, t: Target) -> &Proj<B> {
    match t {
        Target::Q => &block.self_attn.q_proj,
        Target::K => &block.self_attn.k_proj,
        Target::V => &block.self_attn.v_proj,
        Target::O => &block.self_attn.o_proj,
        Target::Gate => &block.mlp.gate_proj,
        Target::Up => &block.mlp.up_proj,
        Target::Down => &block.mlp.down_proj,
    }
}

/// `block` with each projection replaced by `f(target, projection)`.
pub fn map_projs<B: Backend>(block: Block<B>, mut f: impl FnMut(Target, Proj<B>) -> Proj<B>) -> Block<B> {
    let Block { input_layernorm, self_attn: a, post_attention_layernorm, mlp: m } = block;
    // Fields are evaluated in the order written: Q, K, V, O, gate, up, down (adapters draw their
    // initialisation in this order).
    let self_attn = super::attention::Attention {
        q_proj: f(Target::Q, a.q_proj),
        k_proj: f(Target::K, a.k_proj),
        v_proj: f(Target::V, a.v_proj),
        o_proj: f(Target::O, a.o_proj),
        ..a
    };
    let mlp = super::llama::Mlp {
        gate_proj: f(Target::Gate, m.gate_proj),
        up_proj: f(Target::Up, m.up_proj),
        down_proj: f(Target::Down, m.down_proj),
    };
    Block { input_layernorm, self_attn, post_attention_layernorm, mlp }
}

/// PEFT's `lora_A` initialisation (Kaiming-uniform with `a = √5`): U(−1/√in, 1/√in), from a seeded
/// host generator so that a seed gives the same adapters on every backend.
fn kaiming_a<B: Backend>(
    d_in: usize,
    r: usize,
    rng: &mut crate::util::rng::SplitMix64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let v: Vec<f32> = (0..d_in * r)
        .map(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound)
        .map(|x| x as f32)
        .collect();
    Tensor::from_data(TensorData::new(v, [d_in, r]), device)
}

/// What is trained and what it costs: `trainable` parameters of `total`; AdamW keeps two f32
/// moments per trainable parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trainable {
    pub trainable: usize,
    pub total: usize,
}

impl Trainable {
    pub fn of<B: Backend, M: Module<B>>(m: &M) -> Self {
        struct Count(Trainable);
        impl<B: Backend> ModuleVisitor<B> for Count {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                let n = p.val().shape().num_elements();
                self.0.total += n;
                if p.val().is_require_grad() {
                    self.0.trainable += n;
                }
            }
        }
        let mut c = Count(Trainable { trainable: 0, total: 0 });
        m.visit(&mut c);
        c.0
    }

    /// Bytes of AdamW state (two f32 moments per trainable parameter).
    pub fn optimizer_bytes(&self) -> u64 {
        self.trainable as u64 * 8
    }
}

impl<B: Backend> Llama<B> {
    /// This model with fresh adapters on `cfg.targets` of every layer (drawn from `seed`) and
    /// everything frozen but the adapters and what `cfg` also trains.
    pub fn with_lora(self, cfg: &LoraConfig, seed: u64, device: &B::Device) -> Self {
        let mut rng = crate::util::rng::SplitMix64::derive(seed, 0x4C6F_5241);
        let mut m = grad(self, false);
        m.layers = m
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, block)| {
                map_projs(block, |t, p| {
                    if !cfg.targets.contains(&t) {
                        return p;
                    }
                    let [d_in, d_out] = p.base.weight.val().dims();
                    let a = kaiming_a::<B>(d_in, cfg.rank, &mut rng, device);
                    let lora = Lora {
                        a: Param::from_tensor(a),
                        b: Param::from_tensor(Tensor::zeros([cfg.rank, d_out], device)),
                        scale: cfg.scale(),
                        dropout: cfg.dropout,
                        salt: (i * Target::ALL.len() + t as usize) as u64,
                    };
                    Proj { base: p.base, lora: Some(lora) }
                })
            })
            .collect();
        m.freeze_as(cfg)
    }

    /// Gradients on for the adapters and what `cfg` also trains, off for the rest.
    pub fn freeze_as(self, cfg: &LoraConfig) -> Self {
        let mut m = grad(self, false);
        m.layers = m
            .layers
            .into_iter()
            .map(|mut block| {
                if cfg.train_norms {
                    block.input_layernorm = grad(block.input_layernorm, true);
                    block.post_attention_layernorm = grad(block.post_attention_layernorm, true);
                }
                map_projs(block, |_, p| Proj { base: p.base, lora: p.lora.map(|l| grad(l, true)) })
            })
            .collect();
        if cfg.train_norms {
            m.norm = grad(m.norm, true);
        }
        if cfg.train_embeddings {
            m.embed_tokens = grad(m.embed_tokens, true);
        }
        m
    }

    /// The plain model with every adapter folded into its projection (PEFT's
    /// `merge_and_unload`): what `export` writes and transformers loads.
    pub fn merged(mut self) -> Self {
        self.layers = self.layers.into_iter().map(|b| map_projs(b, |_, p| p.merged().into())).collect();
        self
    }

    /// Whether any projection carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.layers.iter().any(|b| Target::ALL.iter().any(|&t| proj(b, t).lora.is_some()))
    }
}

/// A fresh `[rows, cols]` tensor of Bernoulli(keep) draws: dropout's mask (see `lora_dropout`).
pub(crate) fn bernoulli<B: Backend, const D: usize>(
    shape: [usize; D],
    keep: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Bernoulli(keep), device)
}

#[cfg(test)]
#[path = "lora_tests.rs"]
mod tests;
