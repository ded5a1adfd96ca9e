//! Data parallelism: one replica of the model per device, gradients summed across replicas with
//! `burn-collective` (Burn's collective engine: in-process all-reduce between the devices of a node,
//! and a websocket orchestrator + peer-to-peer tensor service between nodes).
//!
//! ```text
//!   node 0 (process)                         node 1 (process)
//!   ┌───────────────────────────┐            ┌───────────────────────────┐
//!   │ rank 0 thread   rank 1 thr│            │ rank 2 thread   rank 3 thr│
//!   │ mb(dev 0, μ 0)  mb(dev 1..│            │ mb(dev 2, ..)   mb(dev 3..│
//!   │      └── local all-reduce ┼── global ──┼── local all-reduce ──┘    │
//!   │          (sum)            │  (ring)    │                           │
//!   │ clip · AdamW (identical)  │            │ clip · AdamW (identical)  │
//!   │ rank 0: events, ckpts     │            │                           │
//!   └───────────────────────────┘            └───────────────────────────┘
//! ```
//!
//! Why sum and not mean: the plan's loss weights already divide by the *global* number of
//! sequences (or target tokens) of the step, so each device's gradient is its share of the one
//! global loss and the all-reduce only has to add the shares. The plan is computed from the seed on
//! every rank, so ranks agree on it without talking; rank r runs the micro-batches with
//! `device == r`.
//!
//! Failure: a rank that dies leaves the others waiting inside an all-reduce. Every collective call
//! is armed on a watchdog; one that waits longer than `--collective-timeout` ends the process with
//! an error naming what it waited for (exit code 3), so no rank hangs forever.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use super::grads::by_rank;

/// Where this process sits in the run, and the devices it drives.
#[derive(Debug, Clone)]
pub struct Launch<D> {
    /// This node's devices, one rank (thread) each.
    pub devices: Vec<D>,
    /// Number of nodes (processes); every node drives the same number of devices.
    pub nodes: usize,
    /// This node's index, 0..nodes. Node 0 hosts the orchestrator and writes the run directory.
    pub node_rank: usize,
    /// `HOST:PORT` of the orchestrator (node 0 listens on PORT), when `nodes > 1`.
    pub master: Option<String>,
    /// `HOST:PORT` at which the other nodes reach this node's tensor service.
    pub node_addr: Option<String>,
    /// Longest wait inside one collective call before the process gives up.
    pub timeout: Duration,
}

impl<D> Launch<D> {
    /// One device, one node: no collective at all.
    pub fn single(device: D) -> Self {
        Self {
            devices: vec![device],
            nodes: 1,
            node_rank: 0,
            master: None,
            node_addr: None,
            timeout: Duration::from_secs(900),
        }
    }

    /// Total number of ranks (devices over all nodes).
    pub fn world(&self) -> usize {
        self.nodes * self.devices.len()
    }

    /// Global rank of this node's `local`-th device.
    pub fn rank(&self, local: usize) -> usize {
        self.node_rank * self.devices.len() + local
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.devices.is_empty() {
            bail!("no devices to train on");
        }
        if self.nodes == 0 || self.node_rank >= self.nodes {
            bail!("node rank {} is not below the number of nodes {}", self.node_rank, self.nodes);
        }
        if self.nodes > 1 && (self.master.is_none() || self.node_addr.is_none()) {
            bail!(
                "a multi-node run needs the master address (--master HOST:PORT or MASTER_ADDR/MASTER_PORT)"
            );
        }
        Ok(())
    }
}

/// Splits `HOST:PORT`.
pub fn host_port(addr: &str) -> anyhow::Result<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':').with_context(|| format!("{addr:?}: expected HOST:PORT"))?;
    let port = port.parse().with_context(|| format!("{addr:?}: bad port"))?;
    if host.is_empty() {
        bail!("{addr:?}: expected HOST:PORT");
    }
    Ok((host, port))
}

/// Ends the process when a collective call waits too long (a peer died or hangs).
struct Watchdog {
    timeout: Duration,
    armed: Mutex<HashMap<u64, (Instant, String)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Disarms its watch when dropped.
struct Armed<'a>(&'a Watchdog, u64);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.armed.lock().expect("watchdog lock").remove(&self.1);
    }
}

