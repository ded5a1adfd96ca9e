//! Hugging Face model directories: `config.json` + `model.safetensors` (or sharded with
//! `model.safetensors.index.json`), f32 / bf16 / f16 weights; and export back to that layout.
//!
//! HF tensor names live in one `load` per module (candle's style): the Rust field names are the HF
//! names, and the only layout change is that Burn's `Linear` keeps `[in, out]` where PyTorch keeps
//! `[out, in]`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::attention::Attention;
use super::config::LlamaConfig;
use super::llama::{Block, Llama, Mlp, RmsNorm};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{dir}: tensor {name} is missing (looked in {files})")]
    Missing { dir: PathBuf, name: String, files: String },
    #[error("{file}: tensor {name} has shape {found:?}, but config.json implies {expected:?}")]
    Shape { file: PathBuf, name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{file}: tensor {name} has dtype {dtype}, expected F32, BF16 or F16")]
    Dtype { file: PathBuf, name: String, dtype: String },
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
}

fn file_err(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::File { path: path.to_path_buf(), message: message.into() }
}

/// The safetensors files of a model directory, memory-mapped.
pub struct WeightFiles {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
}

impl WeightFiles {
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| file_err(&index_path, e.to_string()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| file_err(&index_path, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| file_err(&index_path, "field weight_map: missing"))?;
            let mut files: Vec<String> =
                map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(file_err(
                dir,
                "no model.safetensors or model.safetensors.index.json (only safetensors weights are read)",
            ));
        };
        Self::from_files(dir, names)
    }

    /// The given safetensors files, memory-mapped (`dir` names them in errors).
    pub fn from_files(dir: &Path, names: Vec<PathBuf>) -> Result<Self, LoadError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let f = std::fs::File::open(&path).map_err(|e| file_err(&path, e.to_string()))?;
            // SAFETY: the file is opened read-only and not modified while mapped (a model
            // directory being rewritten during loading is outside what we support).
            let map = unsafe { Mmap::map(&f) }.map_err(|e| file_err(&path, e.to_string()))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| file_err(&path, format!("not a safetensors file: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            drop(st);
            files.push((path, map));
        }
        Ok(Self { dir: dir.to_path_buf(), files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (_, map) = &self.files[*self.index.get(name)?];
        SafeTensors::deserialize(map).ok()?.tensor(name).ok().map(|v| v.shape().to_vec())
    }

    /// Tensor `name` as f32, checked against `expected` shape.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, LoadError> {
        let &i = self.index.get(name).ok_or_else(|| LoadError::Missing {
            dir: self.dir.clone(),
            name: name.to_string(),
            files: self
                .files
                .iter()
                .map(|(p, _)| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let (path, map) = &self.files[i];
        let st = SafeTensors::deserialize(map).map_err(|e| file_err(path, e.to_string()))?;
        let view = st.tensor(name).map_err(|e| file_err(path, e.to_string()))?;
        if view.shape() != expected {
            return Err(LoadError::Shape {
                file: path.to_path_buf(),
                name: name.into(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => {
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Dtype::BF16 => {
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::F16 => {
                bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => {
                return Err(LoadError::Dtype {
                    file: path.to_path_buf(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }
}

struct Loader<'a, B: Backend> {
    files: &'a WeightFiles,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>, LoadError> {
        let data = self.files.get(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    /// PyTorch `nn.Linear` (`weight [out, in]`, `bias [out]`) → Burn `Linear` (`[in, out]`).
    fn linear(&self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>, LoadError> {
        let w = self.tensor(&format!("{name}.weight"), [d_out, d_in])?;
        Ok(Linear {
            weight: Param::from_tensor(w.transpose()),
            bias: if bias {
                Some(Param::from_tensor(self.tensor(&format!("{name}.bias"), [d_out])?))
            } else {
                None
            },
        })
    }

    fn norm(&self, name: &str, d: usize, eps: f64) -> Result<RmsNorm<B>, LoadError> {
        Ok(RmsNorm { weight: Param::from_tensor(self.tensor(&format!("{name}.weight"), [d])?), eps })
    }
}

impl<B: Backend> Llama<B> {
    /// Loads weights named as transformers names them for `cfg`'s architecture.
    pub fn load(cfg: &LlamaConfig, files: &WeightFiles, device: &B::Device) -> Result<Self, LoadError> {
        let ld = Loader::<B> { files, device };
        let (d, hd, eps) = (cfg.hidden_size, cfg.head_dim, cfg.rms_norm_eps);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                input_layernorm: ld.norm(&format!("{p}.input_layernorm"), d, eps)?,
                self_attn: Attention {
                    q_proj: ld.linear(&format!("{p}.self_attn.q_proj"), d, q, cfg.qkv_bias)?.into(),
                    k_proj: ld.linear(&format!("{p}.self_attn.k_proj"), d, kv, cfg.qkv_bias)?.into(),
                    v_proj: ld.linear(&format!("{p}.self_attn.v_proj"), d, kv, cfg.qkv_bias)?.into(),
                    o_proj: ld.linear(&format!("{p}.self_attn.o_proj"), q, d, cfg.o_bias)?.into(),
                    n_heads: cfg.num_attention_heads,
                    n_kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: ld.norm(&format!("{p}.post_attention_layernorm"), d, eps)?,
                mlp: Mlp {
                    gate_proj: ld
                        .linear(&format!("{p}.mlp.gate_proj"), d, cfg.intermediate_size, false)?
                        .into(),
                    up_proj: ld.linear(&format!("{p}.mlp.up_proj"), d, cfg.intermediate_size, false)?.into(),
                    down_proj: ld
                        .linear(&format!("{p}.mlp.down_proj"), cfg.intermediate_size, d, false)?
                        .into(),
                },
            });
        }
        // Some tied checkpoints still carry lm_head.weight; the config decides.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(ld.linear("lm_head", d, cfg.vocab_size, false)?)
        };
        Ok(Self {
            embed_tokens: Embedding {
                weight: Param::from_tensor(ld.tensor("model.embed_tokens.weight", [cfg.vocab_size, d])?),
            },
            layers,
            norm: ld.norm("model.norm", d, eps)?,
            lm_head,
            sliding_window: cfg.sliding_window,
        })
    }

    /// Every weight under its Hugging Face name, in PyTorch layout, as (shape, f32 values); LoRA
    /// adapters are folded into their projections.
    pub fn hf_tensors(&self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut out = BTreeMap::new();
        let mut put = |name: String, t: Tensor<B, 2>| {
            let dims = t.dims().to_vec();
            out.insert(name, (dims, t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data")));
        };
        let linear = |put: &mut dyn FnMut(String, Tensor<B, 2>), name: &str, l: &Linear<B>| {
            put(format!("{name}.weight"), l.weight.val().transpose());
            if let Some(b) = &l.bias {
                put(format!("{name}.bias"), b.val().unsqueeze::<2>());
            }
        };
        put("model.embed_tokens.weight".into(), self.embed_tokens.weight.val());
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), layer.input_layernorm.weight.val().unsqueeze::<2>());
            put(
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.weight.val().unsqueeze::<2>(),
            );
            let a = &layer.self_attn;
            for (n, l) in
                [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)]
            {
                linear(&mut put, &format!("{p}.self_attn.{n}"), &l.clone().merged());
            }
            let m = &layer.mlp;
            for (n, l) in [("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)]
            {
                linear(&mut put, &format!("{p}.mlp.{n}"), &l.clone().merged());
            }
        }
        put("model.norm.weight".into(), self.norm.weight.val().unsqueeze::<2>());
        if let Some(h) = &self.lm_head {
            linear(&mut put, "lm_head", h);
        }
        // 1-D tensors went through unsqueeze for the shared closure: restore their shape.
        for (name, (shape, _)) in out.iter_mut() {
            if name.ends_with("norm.weight") || name.ends_with(".bias") {
                *shape = vec![shape[1]];
            }
        }
        out
    }
}

/// Loads `dir/config.json` and the weights.
pub fn load_hf<B: Backend>(dir: &Path, device: &B::Device) -> Result<(LlamaConfig, Llama<B>), LoadError> {
    if !dir.is_dir() {
        return Err(file_err(dir, "not a directory"));
    }
    let cfg = LlamaConfig::from_hf_file(&dir.join("config.json"))?;
    let files = WeightFiles::open(dir)?;
    let model = Llama::load(&cfg, &files, device)?;
    Ok((cfg, model))
}

/// Writes an HF directory transformers loads unchanged: `config.json`, `model.safetensors` (f32),
/// and the tokenizer files given (copied by name). Each file is written atomically.
pub fn save_hf<B: Backend>(
    model: &Llama<B>,
    cfg: &LlamaConfig,
    dir: &Path,
    tokenizer_files: &[(&str, Vec<u8>)],
) -> anyhow::Result<()> {
    cfg.check_hf().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    let st = safetensors_f32(model.hf_tensors())?;
    crate::util::write_atomic(&dir.join("model.safetensors"), &st)?;
    crate::util::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_json())?.as_bytes(),
    )?;
    for (name, content) in tokenizer_files {
        crate::util::write_atomic(&dir.join(name), content)?;
    }
    Ok(())
}

/// A safetensors file of f32 tensors (name → shape, values), as PyTorch writes them.
pub fn safetensors_f32(tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> anyhow::Result<Vec<u8>> {
    let bytes: BTreeMap<String, (Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (shape, data))| (n, (shape, data.iter().flat_map(|x| x.to_le_bytes()).collect())))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, (shape, b))| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)?))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(safetensors::serialize(views, Some(meta))?)
}
