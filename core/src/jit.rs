//! The JIT backends (wgpu, CUDA) compile each kernel on first use and autotune some of them; a
//! run that keeps compiling never reaches its speed (the first H200 run compiled for every new
//! shape and finished no step in 100 s). This module makes that visible and cheaper:
//!
//! - **Counting.** Every kernel compilation and every autotune run CubeCL reports is counted
//!   ([`counts`]); the trainer reports them per step (`compiles`, `autotunes` in `events.jsonl`,
//!   and in `bench train`). The counts ride on CubeCL's own compilation and autotune logs, routed
//!   to the `log` crate and counted by a logger that keeps nothing else.
//! - **Caches that persist.** Autotune results (and, on CUDA, compiled PTX) go to one directory,
//!   so a second run does not tune or compile again: `$LONGALIGN_KERNEL_CACHE`, else
//!   `$XDG_CACHE_HOME/longalign/cubecl`, else `~/.cache/longalign/cubecl`. (CubeCL's own default
//!   is the `target/` of whatever Cargo project the working directory is in.)
//!
//! - **TF32.** On CUDA GPUs with tensor cores that have TF32 (Ampere and newer), CubeK runs an f32
//!   matmul in TF32 (10-bit mantissas, ~1e-3 relative error) whenever autotune picks an accelerated
//!   kernel. [`set_tf32`] says whether it may: off by default (exact f32, PyTorch's default and
//!   what the CPU and wgpu compute), `--tf32` on the command line. Process-wide, fixed by the first
//!   GPU matmul that autotunes; bf16 and f16 matmuls use tensor cores either way.
//!
//! [`init`] must run before any JIT device is used (CubeCL's configuration is fixed at first
//! read); `core-cli` calls it first thing. `LONGALIGN_JIT_TRACE=1` also stamps each compilation
//! and autotune result on stderr (seconds since the first). `LONGALIGN_COUNT_COMPILES=0` turns
//! counting off (with it on, wgpu creates its instance with debug flags, as CubeCL does whenever
//! compilation logging is on; with the Khronos validation layer installed that means validation
//! too).

use std::sync::atomic::{AtomicU64, Ordering};

static COMPILES: AtomicU64 = AtomicU64::new(0);
static AUTOTUNES: AtomicU64 = AtomicU64::new(0);

/// Kernel compilations and autotune runs so far in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JitCounts {
    pub compiles: u64,
    pub autotunes: u64,
}

impl JitCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: JitCounts) -> JitCounts {
        JitCounts {
            compiles: self.compiles.saturating_sub(earlier.compiles),
            autotunes: self.autotunes.saturating_sub(earlier.autotunes),
        }
    }
}

/// The counts so far (zero on backends that compile nothing: the CPU).
pub fn counts() -> JitCounts {
    JitCounts { compiles: COMPILES.load(Ordering::Relaxed), autotunes: AUTOTUNES.load(Ordering::Relaxed) }
}

/// Allows (`true`) or forbids (`false`, the default) TF32 tensor-core matmuls for f32 products on
/// GPUs that have TF32 (module docs). Errors if this process's first GPU matmul has already fixed
/// the other mode.
#[cfg(feature = "native")]
pub fn set_tf32(allow: bool) -> anyhow::Result<()> {
    burn_cubecl_fusion::tf32::set_allow_tf32(allow).map_err(|in_force| {
        let mode = |a: bool| if a { "allowed" } else { "off" };
        anyhow::anyhow!(
            "TF32 cannot be {} now: this process's first GPU matmul ran with TF32 {}; set it before \
             any GPU work",
            mode(allow),
            mode(in_force)
        )
    })
}

/// Whether f32 matmuls may run as TF32 (what [`set_tf32`] last set; `false` by default).
#[cfg(feature = "native")]
pub fn tf32() -> bool {
    burn_cubecl_fusion::tf32::requested()
}

/// Where autotune results and compiled kernels persist.
#[cfg(feature = "native")]
pub fn cache_dir() -> std::path::PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    env("LONGALIGN_KERNEL_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("longalign/cubecl")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/longalign/cubecl")))
        .unwrap_or_else(|| std::path::PathBuf::from(".longalign-cubecl"))
}

/// The `log` target CubeCL's loggers write through.
#[cfg(feature = "native")]
const TARGET: &str = "cubecl_common::config::logger";

#[cfg(feature = "native")]
struct Counter;

/// The first bytes of a message, without formatting the rest (a compilation message carries the
/// kernel's whole source).
#[cfg(feature = "native")]
struct Head(String);

#[cfg(feature = "native")]
impl std::fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = 16usize.saturating_sub(self.0.len());
        self.0.extend(s.chars().take(room));
        if self.0.len() >= 16 { Err(std::fmt::Error) } else { Ok(()) }
    }
}

#[cfg(feature = "native")]
impl log::Log for Counter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == TARGET
    }

    fn log(&self, r: &log::Record) {
        if r.target() != TARGET {
            return;
        }
        let mut head = Head(String::new());
        let _ = std::fmt::write(&mut head, *r.args());
        // Autotune's summary line; everything else on this target is a compilation.
        let (what, n) = if head.0.starts_with("Fastest result") {
            ("autotune", AUTOTUNES.fetch_add(1, Ordering::Relaxed) + 1)
        } else {
            ("compile", COMPILES.fetch_add(1, Ordering::Relaxed) + 1)
        };
        // Time stamps to tell how long each compilation takes (NVRTC on an H200 stalled whole
        // commands inside autotune: docs/measurements.md).
        if let Some(t0) = trace_start() {
            eprintln!("[jit {:9.3} s] {what} #{n}", t0.elapsed().as_secs_f64());
        }
    }

    fn flush(&self) {}
}

