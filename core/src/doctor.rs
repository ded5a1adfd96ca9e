//! `core-cli doctor`: what a user runs first on a new machine or cluster node — which backends this
//! build has, the CPU and its vector units, memory, the wgpu adapters (name, driver, f16), the CUDA
//! driver, NVRTC and GPUs as the system shows them (and the stub `libcuda.so` on
//! `LD_LIBRARY_PATH` that broke an earlier GPU run), and a short training smoke run per backend
//! with its throughput.

use std::path::PathBuf;

use serde::Serialize;

use crate::backend::Backend;

#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    pub model: String,
    pub threads: usize,
    /// Vector units the kernels use when present (`avx2`, `fma`, `avx512f`).
    pub features: Vec<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WgpuAdapter {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub shader_f16: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CudaInfo {
    /// Built with `--features cuda`.
    pub built_in: bool,
    /// The NVIDIA kernel driver's version line (`/proc/driver/nvidia/version`).
    pub driver: Option<String>,
    /// GPUs as `nvidia-smi` lists them: name, memory, driver.
    pub gpus: Vec<String>,
    /// `libcuda.so*` and `libnvrtc.so*` found on `LD_LIBRARY_PATH` and the usual places.
    pub libraries: Vec<PathBuf>,
    /// Whether f32 matmuls may run as TF32 on GPUs that have it (`--tf32`; default off: exact f32).
    pub tf32: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Smoke {
    pub backend: Backend,
    pub ok: bool,
    pub steps: usize,
    pub wall_s: f64,
    /// Useful tokens/s over the steps after the first (which compiles on JIT backends).
    pub useful_tok_per_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub version: String,
    /// Backends compiled into this binary.
    pub backends: Vec<String>,
    pub cpu: CpuInfo,
    pub wgpu: Vec<WgpuAdapter>,
    /// Why no adapter list could be had, if so.
    pub wgpu_error: Option<String>,
    pub cuda: CudaInfo,
    pub warnings: Vec<String>,
    pub smoke: Vec<Smoke>,
}

/// What to check beyond the inventory.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// Backends to run a smoke training run on (each: the tiny preset, a few steps).
    pub smoke: Vec<Backend>,
    pub smoke_steps: usize,
}

fn cpu() -> CpuInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[allow(unused_mut)]
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            features.push("avx2".to_string());
        }
        if std::arch::is_x86_feature_detected!("fma") {
            features.push("fma".to_string());
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            features.push("avx512f".to_string());
        }
    }
    CpuInfo {
        model,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        features,
        memory_total_bytes: crate::util::mem::total_bytes(),
        memory_available_bytes: crate::util::mem::available_bytes(),
    }
}

fn wgpu_adapters() -> Result<Vec<WgpuAdapter>, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    let adapters = rt.block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    Ok(adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            WgpuAdapter {
                name: i.name,
                backend: format!("{:?}", i.backend).to_lowercase(),
                device_type: format!("{:?}", i.device_type),
                driver: i.driver,
                driver_info: i.driver_info,
                shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
            }
        })
        .collect())
}

/// Directories the dynamic loader searches that matter here: `LD_LIBRARY_PATH` first.
fn library_dirs() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let ld: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let usual = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
    ];
    (ld, usual.iter().map(PathBuf::from).collect())
}

fn cuda_libraries(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else { continue };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libcuda.so") || n.starts_with("libnvrtc.so"))
            })
            .collect();
        names.sort();
        found.extend(names);
    }
    found.dedup();
    found
}

/// Warnings about the CUDA set-up: a stub `libcuda.so` on the loader path (the driver API then
/// fails with `CUDA_ERROR_STUB_LIBRARY`), NVRTC missing on a machine with a driver.
pub fn cuda_warnings(ld_path: &[PathBuf], libraries: &[PathBuf], driver: bool) -> Vec<String> {
    let mut w = Vec::new();
    for d in ld_path {
        let stub = d.components().any(|c| c.as_os_str() == "stubs") && d.join("libcuda.so").exists();
        if stub {
            w.push(format!(
                "LD_LIBRARY_PATH contains {}, the CUDA stub libcuda.so: CUDA calls will fail with \
                 CUDA_ERROR_STUB_LIBRARY; remove that directory from LD_LIBRARY_PATH",
                d.display()
            ));
        }
    }
    let nvrtc = libraries
        .iter()
        .any(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc")));
    if driver && !nvrtc {
        w.push("an NVIDIA driver is loaded but no libnvrtc.so was found: --backend cuda compiles kernels with NVRTC at run time; install the CUDA runtime (cuda-nvrtc) or add its lib directory to LD_LIBRARY_PATH".into());
    }
    w
}

fn cuda() -> (CudaInfo, Vec<String>) {
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()));
    let gpus = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let (ld, usual) = library_dirs();
    let all: Vec<PathBuf> = ld.iter().chain(&usual).cloned().collect();
    let libraries = cuda_libraries(&all);
    let warnings = cuda_warnings(&ld, &libraries, driver.is_some());
    (
        CudaInfo { built_in: cfg!(feature = "cuda"), driver, gpus, libraries, tf32: crate::jit::tf32() },
        warnings,
    )
}

