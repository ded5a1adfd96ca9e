//! The varlen attention kernel against the dense block-diagonal mask, llm.c's way: reference →
//! kernel → validate → benchmark, in one place.
//!
//! For each row length: one packed row of `--seq-len`-token sequences; first the kernel is checked
//! against the dense reference on the same backend (output and the q, k, v gradients, at the row
//! length or at `--validate-max` tokens where the dense scores would not fit); only then are the
//! forward and forward + backward of both timed (mean of `--reps` after an untimed warm-up that
//! compiles and autotunes), and the device memory pool read (wgpu, CUDA).
//!
//! ```text
//! cargo bench -p longalign-kernels --bench attention -- --backend cpu --rows 2048,8192 --heads 2
//! cargo bench -p longalign-kernels --bench attention --features cuda -- --backend cuda --rows 65536
//! ```

use anyhow::{Context, bail};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use clap::Parser;
use longalign_kernels::{VarlenLayout, pool_bytes, reference_attention, try_varlen_attention};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "varlen attention kernel vs dense mask: validate, then time")]
struct Args {
    /// cpu (the host kernel), wgpu or cuda (the CubeCL kernel).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Row lengths (tokens per packed row), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2048,8192")]
    rows: Vec<usize>,
    /// Length of each packed sequence (the row holds row/seq-len of them; the last may be shorter).
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    #[arg(long, default_value_t = 8)]
    kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Timed repetitions (after one untimed warm-up that compiles the kernels).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip the dense path where its scores (heads × row² × 4 bytes, kept for the backward) would
    /// exceed this many bytes (default 256 MiB, wgpu's default largest buffer).
    #[arg(long, default_value_t = 256 << 20)]
    dense_max_bytes: u64,
    /// Validate on a row of at most this many tokens (the dense reference's memory is quadratic).
    #[arg(long, default_value_t = 2048)]
    validate_max: usize,
    /// Largest relative error (max |kernel − reference| / max |reference|) the check accepts.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
    /// One JSON array on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One path at one row length.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    row_len: usize,
    /// `varlen` or `dense`.
    path: &'static str,
    sequences: usize,
    /// Why the path was not timed (the dense scores would not fit).
    skipped: Option<String>,
    fwd_ms: Option<f64>,
    fwd_bwd_ms: Option<f64>,
    /// Query–key pairs computed per head: Σ nᵢ(nᵢ+1)/2 for the kernel, row² for the mask.
    score_pairs_per_head: u64,
    pool_bytes_after: Option<u64>,
}

/// The kernel against the reference before timing: relative error of out, dq, dk, dv.
#[derive(Debug, Clone, Serialize)]
struct Validation {
    row_len: usize,
    errors: [f32; 4],
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    backend: String,
    validation: Vec<Validation>,
    timings: Vec<Timing>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.seq_len == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) || a.reps == 0 {
        bail!("--seq-len and --reps must be positive and --heads a multiple of --kv-heads");
    }
    let r = match a.backend.as_str() {
        "cpu" => bench::<Autodiff<Flex>>(&a, &Default::default())?,
        "wgpu" => bench::<Autodiff<Wgpu>>(&a, &Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => bench::<Autodiff<burn::backend::Cuda>>(&a, &Default::default())?,
        other => bail!("unknown backend {other:?} (cpu, wgpu, or cuda with --features cuda)"),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", render(&a, &r));
    }
    Ok(())
}

/// A row of `len` tokens cut into `seq_len`-token sequences.
fn layout(len: usize, seq_len: usize) -> VarlenLayout {
    let mut cu = vec![0u32];
    while (*cu.last().unwrap() as usize) < len {
        cu.push((*cu.last().unwrap() as usize + seq_len).min(len) as u32);
    }
    VarlenLayout::from_cu_seqlens(len, &[cu], None)
}

fn inputs<B: AutodiffBackend>(a: &Args, len: usize, device: &B::Device) -> [Tensor<B, 4>; 3] {
    let rand =
        |h: usize| Tensor::<B, 4>::random([1, h, len, a.head_dim], Distribution::Normal(0.0, 1.0), device);
    [rand(a.heads), rand(a.kv_heads), rand(a.kv_heads)]
}

/// How far one pass goes.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// Forward only (timed).
    Forward,
    /// Forward and the backward of the output's sum (timed).
    Backward,
    /// Forward and the backward of a fixed weighting of the output, whose gradients come back
    /// (validated: a weighting makes the gradients differ from row to row).
    Gradients,
}

/// One pass of one path; the output and the q, k, v gradients for [`Pass::Gradients`]. Timed
/// passes wait for the device before they return.
fn run<B: AutodiffBackend>(
    path: &str,
    [q, k, v]: [Tensor<B, 4>; 3],
    layout: &VarlenLayout,
    pass: Pass,
) -> anyhow::Result<Option<[Tensor<B::InnerBackend, 4>; 4]>> {
    let grad = pass != Pass::Forward;
    let (q, k, v) = if grad { (q.require_grad(), k.require_grad(), v.require_grad()) } else { (q, k, v) };
    let o = match path {
        "varlen" => match try_varlen_attention(q.clone(), k.clone(), v.clone(), layout) {
            Ok(o) => o?,
            Err(_) => bail!("no varlen kernel on this backend"),
        },
        _ => reference_attention(q.clone(), k.clone(), v.clone(), layout)?,
    };
    let device = o.device();
    let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    match pass {
        Pass::Forward => sync().map(|_| None),
        Pass::Backward => {
            let _ = o.sum().backward();
            sync().map(|_| None)
        }
        Pass::Gradients => {
            let w = Tensor::<B, 4>::ones(o.shape(), &device).cumsum(2) / (layout.row_len as f32);
            let grads = (o.clone() * w).sum().backward();
            let g = |t: &Tensor<B, 4>| t.grad(&grads).context("no gradient");
            Ok(Some([o.inner(), g(&q)?, g(&k)?, g(&v)?]))
        }
    }
}

