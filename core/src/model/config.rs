//! Model configuration: Hugging Face `config.json` for Llama-family models, and built-in presets.
//!
//! Both spellings of RoPE settings in the wild are read: the older top-level `rope_theta` +
//! `rope_scaling` (`type` or `rope_type`) and the newer `rope_parameters` block.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How RoPE frequencies are scaled for long context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: positions divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: the base grows with the sequence length beyond `original_max_position_embeddings`.
    Dynamic { factor: f64, original_max_position_embeddings: usize },
    /// YaRN (Peng et al. 2023).
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// Scales cos/sin (the "mscale"); default 0.1·ln(factor) + 1.
        attention_factor: Option<f64>,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Which Hugging Face architecture the model is saved as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    LlamaForCausalLM,
    Qwen2ForCausalLM,
    MistralForCausalLM,
}

impl Architecture {
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::LlamaForCausalLM => "llama",
            Architecture::Qwen2ForCausalLM => "qwen2",
            Architecture::MistralForCausalLM => "mistral",
        }
    }
}

/// Everything that fixes the shape and arithmetic of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    /// Sliding-window attention span (Mistral v0.1), if any.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Standard deviation of the N(0, σ) weights of a fresh model (`initializer_range` in HF
    /// configs, 0.02 there by default). Only [`crate::model::Llama::init`] reads it.
    pub initializer_range: f64,
}