impl Watchdog {
    /// The process's watchdog; the first caller's timeout wins (one run per process).
    fn get(timeout: Duration) -> &'static Watchdog {
        static DOG: OnceLock<Watchdog> = OnceLock::new();
        DOG.get_or_init(|| {
            std::thread::Builder::new()
                .name("collective-watchdog".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(Duration::from_millis(200));
                        let Some(dog) = DOG.get() else { continue };
                        let expired = dog
                            .armed
                            .lock()
                            .expect("watchdog lock")
                            .values()
                            .find(|(t, _)| t.elapsed() > dog.timeout)
                            .map(|(t, what)| (t.elapsed(), what.clone()));
                        if let Some((waited, what)) = expired {
                            eprintln!(
                                "error: waited {:.0}s for {what}: another rank died or hangs \
                                 (limit: --collective-timeout {}); stopping",
                                waited.as_secs_f64(),
                                dog.timeout.as_secs()
                            );
                            std::process::exit(3);
                        }
                    }
                })
                .expect("spawning the collective watchdog");
            Watchdog { timeout, armed: Mutex::new(HashMap::new()), next: 0.into() }
        })
    }

    fn arm(&self, what: String) -> Armed<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.armed.lock().expect("watchdog lock").insert(id, (Instant::now(), what));
        Armed(self, id)
    }
}

/// Starts the global orchestrator on node 0 (in its own thread and runtime, for the process's life).
pub fn start_orchestrator(port: u16) {
    std::thread::Builder::new()
        .name("collective-orchestrator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime for the orchestrator");
            rt.block_on(burn_collective::start_global_orchestrator(port));
        })
        .expect("spawning the orchestrator thread");
}

/// The collective configuration every local rank of this node registers with.
pub fn collective_config<D>(launch: &Launch<D>) -> anyhow::Result<CollectiveConfig> {
    let mut cc = CollectiveConfig::default().with_num_devices(launch.devices.len());
    if launch.nodes > 1 {
        let master = launch.master.as_deref().context("no master address")?;
        let node = launch.node_addr.as_deref().context("no node address")?;
        host_port(master)?;
        let (_, port) = host_port(node)?;
        let ws = |a: &str| -> anyhow::Result<burn_communication::Address> {
            format!("ws://{a}").parse().map_err(|e: String| anyhow::anyhow!("{a}: {e}"))
        };
        cc = cc
            .with_num_nodes(launch.nodes as u32)
            .with_global_address(ws(master)?)
            .with_node_address(ws(node)?)
            .with_data_service_port(port);
    }
    Ok(cc)
}

/// One rank's handle on the collective.
pub struct Peer<B: AutodiffBackend> {
    id: PeerId,
    rank: usize,
    nodes: usize,
    device: B::Device,
    dog: &'static Watchdog,
}

fn collective<T>(r: Result<T, burn_collective::CollectiveError>, what: &str) -> anyhow::Result<T> {
    r.map_err(|e| {
        anyhow::anyhow!(
            "collective {what} failed ({e:?}): another rank probably died; \
             restart every node with --resume RUN_DIR"
        )
    })
}

struct Shapes(Vec<(ParamId, Vec<usize>)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, param.val().shape().dims::<D>().to_vec()));
    }
}

fn take_flat<B: AutodiffBackend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    n: usize,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    match grads.remove::<B::InnerBackend, D>(id) {
        Some(g) => g.reshape([n]),
        // A rank whose micro-batches did not touch this parameter (or that had no micro-batch
        // this step) still takes part, with zeros: every rank must make the same calls.
        None => Tensor::zeros([n], device),
    }
}

fn has_grad<B: AutodiffBackend, const D: usize>(grads: &GradientsParams, id: ParamId) -> bool {
    grads.get::<B::InnerBackend, D>(id).is_some()
}

fn put_flat<B: AutodiffBackend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    flat: Tensor<B::InnerBackend, 1>,
    dims: &[usize],
) {
    let dims: [usize; D] = dims.try_into().expect("rank matches");
    grads.register::<B::InnerBackend, D>(id, flat.reshape(dims));
}

/// Gradients are summed in buckets of at most this many elements (one collective call each, as
/// PyTorch DDP buckets them): few calls for small models, bounded extra memory for large ones.
const BUCKET_ELEMS: usize = 32 << 20;

impl<B: AutodiffBackend> Peer<B> {
    /// Registers global rank `rank` (on `device`) with the collective; returns once every rank of
    /// the run has registered.
    pub fn register(
        rank: usize,
        nodes: usize,
        device: B::Device,
        config: CollectiveConfig,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let dog = Watchdog::get(timeout);
        let id = PeerId::from(rank);
        let _w = dog.arm(format!("rank {rank}: the other ranks to register"));
        collective(burn_collective::register::<B::InnerBackend>(id, device.clone(), config), "register")?;
        Ok(Self { id, rank, nodes, device, dog })
    }