/// max |a − b| / max(1e-6, max |b|).
fn rel_err<B: burn::tensor::backend::Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar();
    let scale: f32 = burn::tensor::ElementConversion::elem::<f32>(scale).max(1e-6);
    burn::tensor::ElementConversion::elem::<f32>((a - b).abs().max().into_scalar()) / scale
}

fn bench<B: AutodiffBackend>(a: &Args, device: &B::Device) -> anyhow::Result<Report> {
    if !longalign_kernels::supported::<B>() {
        bail!("backend {} has no varlen kernel", a.backend);
    }
    let mut report = Report { backend: a.backend.clone(), validation: Vec::new(), timings: Vec::new() };
    for &l in &a.rows {
        // 1. Validate: the kernel equals the reference here, or nothing is timed.
        let vl = l.min(a.validate_max.max(1));
        if !report.validation.iter().any(|v| v.row_len == vl) {
            let lay = layout(vl, a.seq_len);
            let x = inputs::<B>(a, vl, device);
            let got = run("varlen", x.clone(), &lay, Pass::Gradients)?.expect("gradients");
            let want = run("dense", x, &lay, Pass::Gradients)?.expect("gradients");
            let errors = [0, 1, 2, 3].map(|i| rel_err(got[i].clone(), want[i].clone()));
            for (name, e) in ["out", "dq", "dk", "dv"].iter().zip(errors) {
                if e.is_nan() || e > a.tolerance {
                    bail!(
                        "{name} at {vl} tokens: relative error {e:e} > {:e}: the kernel is wrong here",
                        a.tolerance
                    );
                }
            }
            report.validation.push(Validation { row_len: vl, errors });
        }
        // 2. Time.
        let lay = layout(l, a.seq_len);
        let x = inputs::<B>(a, l, device);
        for path in ["varlen", "dense"] {
            let pairs = if path == "varlen" { lay.pairs() } else { (l * l) as u64 };
            let mut t = Timing {
                row_len: l,
                path,
                sequences: lay.segments[0].len(),
                skipped: None,
                fwd_ms: None,
                fwd_bwd_ms: None,
                score_pairs_per_head: pairs,
                pool_bytes_after: None,
            };
            let scores = (a.heads * l * l * 4) as u64;
            if path == "dense" && scores > a.dense_max_bytes {
                t.skipped = Some(format!("scores need {scores} B > --dense-max-bytes"));
                report.timings.push(t);
                continue;
            }
            run(path, x.clone(), &lay, Pass::Backward)?; // compile and autotune, untimed
            let _ = pool_bytes(device, true);
            let time = |pass: Pass| -> anyhow::Result<f64> {
                let t0 = std::time::Instant::now();
                for _ in 0..a.reps {
                    run(path, x.clone(), &lay, pass)?;
                }
                Ok(t0.elapsed().as_secs_f64() * 1e3 / a.reps as f64)
            };
            t.fwd_ms = Some(time(Pass::Forward)?);
            t.fwd_bwd_ms = Some(time(Pass::Backward)?);
            t.pool_bytes_after = pool_bytes(device, false);
            report.timings.push(t);
        }
    }
    Ok(report)
}

fn render(a: &Args, r: &Report) -> String {
    let mut s = format!(
        "attention over one packed row of {}-token sequences, {} heads ({} kv), head dim {}, backend {}; \
         mean of {} runs after a warm-up\n",
        a.seq_len, a.heads, a.kv_heads, a.head_dim, r.backend, a.reps
    );
    for v in &r.validation {
        s.push_str(&format!(
            "validated at {} tokens: relative error out {:.1e}, dq {:.1e}, dk {:.1e}, dv {:.1e} (≤ {:.0e})\n",
            v.row_len, v.errors[0], v.errors[1], v.errors[2], v.errors[3], a.tolerance
        ));
    }
    s.push_str(&format!(
        "\n{:>7}  {:<7} {:>10} {:>12} {:>10} {:>14}\n",
        "row", "path", "fwd ms", "fwd+bwd ms", "vs dense", "pool MiB"
    ));
    for t in &r.timings {
        let dense =
            r.timings.iter().find(|d| d.row_len == t.row_len && d.path == "dense").and_then(|d| d.fwd_bwd_ms);
        let ratio = match (t.fwd_bwd_ms, dense) {
            (Some(x), Some(d)) => format!("{:.3}×", x / d),
            _ => "—".into(),
        };
        let ms = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
        let pool = t.pool_bytes_after.map_or("—".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        let tail = t.skipped.clone().unwrap_or(pool);
        s.push_str(&format!(
            "{:>7}  {:<7} {:>10} {:>12} {:>10} {:>14}\n",
            t.row_len,
            t.path,
            ms(t.fwd_ms),
            ms(t.fwd_bwd_ms),
            ratio,
            tail
        ));
    }
    s
}