/// The tiny preset for `steps` steps on `backend`, in a temporary folder.
fn smoke(backend: Backend, steps: usize) -> Smoke {
    let dir = std::env::temp_dir().join(format!("longalign-doctor-{}-{backend}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || -> anyhow::Result<(f64, Option<f64>)> {
        let out = dir.join("run");
        let mut cfg = crate::train::TrainConfig::embedded_default();
        cfg.backend = backend;
        cfg.max_steps = Some(steps);
        cfg.seq_bucket = backend.default_seq_bucket();
        cfg.tf32 = crate::jit::tf32();
        let topology = crate::train::launch::Topology {
            devices: Some(vec![0]),
            nodes: 1,
            node_rank: 0,
            master: None,
            node_addr: None,
            timeout: std::time::Duration::from_secs(60),
        };
        let summary = crate::train::launch::train_launched(&cfg, &out, false, &topology, true)?;
        let events = crate::train::events::read_events(&out.join("events.jsonl"))?;
        let warm: Vec<_> = events.iter().skip(1).collect();
        let secs: f64 = warm.iter().map(|e| e.step_s).sum();
        let tokens: u64 = warm.iter().map(|e| e.useful_tokens).sum();
        Ok((summary.wall_s, (secs > 0.0).then(|| tokens as f64 / secs)))
    };
    let result = run();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((wall_s, tps)) => Smoke { backend, ok: true, steps, wall_s, useful_tok_per_s: tps, error: None },
        Err(e) => Smoke {
            backend,
            ok: false,
            steps,
            wall_s: 0.0,
            useful_tok_per_s: None,
            error: Some(format!("{e:#}")),
        },
    }
}

pub fn run(cfg: &DoctorConfig) -> DoctorReport {
    let mut backends = vec!["cpu".to_string(), "wgpu".to_string()];
    if cfg!(feature = "cuda") {
        backends.push("cuda".into());
    }
    let (cuda, warnings) = cuda();
    let (wgpu, wgpu_error) = match wgpu_adapters() {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    DoctorReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backends,
        cpu: cpu(),
        wgpu,
        wgpu_error,
        cuda,
        warnings,
        smoke: cfg.smoke.iter().map(|&b| smoke(b, cfg.smoke_steps)).collect(),
    }
}

fn gb(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.1} GB", b as f64 / 1e9))
}

impl DoctorReport {
    /// The text `core-cli doctor` prints.
    pub fn render(&self) -> String {
        let mut s =
            format!("longalign-rs {}; backends built in: {}\n", self.version, self.backends.join(", "));
        let c = &self.cpu;
        s += &format!(
            "cpu: {} ({} threads; {}); memory {} total, {} available\n",
            c.model,
            c.threads,
            if c.features.is_empty() { "no AVX2".to_string() } else { c.features.join(" ") },
            gb(c.memory_total_bytes),
            gb(c.memory_available_bytes)
        );
        match (&self.wgpu_error, &self.wgpu) {
            (Some(e), _) => s += &format!("wgpu: {e}\n"),
            (None, a) if a.is_empty() => s += "wgpu: no adapter\n",
            (None, a) => {
                for a in a {
                    s += &format!(
                        "wgpu: {} ({}, {}; driver {} {}; f16 {})\n",
                        a.name,
                        a.backend,
                        a.device_type,
                        a.driver,
                        a.driver_info,
                        if a.shader_f16 { "yes" } else { "no" }
                    );
                }
            }
        }
        let cu = &self.cuda;
        s += &format!(
            "cuda: {}; driver {}; GPUs: {}; f32 matmuls: {}\n",
            if cu.built_in { "built in" } else { "not built in (cargo build --release --features cuda)" },
            cu.driver.as_deref().unwrap_or("none"),
            if cu.gpus.is_empty() { "none".to_string() } else { cu.gpus.join("; ") },
            if cu.tf32 { "TF32 allowed (--tf32)" } else { "exact f32 (TF32 off; --tf32 allows it)" }
        );
        for l in &cu.libraries {
            s += &format!("  {}\n", l.display());
        }
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        for m in &self.smoke {
            match (&m.error, m.useful_tok_per_s) {
                (Some(e), _) => s += &format!("smoke {}: FAILED: {e}\n", m.backend),
                (None, t) => {
                    s += &format!(
                        "smoke {}: {} steps of the tiny preset in {:.1} s; {} useful tok/s after the first step\n",
                        m.backend,
                        m.steps,
                        m.wall_s,
                        t.map_or("?".into(), |t| format!("{t:.0}"))
                    )
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_library_on_the_loader_path_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let stubs = d.path().join("cuda/lib64/stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        std::fs::write(stubs.join("libcuda.so"), b"").unwrap();
        let real = d.path().join("cuda/lib64");
        std::fs::write(real.join("libnvrtc.so.12"), b"").unwrap();
        let libs = cuda_libraries(&[stubs.clone(), real.clone()]);
        assert_eq!(libs, vec![stubs.join("libcuda.so"), real.join("libnvrtc.so.12")]);
        let w = cuda_warnings(std::slice::from_ref(&stubs), &libs, true);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CUDA_ERROR_STUB_LIBRARY") && w[0].contains("stubs"));
        assert!(cuda_warnings(std::slice::from_ref(&real), &libs, true).is_empty());
        let w = cuda_warnings(&[], &[], true);
        assert!(w[0].contains("libnvrtc"), "{w:?}");
        assert!(cuda_warnings(&[], &[], false).is_empty());
    }
}
