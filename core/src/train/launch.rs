//! Where a training process sits in a data-parallel launch: flags first, then the torchrun-style
//! environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), then defaults,
//! resolved to a [`Topology`] and then to the backend devices of a [`Launch`].

use std::path::Path;

use anyhow::Context;

use super::{Launch, RunSummary, TrainConfig};
use crate::backend::Backend;

/// Data parallelism as asked for (flags, or nothing): which devices this process drives and where
/// it sits among the nodes. `None` fields are read from the environment ([`LaunchOptions::topology`]).
/// Also `core-cli train`'s flag group (flattened into its arguments).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct LaunchOptions {
    /// Devices of this node, one data-parallel rank each: `0`, `0,1,2,3` or `all`. On cpu the
    /// indices are replicas on the one CPU device (a simulation of several devices: same maths,
    /// faster only where one replica leaves cores idle). Default: `LOCAL_RANK` when launched by
    /// torchrun-style tools, else `0`.
    #[arg(long)]
    pub devices: Option<String>,
    /// Number of nodes (processes), each with the same number of devices. Default: `WORLD_SIZE`, else 1.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// This node's index, 0..nodes (node 0 hosts the orchestrator and writes the run). Default: `RANK`.
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// `HOST:PORT` of node 0 (the orchestrator listens on PORT). Default: `MASTER_ADDR:MASTER_PORT`.
    #[arg(long)]
    pub master: Option<String>,
    /// `HOST:PORT` at which other nodes reach this node's tensor service. Default: this host
    /// (`LONGALIGN_NODE_HOST`, else 127.0.0.1 when the master is local, else the hostname) and
    /// port MASTER_PORT + 1 + node rank.
    #[arg(long)]
    pub node_addr: Option<String>,
    /// Seconds one collective call may wait for the other ranks before this process stops with
    /// an error (a rank died or hangs).
    #[arg(long, default_value_t = 900)]
    pub collective_timeout: u64,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            devices: None,
            nodes: None,
            node_rank: None,
            master: None,
            node_addr: None,
            collective_timeout: 900,
        }
    }
}

/// The launch topology, device indices not yet turned into backend devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// `None` = all devices of the backend.
    pub devices: Option<Vec<usize>>,
    pub nodes: usize,
    pub node_rank: usize,
    pub master: Option<String>,
    pub node_addr: Option<String>,
    pub timeout: std::time::Duration,
}

impl LaunchOptions {
    /// Resolves flags, then the torchrun-style environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`), then defaults. Under torchrun every process is one node
    /// driving one device (`LOCAL_RANK`).
    pub fn topology(&self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Topology> {
        let num = |flag: Option<usize>, var: &str| -> anyhow::Result<Option<usize>> {
            match flag {
                Some(v) => Ok(Some(v)),
                None => env(var)
                    .map(|v| {
                        v.trim().parse().with_context(|| format!("environment {var}={v:?}: not a number"))
                    })
                    .transpose(),
            }
        };
        let nodes = num(self.nodes, "WORLD_SIZE")?.unwrap_or(1);
        let node_rank = num(self.node_rank, "RANK")?.unwrap_or(0);
        let devices = match self.devices.as_deref().map(str::trim) {
            Some("all") => None,
            Some(list) => Some(parse_device_list(list)?),
            None => Some(vec![num(None, "LOCAL_RANK")?.unwrap_or(0)]),
        };
        let master = match &self.master {
            Some(m) => Some(m.clone()),
            None => {
                env("MASTER_ADDR").map(|a| format!("{a}:{}", env("MASTER_PORT").unwrap_or("29500".into())))
            }
        };
        if nodes > 1 && master.is_none() {
            anyhow::bail!("--nodes {nodes} needs --master HOST:PORT (or MASTER_ADDR and MASTER_PORT)");
        }
        let node_addr = match (&self.node_addr, &master) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(m)) if nodes > 1 => {
                let (mhost, mport) = super::parallel::host_port(m)?;
                let local = matches!(mhost, "127.0.0.1" | "localhost" | "::1" | "[::1]");
                let host = env("LONGALIGN_NODE_HOST").unwrap_or_else(|| {
                    if local {
                        "127.0.0.1".into()
                    } else {
                        std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .map(|h| h.trim().to_string())
                            .ok()
                            .or_else(|| env("HOSTNAME"))
                            .unwrap_or_else(|| "127.0.0.1".into())
                    }
                });
                let port = u16::try_from(mport as usize + 1 + node_rank)
                    .context("MASTER_PORT + 1 + node rank is past 65535: pass --node-addr")?;
                Some(format!("{host}:{port}"))
            }
            _ => None,
        };
        let t = Topology {
            devices,
            nodes,
            node_rank,
            master,
            node_addr,
            timeout: std::time::Duration::from_secs(self.collective_timeout),
        };
        if t.node_rank >= t.nodes {
            anyhow::bail!("node rank {} is not below the number of nodes {}", t.node_rank, t.nodes);
        }
        Ok(t)
    }
}

/// `0,1,3` → [0, 1, 3]; no duplicates.
pub fn parse_device_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let i: usize = part.trim().parse().with_context(|| {
            format!("--devices {s:?}: {part:?} is not a device index (expected e.g. 0,1,2,3 or all)")
        })?;
        if out.contains(&i) {
            anyhow::bail!("--devices {s:?}: device {i} is listed twice");
        }
        out.push(i);
    }
    Ok(out)
}

