//! PEFT's adapter directory: `adapter_config.json` + `adapter_model.safetensors`, what
//! `PeftModel.from_pretrained(base, dir)` loads and `save_pretrained` writes.
//!
//! ```text
//!   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in]   (ours: A [in, r])
//!   base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out, r]  (ours: B [r, out])
//!   base_model.model.model.embed_tokens.weight, ….input_layernorm.weight  modules_to_save, whole
//! ```
//!
//! Reading accepts what PEFT writes for LoRA on these models: any rank (per module, as
//! `rank_pattern` gives), rsLoRA's scale, adapter names left in the keys, and `modules_to_save`
//! among the embeddings, norms and head. Anything else (DoRA, biases, `alpha_pattern`, other
//! layers) is refused by name rather than loaded half.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::{Value, json};

use super::Llama;
use super::config::LlamaConfig;
use super::load::{WeightFiles, safetensors_f32};
use super::lora::{Lora, LoraConfig, Proj, Target, map_projs, proj};

const PREFIX: &str = "base_model.model.";

/// The names `modules_to_save` gets for what `cfg` trains besides the adapters.
fn modules_to_save(cfg: &LoraConfig) -> Vec<&'static str> {
    let mut m = Vec::new();
    if cfg.train_embeddings {
        m.push("embed_tokens");
    }
    if cfg.train_norms {
        m.extend(["input_layernorm", "post_attention_layernorm", "norm"]);
    }
    m
}

/// A tensor's shape and f32 values, on the host.
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    (t.dims().to_vec(), t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data"))
}

/// Writes `model`'s adapters (and what `cfg` also trains) as a PEFT directory. `base` names the
/// base model in `base_model_name_or_path`.
pub fn save_adapter<B: Backend>(
    model: &Llama<B>,
    mcfg: &LlamaConfig,
    cfg: &LoraConfig,
    base: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut out = BTreeMap::new();
    let mut put = |name: String, t: Tensor<B, 2>| {
        out.insert(format!("{PREFIX}{name}"), host(t));
    };
    for (i, block) in model.layers.iter().enumerate() {
        for t in Target::ALL {
            if let Some(l) = &proj(block, t).lora {
                let p = format!("model.layers.{i}.{}", t.path());
                put(format!("{p}.lora_A.weight"), l.a.val().transpose());
                put(format!("{p}.lora_B.weight"), l.b.val().transpose());
            }
        }
    }
    // What else was trained, whole (read from the model itself: no merged copy of the rest).
    if cfg.train_embeddings {
        let e = host(model.embed_tokens.weight.val());
        // PEFT ties a trained embedding to the head (`ensure_weight_tying`) and then expects the
        // head's copy in the file too.
        if mcfg.tie_word_embeddings {
            out.insert(format!("{PREFIX}lm_head.weight"), e.clone());
        }
        out.insert(format!("{PREFIX}model.embed_tokens.weight"), e);
    }
    if cfg.train_norms {
        for (i, block) in model.layers.iter().enumerate() {
            for (n, norm) in [
                ("input_layernorm", &block.input_layernorm),
                ("post_attention_layernorm", &block.post_attention_layernorm),
            ] {
                out.insert(format!("{PREFIX}model.layers.{i}.{n}.weight"), host(norm.weight.val()));
            }
        }
        out.insert(format!("{PREFIX}model.norm.weight"), host(model.norm.weight.val()));
    }
    let mut targets: Vec<&str> = cfg.targets.iter().map(|t| t.hf()).collect();
    targets.sort();
    let save = modules_to_save(cfg);
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "revision": null,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "modules_to_save": if save.is_empty() { Value::Null } else { json!(save) },
        // A trained tied embedding is the head too: PEFT must keep them one.
        "ensure_weight_tying": cfg.train_embeddings && mcfg.tie_word_embeddings,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    std::fs::create_dir_all(dir)?;
    crate::util::write_atomic(&dir.join("adapter_model.safetensors"), &safetensors_f32(out)?)?;
    crate::util::write_atomic(
        &dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    Ok(())
}

/// An adapter directory's settings that decide how its tensors apply.
struct AdapterConfig {
    alpha: f64,
    rslora: bool,
}

fn read_config(path: &Path) -> anyhow::Result<AdapterConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let bad = |k: &str, why: &str| anyhow::anyhow!("{}: field {k}: {why}", path.display());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(bad("peft_type", &format!("{other:?} (only LORA adapters are read)"))),
    }
    if field("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(bad("use_dora", "DoRA adapters are not supported"));
    }
    if field("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err(bad("fan_in_fan_out", "true is for GPT-2's Conv1D layers, not Llama's Linear"));
    }
    if let Some(b) = field("bias").and_then(Value::as_str).filter(|b| *b != "none") {
        return Err(bad("bias", &format!("{b:?} (only \"none\" is supported)")));
    }
    if field("alpha_pattern").and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
        return Err(bad("alpha_pattern", "per-module alphas are not supported"));
    }
    if field("layers_to_transform").is_some() {
        return Err(bad("layers_to_transform", "adapters on some layers only are not supported"));
    }
    let alpha = field("lora_alpha").and_then(Value::as_f64).ok_or_else(|| bad("lora_alpha", "missing"))?;
    Ok(AdapterConfig { alpha, rslora: field("use_rslora").and_then(Value::as_bool).unwrap_or(false) })
}

