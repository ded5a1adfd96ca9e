//! The fused weighted cross entropy against the plain chunked one on the same random inputs:
//! forward + backward time, the loss (they must agree), and memory after each — the process's peak
//! RSS on the CPU (the fused path runs first, so a higher peak after the plain one is the plain
//! one's), the device pool on wgpu and CUDA.

use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use longalign_kernels::{CeTargets, pool_bytes, reference_weighted_ce, try_weighted_ce};
use serde::Serialize;

use crate::util::table::{Table, compact};

/// What to time (also `core-cli bench loss`'s flags).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LossBenchConfig {
    /// Target tokens (rows of the hidden states that carry a label).
    #[arg(long, default_value_t = 4096)]
    pub targets: usize,
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 32_000)]
    pub vocab: usize,
    /// Tokens per chunk (both paths chunk the same way).
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    /// Timed repetitions after one warm-up (which compiles on JIT backends).
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
}

impl LossBenchConfig {
    /// Bytes of logits and probabilities the plain path keeps for its backward.
    pub fn plain_saved_bytes(&self) -> u64 {
        (2 * self.targets * self.vocab * 4) as u64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LossResult {
    /// `fused` or `plain`.
    pub path: &'static str,
    pub fwd_bwd_ms: f64,
    pub loss: f32,
    pub pool_bytes_after: Option<u64>,
    pub peak_rss_bytes_after: Option<u64>,
}

/// Times both paths, fused first.
pub fn run<B: AutodiffBackend>(cfg: &LossBenchConfig, device: &B::Device) -> anyhow::Result<Vec<LossResult>> {
    let c = cfg;
    if c.targets == 0 || c.hidden == 0 || c.vocab == 0 || c.chunk == 0 || c.reps == 0 {
        bail!("--targets, --hidden, --vocab, --chunk and --reps must be positive");
    }
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    let h = Tensor::<B, 2>::random([c.targets, c.hidden], Distribution::Normal(0.0, 1.0), device);
    let w = Tensor::<B, 2>::random([c.hidden, c.vocab], Distribution::Normal(0.0, 0.05), device);
    let t = CeTargets {
        labels: (0..c.targets).map(|i| ((i * 7919) % c.vocab) as u32).collect(),
        weights: vec![1.0 / c.targets as f32; c.targets],
        chunk: c.chunk,
        pad_to: 1,
    };
    let mut out = Vec::new();
    for path in ["fused", "plain"] {
        let run = || -> anyhow::Result<f32> {
            let (h, w) = (h.clone().require_grad(), w.clone().require_grad());
            let l = match path {
                "fused" => {
                    try_weighted_ce(h, w, &t).map_err(|_| anyhow::anyhow!("no fused loss on this backend"))?
                }
                _ => reference_weighted_ce(h, w, &t),
            };
            let value = l.clone().into_scalar().elem::<f32>();
            let _ = l.backward();
            sync()?;
            Ok(value)
        };
        let loss = run()?; // warm-up (compiles on JIT backends)
        let _ = pool_bytes(device, true);
        let t0 = web_time::Instant::now();
        for _ in 0..c.reps {
            run()?;
        }
        out.push(LossResult {
            path,
            fwd_bwd_ms: t0.elapsed().as_secs_f64() * 1e3 / c.reps as f64,
            loss,
            pool_bytes_after: pool_bytes(device, false),
            peak_rss_bytes_after: crate::util::mem::peak_rss_bytes(),
        });
    }
    Ok(out)
}

/// The results as the table `core-cli bench loss` prints.
pub fn render(c: &LossBenchConfig, backend: crate::backend::Backend, out: &[LossResult]) -> String {
    let mut s = format!(
        "weighted cross entropy, {} targets × hidden {} × vocab {}, chunks of {}, backend {backend}; forward + \
         backward, mean of {} after a warm-up; the plain path keeps {}B of logits and probabilities for its \
         backward\n\n",
        c.targets,
        c.hidden,
        c.vocab,
        c.chunk,
        c.reps,
        compact(c.plain_saved_bytes() as f64)
    );
    let mut t =
        Table::new(["path", "fwd+bwd ms", "loss", "peak RSS after", "pool after"].map(String::from).to_vec());
    let bytes = |b: Option<u64>| b.map_or("—".into(), |b| format!("{}B", compact(b as f64)));
    for r in out {
        t.row(vec![
            r.path.into(),
            format!("{:.1}", r.fwd_bwd_ms),
            format!("{:.6}", r.loss),
            bytes(r.peak_rss_bytes_after),
            bytes(r.pool_bytes_after),
        ]);
    }
    s += &t.render();
    s
}