    /// Sums a flat tensor over all ranks, under the watchdog.
    fn all_reduce(
        &self,
        t: Tensor<B::InnerBackend, 1>,
        what: &str,
    ) -> anyhow::Result<Tensor<B::InnerBackend, 1>> {
        let _w = self.dog.arm(format!("rank {}: {what}", self.rank));
        let n = t.dims()[0];
        // The multi-node ring cuts the tensor into one slice per node: pad short ones.
        let t = if n < self.nodes {
            Tensor::cat(vec![t, Tensor::zeros([self.nodes - n], &self.device)], 0)
        } else {
            t
        };
        let r = collective(
            burn_collective::all_reduce::<B::InnerBackend>(
                self.id,
                t.into_primitive().tensor(),
                ReduceOperation::Sum,
            ),
            what,
        )?;
        Ok(Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(r)).narrow(0, 0, n))
    }

    /// Sums `values` over all ranks.
    pub fn sum(&self, values: &[f32], what: &str) -> anyhow::Result<Vec<f32>> {
        let t = Tensor::<B::InnerBackend, 1>::from_floats(values, &self.device);
        let out = self.all_reduce(t, what)?;
        out.into_data().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{what}: {e:?}"))
    }

    /// Sums the gradients of every parameter of `model` over all ranks, in the module's visit
    /// order (the same on every rank and node, unlike parameter ids, which are random per process).
    pub fn sum_grads<M: Module<B>>(
        &self,
        model: &M,
        mut grads: GradientsParams,
        step: usize,
    ) -> anyhow::Result<GradientsParams> {
        let mut shapes = Shapes(Vec::new());
        model.visit(&mut shapes);
        // Which parameters got a gradient on any rank: one that none did stays without one, as
        // in a single-device run (the optimizer then leaves it and its moments alone, like
        // PyTorch's AdamW skips `grad is None`), instead of being stepped with zeros.
        let present: Vec<f32> = shapes
            .0
            .iter()
            .map(|(id, dims)| by_rank!(dims.len(), has_grad, B, &grads, *id) as u8 as f32)
            .collect();
        let present = self.sum(&present, &format!("gradient presence of step {step}"))?;
        let mut out = GradientsParams::new();
        let mut start = 0;
        while start < shapes.0.len() {
            // The bucket: parameters start..end, at least one.
            let (mut end, mut elems) = (start, 0usize);
            while end < shapes.0.len() {
                let n: usize = shapes.0[end].1.iter().product();
                if end > start && elems + n > BUCKET_ELEMS {
                    break;
                }
                elems += n;
                end += 1;
            }
            let flat: Vec<_> = shapes.0[start..end]
                .iter()
                .map(|(id, dims)| {
                    let n = dims.iter().product();
                    by_rank!(dims.len(), take_flat, B, &mut grads, *id, n, &self.device)
                })
                .collect();
            let summed =
                self.all_reduce(Tensor::cat(flat, 0), &format!("gradient all-reduce of step {step}"))?;
            let mut at = 0;
            for (k, (id, dims)) in shapes.0[start..end].iter().enumerate() {
                let n: usize = dims.iter().product();
                if present[start + k] > 0.0 {
                    let part = summed.clone().narrow(0, at, n);
                    by_rank!(dims.len(), put_flat, B, &mut out, *id, part, dims);
                }
                at += n;
            }
            start = end;
        }
        Ok(out)
    }

    /// Leaves the collective (after the last step).
    pub fn finish(self) -> anyhow::Result<()> {
        let _w = self.dog.arm(format!("rank {}: the other ranks to finish", self.rank));
        collective(burn_collective::finish_collective::<B::InnerBackend>(self.id), "finish")
    }
}

/// A number that differs between replicas whose weights differ: the sum of all parameters.
pub fn fingerprint<B: AutodiffBackend, M: Module<B>>(model: &M) -> f64 {
    struct Sum(f64);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            use burn::tensor::cast::ToElement as _;
            self.0 += param.val().inner().sum().into_scalar().to_f64();
        }
    }
    let mut s = Sum(0.0);
    model.visit(&mut s);
    s.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits_and_rejects() {
        assert_eq!(host_port("127.0.0.1:29500").unwrap(), ("127.0.0.1", 29500));
        assert_eq!(host_port("node-3.cluster:1").unwrap(), ("node-3.cluster", 1));
        assert!(host_port("127.0.0.1").is_err());
        assert!(host_port(":80").is_err());
        assert!(host_port("h:port").is_err());
    }

    #[test]
    fn world_and_ranks() {
        let l = Launch { devices: vec![(), ()], nodes: 3, node_rank: 2, ..Launch::single(()) };
        assert_eq!(l.world(), 6);
        assert_eq!((l.rank(0), l.rank(1)), (4, 5));
        assert!(l.check().is_err(), "multi-node without a master address");
        let l = Launch { master: Some("h:1".into()), node_addr: Some("h:2".into()), ..l };
        l.check().unwrap();
        let l = Launch { node_rank: 3, ..l };
        assert!(l.check().is_err());
    }
}
