//! The compute backends, named in one place: what `--backend` parses to, what `config.toml` stores,
//! and the one dispatch ([`with_backend!`]) from that name to Burn's backend types.
//!
//! | name     | Burn backend            | where                                               |
//! |----------|-------------------------|-----------------------------------------------------|
//! | `cpu`    | Flex (rayon + SIMD)     | everywhere; the browser build's CPU trainer         |
//! | `wgpu`   | Wgpu (CubeCL, fusion)   | Vulkan / Metal / DX12; Mesa's lavapipe in CI        |
//! | `cuda`   | Cuda (CubeCL, NVRTC)    | builds with `--features cuda`                       |
//! | `webgpu` | Wgpu on the browser     | the browser build's GPU trainer only (not a flag)   |

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Cpu,
    Wgpu,
    Cuda,
    Webgpu,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
            Self::Webgpu => "webgpu",
        }
    }

    /// Whether kernels are compiled per tensor shape at run time (wgpu, CUDA): such backends want
    /// few distinct shapes, so sequences are padded to buckets inside attention by default.
    pub fn compiles_per_shape(self) -> bool {
        self != Self::Cpu
    }

    /// The bucket lengths are padded to by default where they must repeat (training's
    /// `seq_bucket`, `score`, the KV cache of generation): 64 where kernels compile per shape,
    /// `None` (exact lengths) on the CPU.
    pub fn default_seq_bucket(self) -> Option<usize> {
        self.compiles_per_shape().then_some(64)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    /// The command line's names; `webgpu` belongs to the browser build and is not one of them.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("unknown backend {s:?} (expected cpu, wgpu or cuda)")),
        }
    }
}

/// Runs `body` with `$b` bound to the autodiff backend type named by `backend` (a [`Backend`]) and
/// `$device` to its default device; the optional second argument is Burn's checkpointing strategy.
/// Errors (`anyhow`) for a backend this build lacks.
#[cfg(feature = "native")]
#[macro_export]
macro_rules! with_backend {
    ($backend:expr, |$b:ident, $device:ident| $body:expr) => {{
        $crate::with_backend!(
            $backend,
            burn::backend::autodiff::checkpoint::strategy::NoCheckpointing,
            |$b, $device| $body
        )
    }};
    ($backend:expr, $ck:ty, |$b:ident, $device:ident| $body:expr) => {{
        match $backend {
            $crate::backend::Backend::Cpu => {
                type $b = burn::backend::Autodiff<burn::backend::Flex, $ck>;
                let $device = burn::tensor::Device::<$b>::default();
                $body
            }
            $crate::backend::Backend::Wgpu => {
                type $b = burn::backend::Autodiff<burn::backend::Wgpu, $ck>;
                let $device = burn::tensor::Device::<$b>::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::Backend::Cuda => {
                type $b = burn::backend::Autodiff<burn::backend::Cuda, $ck>;
                let $device = $crate::backend::cuda_device()?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::backend::Backend::Cuda => anyhow::bail!(
                "this core-cli was built without CUDA: rebuild with `cargo build --release --features cuda`"
            ),
            $crate::backend::Backend::Webgpu => {
                anyhow::bail!("the webgpu backend is the browser build's: natively use --backend wgpu")
            }
        }
    }};
}

/// The first CUDA device, or a clear error where there is none (instead of a panic deep inside).
#[cfg(feature = "cuda")]
pub fn cuda_device() -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    let device = burn::backend::cuda::CudaDevice::new(0);
    let probe = std::panic::catch_unwind(|| {
        let t = burn::tensor::Tensor::<burn::backend::Cuda, 1>::ones([1], &device);
        t.into_data()
    });
    match probe {
        Ok(_) => Ok(device),
        Err(_) => anyhow::bail!(
            "no usable CUDA device: the NVIDIA driver or NVRTC could not be loaded, or no GPU is present"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn names_round_trip_and_config_files_keep_the_lowercase_name() {
        for b in [Backend::Cpu, Backend::Wgpu, Backend::Cuda] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        assert!("webgpu".parse::<Backend>().is_err(), "not a command-line backend");
        assert_eq!(
            "tpu".parse::<Backend>().unwrap_err(),
            "unknown backend \"tpu\" (expected cpu, wgpu or cuda)"
        );
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct C {
            backend: Backend,
        }
        let text = toml::to_string(&C { backend: Backend::Webgpu }).unwrap();
        assert_eq!(text.trim(), "backend = \"webgpu\"");
        assert_eq!(toml::from_str::<C>("backend = \"wgpu\"").unwrap(), C { backend: Backend::Wgpu });
    }
}