/// `model.layers.{i}.self_attn.q_proj` → (i, q).
fn module_of(name: &str) -> Option<(usize, Target)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (i, path) = rest.split_once('.')?;
    let t = Target::ALL.into_iter().find(|t| t.path() == path)?;
    Some((i.parse().ok()?, t))
}

/// `model` with the PEFT adapter in `dir` applied and folded in (PEFT's `merge_and_unload`): the
/// plain model scoring, generation and serving run. Errors name the file and the tensor or field.
pub fn apply_adapter<B: Backend>(
    model: Llama<B>,
    mcfg: &LlamaConfig,
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<Llama<B>> {
    let cfg = read_config(&dir.join("adapter_config.json"))?;
    let file = dir.join("adapter_model.safetensors");
    if !file.exists() {
        bail!("{}: missing (only safetensors adapters are read)", file.display());
    }
    let files = WeightFiles::from_files(dir, vec![file.clone()])?;
    // name without prefix and adapter name → (full key, A or B or whole)
    let mut pairs: BTreeMap<(usize, Target), [Option<String>; 2]> = BTreeMap::new();
    let mut whole: Vec<(String, String)> = Vec::new();
    for key in files.names() {
        let name = key.strip_prefix(PREFIX).unwrap_or(key).replace(".default.", ".");
        let (module, ab) = match name.strip_suffix(".lora_A.weight") {
            Some(m) => (m, 0),
            None => match name.strip_suffix(".lora_B.weight") {
                Some(m) => (m, 1),
                None => {
                    whole.push((key.to_string(), name.clone()));
                    continue;
                }
            },
        };
        let (i, t) = module_of(module)
            .filter(|(i, _)| *i < mcfg.num_hidden_layers)
            .with_context(|| format!("{}: tensor {key}: not a projection of this model", file.display()))?;
        pairs.entry((i, t)).or_default()[ab] = Some(key.to_string());
    }
    let mut layers: Vec<_> = model.layers.into_iter().map(Some).collect();
    for ((i, t), [a, b]) in &pairs {
        let (Some(a), Some(b)) = (a, b) else {
            bail!("{}: {} of layer {i} has only one of lora_A and lora_B", file.display(), t.hf());
        };
        let [r, d_in] = files.shape(a).unwrap_or_default()[..] else {
            bail!("{}: tensor {a}: expected 2 dimensions", file.display());
        };
        let d_out =
            proj(layers[*i].as_ref().expect("each layer once per target"), *t).base.weight.val().dims()[1];
        let load = |name: &str, shape: [usize; 2]| -> anyhow::Result<Param<Tensor<B, 2>>> {
            let t = Tensor::<B, 2>::from_data(TensorData::new(files.get(name, &shape)?, shape), device);
            Ok(Param::from_tensor(t.transpose()))
        };
        let scale = if cfg.rslora { cfg.alpha / (r as f64).sqrt() } else { cfg.alpha / r as f64 };
        let lora = Lora { a: load(a, [r, d_in])?, b: load(b, [d_out, r])?, scale, dropout: 0.0, salt: 0 };
        let block = layers[*i].take().expect("each layer once per target");
        let mut lora = Some(lora);
        layers[*i] = Some(map_projs(block, |pt, p| match pt == *t {
            true => Proj { base: p.base, lora: lora.take() },
            false => p,
        }));
    }
    let mut model = Llama { layers: layers.into_iter().map(|l| l.expect("every layer")).collect(), ..model };
    for (key, name) in whole {
        replace_whole(&mut model, mcfg, &files, &key, &name, device)
            .with_context(|| format!("{}: tensor {key}", file.display()))?;
    }
    Ok(model.merged())
}

/// A `modules_to_save` tensor in place of the base model's.
fn replace_whole<B: Backend>(
    model: &mut Llama<B>,
    mcfg: &LlamaConfig,
    files: &WeightFiles,
    key: &str,
    name: &str,
    device: &B::Device,
) -> anyhow::Result<()> {
    let d = mcfg.hidden_size;
    let vec1 = |shape: usize| -> anyhow::Result<Param<Tensor<B, 1>>> {
        Ok(Param::from_tensor(Tensor::from_data(TensorData::new(files.get(key, &[shape])?, [shape]), device)))
    };
    if name == "model.embed_tokens.weight" {
        let v = files.get(key, &[mcfg.vocab_size, d])?;
        model.embed_tokens.weight =
            Param::from_tensor(Tensor::from_data(TensorData::new(v, [mcfg.vocab_size, d]), device));
    } else if name == "lm_head.weight" && model.lm_head.is_none() {
        // A tied model's head is its embedding: PEFT saves the same tensor under both names.
        files.get(key, &[mcfg.vocab_size, d])?;
    } else if name == "lm_head.weight" {
        let v = files.get(key, &[mcfg.vocab_size, d])?;
        let w = Tensor::<B, 2>::from_data(TensorData::new(v, [mcfg.vocab_size, d]), device).transpose();
        model.lm_head.as_mut().expect("checked").weight = Param::from_tensor(w);
    } else if name == "model.norm.weight" {
        model.norm.weight = vec1(d)?;
    } else if let Some(rest) = name.strip_prefix("model.layers.") {
        let (i, what) = rest.split_once('.').context("not a tensor of this model")?;
        let block = i.parse::<usize>().ok().and_then(|i| model.layers.get_mut(i)).context("no such layer")?;
        match what {
            "input_layernorm.weight" => block.input_layernorm.weight = vec1(d)?,
            "post_attention_layernorm.weight" => block.post_attention_layernorm.weight = vec1(d)?,
            _ => bail!("not a LoRA tensor or a supported modules_to_save entry"),
        }
    } else {
        bail!("not a LoRA tensor or a supported modules_to_save entry");
    }
    Ok(())
}

/// A Hugging Face model directory with, when `adapter` is given, a PEFT adapter folded in: what
/// `--model base --adapter dir` loads for scoring, generation, serving and eval. The adapter may
/// be a Hub id too.
pub fn load_hf_adapted<B: Backend>(
    dir: &Path,
    adapter: Option<&Path>,
    device: &B::Device,
) -> anyhow::Result<(LlamaConfig, Llama<B>)> {
    let (cfg, model) = super::load::load_hf::<B>(dir, device)?;
    let Some(adapter) = adapter else { return Ok((cfg, model)) };
    let adapter = crate::hub::resolve_path(adapter)?;
    let model = apply_adapter(model, &cfg, &adapter, device)?;
    Ok((cfg, model))
}