/// A backend's device by index (for `--devices`).
pub trait IndexedDevice: Sized {
    /// Device `index`; `only` when it is the run's one device (then the backend's default is used).
    fn nth(index: usize, only: bool) -> anyhow::Result<Self>;
    /// How many devices `all` means.
    fn count() -> usize;
}

impl IndexedDevice for burn::backend::flex::FlexDevice {
    fn nth(_: usize, _: bool) -> anyhow::Result<Self> {
        // One CPU device: several indices are replicas sharing it (a simulation of data parallel).
        Ok(Self)
    }
    fn count() -> usize {
        1
    }
}

impl IndexedDevice for burn::backend::wgpu::WgpuDevice {
    fn nth(index: usize, only: bool) -> anyhow::Result<Self> {
        Ok(if only && index == 0 { Self::default() } else { Self::DiscreteGpu(index) })
    }
    fn count() -> usize {
        1
    }
}

#[cfg(feature = "cuda")]
impl IndexedDevice for burn::backend::cuda::CudaDevice {
    fn nth(index: usize, _: bool) -> anyhow::Result<Self> {
        let n = Self::count();
        if index >= n {
            anyhow::bail!("--devices: CUDA device {index} does not exist ({n} visible)");
        }
        Ok(Self::new(index))
    }
    fn count() -> usize {
        <burn::backend::Cuda as burn::tensor::backend::Backend>::device_count(0)
    }
}

impl Topology {
    /// The backend devices of this topology.
    pub fn launch<D: IndexedDevice>(&self) -> anyhow::Result<Launch<D>> {
        let idx = self.devices.clone().unwrap_or_else(|| (0..D::count()).collect());
        let only = idx.len() == 1;
        Ok(Launch {
            devices: idx.iter().map(|&i| D::nth(i, only)).collect::<anyhow::Result<_>>()?,
            nodes: self.nodes,
            node_rank: self.node_rank,
            master: self.master.clone(),
            node_addr: self.node_addr.clone(),
            timeout: self.timeout,
        })
    }

    /// Data-parallel ranks over all nodes, `local_devices` being how many `all` means here.
    pub fn world(&self, local_devices: usize) -> usize {
        self.nodes * self.devices.as_ref().map_or(local_devices, Vec::len)
    }
}

/// How many devices `--devices all` means on `backend`.
pub fn device_count(backend: Backend) -> anyhow::Result<usize> {
    Ok(crate::with_backend!(backend, |B, _device| <burn::tensor::Device<B> as IndexedDevice>::count()))
}

/// Trains `cfg` on the devices of `topology`, with the backend the configuration names: what `core-cli train` runs.
pub fn train_launched(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    topology: &Topology,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    // Activation checkpointing is ours (`recompute`: per layer, in the step), not a Burn
    // strategy type, so one expansion of the dispatch serves both.
    Ok(crate::with_backend!(cfg.backend, |B, _device| super::train_on::<B>(
        cfg,
        out,
        resume,
        &topology.launch()?,
        quiet
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn topology_defaults_to_one_device_on_one_node() {
        let t = LaunchOptions::default().topology(env(&[])).unwrap();
        assert_eq!(
            (t.devices, t.nodes, t.node_rank, t.master, t.node_addr),
            (Some(vec![0]), 1, 0, None, None)
        );
        assert_eq!(t.timeout.as_secs(), 900);
    }

    #[test]
    fn topology_reads_torchrun_environment() {
        let vars = [
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29600"),
        ];
        let t = LaunchOptions::default().topology(env(&vars)).unwrap();
        assert_eq!(t.devices, Some(vec![1]));
        assert_eq!((t.nodes, t.node_rank), (8, 5));
        assert_eq!(t.master.as_deref(), Some("127.0.0.1:29600"));
        // Each process's tensor service gets its own port after the master's.
        assert_eq!(t.node_addr.as_deref(), Some("127.0.0.1:29606"));
        // Flags win over the environment; a remote master makes the node address this host's.
        let a = LaunchOptions {
            devices: Some("0,1,2,3".into()),
            nodes: Some(2),
            node_rank: Some(1),
            master: Some("head-node:29500".into()),
            ..LaunchOptions::default()
        };
        let t = a.topology(env(&[("LONGALIGN_NODE_HOST", "gpu-7"), ("RANK", "9")])).unwrap();
        assert_eq!((t.devices, t.nodes, t.node_rank), (Some(vec![0, 1, 2, 3]), 2, 1));
        assert_eq!(t.node_addr.as_deref(), Some("gpu-7:29502"));
        let t = LaunchOptions { devices: Some("all".into()), ..LaunchOptions::default() }
            .topology(env(&[]))
            .unwrap();
        assert_eq!(t.devices, None);
    }

    #[test]
    fn topology_errors_name_the_problem() {
        let e = LaunchOptions::default().topology(env(&[("WORLD_SIZE", "two")])).unwrap_err();
        assert!(format!("{e:#}").contains("WORLD_SIZE=\"two\""), "{e:#}");
        let e = LaunchOptions { nodes: Some(2), ..LaunchOptions::default() }.topology(env(&[])).unwrap_err();
        assert!(e.to_string().contains("--master"), "{e}");
        assert!(parse_device_list("0,x").unwrap_err().to_string().contains("\"x\" is not a device index"));
        assert!(parse_device_list("1,1").is_err());
        assert_eq!(parse_device_list(" 2, 0 ").unwrap(), vec![2, 0]);
    }
}