/// With `LONGALIGN_JIT_TRACE=1`: when tracing started (the first compile), to stamp each
/// compilation and autotune result on stderr.
#[cfg(feature = "native")]
fn trace_start() -> Option<std::time::Instant> {
    static START: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        (std::env::var("LONGALIGN_JIT_TRACE").as_deref() == Ok("1")).then(std::time::Instant::now)
    })
}

/// Keeps Mesa's Vulkan device-select layer out on a headless machine (no `XDG_RUNTIME_DIR`, no
/// `WAYLAND_DISPLAY`): it exists to pick the GPU driving the display, and its probe of the Wayland
/// display printed `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` on every wgpu
/// command (found with a breakpoint on `wl_display_connect`: `libVkLayer_MESA_device_select.so`
/// inside `vkEnumeratePhysicalDevices`). Sets `NODEVICE_SELECT=1` unless the user set it.
///
/// # Safety
/// Changes the process environment: call before any other thread exists (first thing in `main`).
#[cfg(feature = "native")]
pub unsafe fn quiet_headless_vulkan() {
    let unset = |k: &str| std::env::var_os(k).is_none_or(|v| v.is_empty());
    if unset("XDG_RUNTIME_DIR") && unset("WAYLAND_DISPLAY") && unset("NODEVICE_SELECT") {
        // SAFETY: the caller guarantees no other thread reads the environment concurrently.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// Sets CubeCL up as the module docs say; later calls do nothing. Returns the cache directory.
/// Does nothing (but return it) if something read CubeCL's configuration already, or when a
/// `cubecl.toml` in the working directory configures it.
#[cfg(feature = "native")]
pub fn init() -> std::path::PathBuf {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::compilation::CompilationLogLevel;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = cache_dir();
    ONCE.call_once(|| {
        if CubeClRuntimeConfig::storage().lock().is_some() || std::path::Path::new("cubecl.toml").exists() {
            return;
        }
        let mut c = CubeClRuntimeConfig::default();
        c.autotune.cache = CacheConfig::File(dir.clone());
        c.compilation.cache = Some(CacheConfig::File(dir.clone()));
        if std::env::var("LONGALIGN_COUNT_COMPILES").as_deref() != Ok("0")
            && log::set_logger(&Counter).is_ok()
        {
            log::set_max_level(log::LevelFilter::Info);
            c.compilation.logger.level = CompilationLogLevel::Basic;
            c.compilation.logger.log = Some(cubecl_common::config::logger::LogCrateLevel::Info);
            c.autotune.logger.log = Some(cubecl_common::config::logger::LogCrateLevel::Info);
        }
        CubeClRuntimeConfig::set(c);
    });
    dir
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use log::Log as _;

    fn record(target: &str, msg: std::fmt::Arguments<'_>, f: impl FnOnce(&log::Record)) {
        f(&log::Record::builder().target(target).args(msg).level(log::Level::Info).build());
    }

    /// CubeCL's autotune summaries count as autotune runs, its other messages on the logger's
    /// target as compilations (however long: a kernel's source), other targets not at all.
    #[test]
    fn counts_compilations_and_autotune_runs_from_cubecls_logs() {
        let before = counts();
        let source = "x".repeat(10_000);
        record(TARGET, format_args!("Fastest result matmul-key. \n Top 3 times: [..]"), |r| Counter.log(r));
        record(TARGET, format_args!("[Compiling kernel] {source}"), |r| Counter.log(r));
        record(TARGET, format_args!("{}", "short"), |r| Counter.log(r));
        record("cubecl_wgpu::runtime", format_args!("Fastest result elsewhere"), |r| Counter.log(r));
        let got = counts().since(before);
        // Other tests of this binary may compile nothing (the CPU backend has no JIT).
        assert_eq!(got, JitCounts { compiles: 2, autotunes: 1 });
        assert!(!Counter.enabled(&log::Metadata::builder().target("wgpu_core").build()));
    }

    /// The switch can change until the first GPU matmul reads it (CubeK's autotune, simulated here
    /// by the read it makes); then only the mode in force may be set again, and the error says
    /// which. Ends in the default mode, which other tests of this binary set.
    #[test]
    fn tf32_can_be_set_until_the_first_gpu_matmul_reads_it() {
        set_tf32(true).unwrap();
        set_tf32(false).unwrap();
        assert!(!burn_cubecl_fusion::tf32::allow_tf32(), "the first read fixes the default: off");
        assert!(!tf32());
        set_tf32(false).unwrap();
        let err = set_tf32(true).unwrap_err().to_string();
        assert!(err.contains("cannot be allowed now") && err.contains("with TF32 off"), "{err}");
        assert!(!tf32(), "a refused change changes nothing");
    }

    #[test]
    fn the_cache_directory_follows_the_environment_conventions() {
        let dir = cache_dir();
        assert!(dir.ends_with("cubecl") || std::env::var_os("LONGALIGN_KERNEL_CACHE").is_some(), "{dir:?}");
    }
}
