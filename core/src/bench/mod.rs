//! End-to-end benchmarks (`core-cli bench …`), each a config in and typed results out; the command
//! line only prints them. Kernel micro-benchmarks live with their kernels (`kernels/benches`).
//!
//! - [`train`]: naive vs sorted vs packed batching on the same data and model, one process each.
//! - [`loss`]: the fused weighted cross entropy vs the plain chunked one.
//! - [`memory`]: peak memory and time of one training step per sequence length.
//! - [`build_data`]: `build-data`'s own overhead against an endpoint that answers at once.

pub mod build_data;
pub mod loss;
pub mod memory;
pub mod train;

/// A scratch folder for one benchmark run of this process.
fn scratch_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("longalign-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