/// A `config.json` that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn get_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn get_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `eos_token_id` may be an int or a list of ints: the first is the one we stop on by default.
fn token_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError { path: path.display().to_string(), message: m };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        Self::from_hf_json(&v).map_err(err)
    }

    /// Parses the JSON of a Hugging Face `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self, String> {
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| match v.get("model_type").and_then(Value::as_str) {
                Some("llama") => Some("LlamaForCausalLM"),
                Some("qwen2") => Some("Qwen2ForCausalLM"),
                Some("mistral") => Some("MistralForCausalLM"),
                _ => None,
            })
            .ok_or("field architectures: missing (and no known model_type)")?;
        let architecture = match arch_name {
            "LlamaForCausalLM" => Architecture::LlamaForCausalLM,
            "Qwen2ForCausalLM" => Architecture::Qwen2ForCausalLM,
            "MistralForCausalLM" => Architecture::MistralForCausalLM,
            other => {
                return Err(format!(
                    "field architectures: unsupported architecture {other:?} (supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)"
                ));
            }
        };
        let req = |k: &str| get_usize(v, k).ok_or_else(|| format!("field {k}: missing or not an integer"));
        let hidden_size = req("hidden_size")?;
        let num_attention_heads = req("num_attention_heads")?;
        let num_key_value_heads = get_usize(v, "num_key_value_heads").unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            return Err(format!(
                "field num_key_value_heads: {num_key_value_heads} must divide num_attention_heads {num_attention_heads}"
            ));
        }
        let head_dim = match v.get("head_dim") {
            Some(Value::Number(n)) => n.as_u64().ok_or("field head_dim: not an integer")? as usize,
            _ => hidden_size / num_attention_heads,
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(format!("field hidden_act: {act:?} is not supported (only silu)"));
        }
        if v.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err("field mlp_bias: true is not supported".into());
        }
        // RoPE: newer configs keep it all in `rope_parameters`, older ones at top level.
        let params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = params
            .and_then(|p| get_f64(p, "rope_theta"))
            .or_else(|| get_f64(v, "rope_theta"))
            .unwrap_or(10_000.0);
        let scaling = params.or_else(|| v.get("rope_scaling").filter(|s| s.is_object()));
        let max_position_embeddings = get_usize(v, "max_position_embeddings").unwrap_or(2048);
        let rope_scaling = match scaling {
            None => RopeScaling::Default,
            Some(s) => parse_scaling(s, max_position_embeddings)?,
        };
        let attention_bias = v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let qkv_bias = architecture == Architecture::Qwen2ForCausalLM || attention_bias;
        let o_bias = architecture != Architecture::Qwen2ForCausalLM && attention_bias;
        let use_sliding = v
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(architecture == Architecture::MistralForCausalLM);
        let sliding_window = if use_sliding { get_usize(v, "sliding_window") } else { None };
        Ok(Self {
            architecture,
            vocab_size: req("vocab_size")?,
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            num_hidden_layers: req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias,
            o_bias,
            sliding_window,
            bos_token_id: token_id(v.get("bos_token_id")),
            eos_token_id: token_id(v.get("eos_token_id")),
            initializer_range: get_f64(v, "initializer_range").unwrap_or(0.02),
        })
    }

    /// Whether transformers can express this configuration: its attention biases are per
    /// architecture (Llama: one `attention_bias` switch for q/k/v/o; Qwen2: q/k/v always, o never;
    /// Mistral: none).
    pub fn check_hf(&self) -> Result<(), String> {
        let ok = match self.architecture {
            Architecture::LlamaForCausalLM => self.qkv_bias == self.o_bias,
            Architecture::Qwen2ForCausalLM => self.qkv_bias && !self.o_bias,
            Architecture::MistralForCausalLM => !self.qkv_bias && !self.o_bias,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{:?} cannot have qkv_bias={} with o_bias={} in a Hugging Face config",
                self.architecture, self.qkv_bias, self.o_bias
            ))
        }
    }

    /// The Hugging Face `config.json` for this model (what transformers loads unchanged).
    pub fn to_hf_json(&self) -> Value {
        let mut v = serde_json::json!({
            "architectures": [format!("{:?}", self.architecture)],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "initializer_range": self.initializer_range,
        });
        v["rope_scaling"] = match &self.rope_scaling {
            RopeScaling::Default => Value::Null,
            s => serde_json::to_value(s).expect("serializable"),
        };
        match self.architecture {
            Architecture::LlamaForCausalLM => {
                v["attention_bias"] = self.qkv_bias.into();
                v["mlp_bias"] = false.into();
            }
            Architecture::Qwen2ForCausalLM => {
                v["use_sliding_window"] = false.into();
            }
            Architecture::MistralForCausalLM => {
                v["sliding_window"] = self.sliding_window.into();
            }
        }
        v
    }

    /// The tiny preset of the embedded default: ~0.9M parameters over the built-in byte tokenizer.
    pub fn tiny() -> Self {
        let hidden_size = 128;
        Self {
            architecture: Architecture::LlamaForCausalLM,
            vocab_size: crate::data::builtin::VOCAB_SIZE,
            hidden_size,
            intermediate_size: 352,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 32,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            sliding_window: None,
            bos_token_id: None,
            eos_token_id: Some(crate::data::builtin::IM_END),
            // σ = 1/√hidden (fan-in scaling), not HF's 0.02. Measured on a copy task
            // ("Repeat exactly: <8–24 distinct letters>", transformers' own Llama at this shape,
            // AdamW 3e-3): with σ = 0.02 the loss sat on the ln 52 plateau for 3,000 steps;
            // with σ = 1/√128 ≈ 0.088 it left it by step 200 and copied 32% of letters by step
            // 1,000. In-context copying is what retrieval needs, and 0.02 is too small a start for
            // a 128-wide model to find it within the embedded default's budget.
            initializer_range: 1.0 / (hidden_size as f64).sqrt(),
        }
    }

    /// Built-in shapes over the byte tokenizer, for the embedded default (`tiny`) and for
    /// throughput benchmarks at realistic widths (`small` ≈ 21M, `medium` ≈ 170M parameters;
    /// randomly initialised, so only their speed and memory mean anything).
    pub const PRESETS: [&'static str; 3] = ["tiny", "small", "medium"];

    /// The preset called `name`, if it is one.
    pub fn preset(name: &str) -> Option<Self> {
        let (d, f, layers, heads, kv) = match name {
            "tiny" => return Some(Self::tiny()),
            "small" => (512, 1408, 8, 8, 4),
            "medium" => (1024, 2816, 16, 16, 8),
            _ => return None,
        };
        Some(Self {
            hidden_size: d,
            intermediate_size: f,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: d / heads,
            max_position_embeddings: 65536,
            initializer_range: 1.0 / (d as f64).sqrt(),
            ..Self::tiny()
        })
    }

    /// Parameters of the model (embedding counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim);
        let attn = d * q
            + 2 * d * kv
            + q * d
            + if self.qkv_bias { q + 2 * kv } else { 0 }
            + if self.o_bias { d } else { 0 };
        let layer = attn + 3 * d * f + 2 * d;
        v * d + self.num_hidden_layers * layer + d + if self.tie_word_embeddings { 0 } else { v * d }
    }
}

fn parse_scaling(s: &Value, max_pos: usize) -> Result<RopeScaling, String> {
    let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let factor =
        || get_f64(s, "factor").ok_or_else(|| format!("field rope_scaling.factor: missing for {kind}"));
    let orig = get_usize(s, "original_max_position_embeddings").unwrap_or(max_pos);
    Ok(match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()?, original_max_position_embeddings: orig },
        "yarn" => RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: orig,
            beta_fast: get_f64(s, "beta_fast").unwrap_or(32.0),
            beta_slow: get_f64(s, "beta_slow").unwrap_or(1.0),
            attention_factor: get_f64(s, "attention_factor"),
        },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f64(s, "low_freq_factor")
                .ok_or("field rope_scaling.low_freq_factor: missing")?,
            high_freq_factor: get_f64(s, "high_freq_factor")
                .ok_or("field rope_scaling.high_freq_factor: missing")?,
            original_max_position_embeddings: orig,
        },
        other => {
            return Err(format!(
                "field rope_scaling: unsupported rope type {other:?} (supported: default, linear, dynamic, yarn, llama3)"
            ));
        }
    })
}
