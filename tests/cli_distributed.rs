//! Data-parallel training end to end on the CPU: several simulated devices in one process, and
//! several processes (nodes) on 127.0.0.1 through burn-collective's orchestrator, each compared
//! with the one-device run of the same global steps; a killed rank; resume after it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{events, ok, small_data};

/// `core-cli train` on the small data: 4 micro-batches per step in every layout below.
fn train_args<'a>(loss: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--data",
        "small.jsonl",
        "--max-tokens",
        "512",
        "--quiet",
        "--lr",
        "3e-3",
        "--steps",
        "5",
        "--loss",
        loss,
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Same loss curve (≤ 1e-5 relative), same token counts, and the same final weights (each tensor's
/// largest difference ≤ 1e-5 of its largest magnitude).
fn assert_same_run(a: &Path, b: &Path) {
    let (ea, eb) = (events(a), events(b));
    assert_eq!(ea.len(), eb.len(), "{} vs {}", a.display(), b.display());
    for (x, y) in ea.iter().zip(&eb) {
        for key in ["loss", "grad_norm", "lr"] {
            let (p, q) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                rel(p, q) <= 1e-5,
                "step {} {key}: {p} vs {q} ({} vs {})",
                x["step"],
                a.display(),
                b.display()
            );
        }
        for key in ["useful_tokens", "padded_tokens", "target_tokens", "sequences", "rows"] {
            assert_eq!(x[key], y[key], "step {} {key}", x["step"]);
        }
    }
    let (wa, wb) = (
        std::fs::read(a.join("export/model.safetensors")).unwrap(),
        std::fs::read(b.join("export/model.safetensors")).unwrap(),
    );
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&wa).unwrap(),
        safetensors::SafeTensors::deserialize(&wb).unwrap(),
    );
    assert_eq!(ta.len(), tb.len());
    for (name, x) in ta.tensors() {
        let y = tb.tensor(&name).unwrap();
        let f = |b: &[u8]| {
            b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()
        };
        let (x, y) = (f(x.data()), f(y.data()));
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = x.iter().zip(&y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff <= 1e-5 * scale, "{name}: max diff {diff} (scale {scale})");
    }
}

#[test]
fn two_and_four_simulated_devices_equal_one_device_for_both_loss_modes() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 48, 5);
    for loss in ["sequence", "token"] {
        let one = format!("one-{loss}");
        ok(d.path(), &train_args(loss, &one, &["--accum", "4"]));
        for (devices, accum) in [("0,1", "2"), ("0,1,2,3", "1")] {
            let out = format!("{loss}-{}", devices.len());
            ok(d.path(), &train_args(loss, &out, &["--devices", devices, "--accum", accum]));
            assert_same_run(&d.path().join(&one), &d.path().join(&out));
        }
    }
}

/// A port block nobody listens on (master port and the nodes' tensor-service ports after it).
fn free_port_block(n: u16) -> u16 {
    let base = 20000 + (std::process::id() % 20000) as u16;
    (0..200)
        .map(|k| base + k * 7)
        .find(|&p| (p..p + n).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("a free port block")
}

fn node(dir: &Path, args: &[&str], nodes: usize, rank: usize, master: &str, env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_core-cli"));
    c.args(args)
        .args(["--nodes", &nodes.to_string(), "--node-rank", &rank.to_string(), "--master", master])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Waits for a child at most `limit`; kills it and fails past that.
fn wait(mut c: Child, limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let t = Instant::now();
    loop {
        if let Some(status) = c.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status, err, t.elapsed());
        }
        if t.elapsed() > limit {
            c.kill().ok();
            panic!("a node did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_nodes_on_loopback_equal_one_device() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 48, 5);
    ok(d.path(), &train_args("sequence", "one", &["--accum", "4"]));
    // 2 nodes × 2 devices: local all-reduce inside each process, ring between them.
    let port = free_port_block(4);
    let master = format!("127.0.0.1:{port}");
    let args =
        train_args("sequence", "nodes", &["--devices", "0,1", "--accum", "1", "--collective-timeout", "60"]);
    let n1 = node(d.path(), &args, 2, 1, &master, &[]);
    let n0 = node(d.path(), &args, 2, 0, &master, &[]);
    for n in [n0, n1] {
        let (status, err, _) = wait(n, Duration::from_secs(120));
        assert!(status.success(), "{err}");
    }
    assert_same_run(&d.path().join("one"), &d.path().join("nodes"));

    // torchrun's environment: one process per device, WORLD_SIZE/RANK/LOCAL_RANK/MASTER_*.
    let port = free_port_block(6);
    let args = train_args("token", "torchrun", &["--accum", "1", "--collective-timeout", "60"]);
    ok(d.path(), &train_args("token", "one-token", &["--accum", "4"]));
    let children: Vec<Child> = (0..4)
        .map(|r| {
            Command::new(env!("CARGO_BIN_EXE_core-cli"))
                .args(&args)
                .current_dir(d.path())
                .env("WORLD_SIZE", "4")
                .env("RANK", r.to_string())
                .env("LOCAL_RANK", "0")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let (status, err, _) = wait(c, Duration::from_secs(120));
        assert!(status.success(), "{err}");
    }
    assert_same_run(&d.path().join("one-token"), &d.path().join("torchrun"));
}

/// Node 1 dies after step 2; node 0 must stop with an error in bounded time (not hang), and both
/// resume from the last checkpoint to the uninterrupted run's result.
#[test]
fn a_killed_rank_stops_the_others_and_the_run_resumes() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 48, 5);
    ok(d.path(), &train_args("sequence", "one", &["--accum", "2"]));
    let port = free_port_block(3);
    let master = format!("127.0.0.1:{port}");
    let args = train_args(
        "sequence",
        "nodes",
        &["--accum", "1", "--checkpoint-every", "1", "--collective-timeout", "5"],
    );
    let n1 = node(d.path(), &args, 2, 1, &master, &[("LONGALIGN_CRASH_AFTER_STEP", "2")]);
    let n0 = node(d.path(), &args, 2, 0, &master, &[]);
    let (s1, _, _) = wait(n1, Duration::from_secs(120));
    assert!(!s1.success(), "the crash hook did not fire");
    let (s0, err, took) = wait(n0, Duration::from_secs(120));
    assert!(!s0.success(), "node 0 went on without node 1");
    assert!(err.contains("another rank died or hangs") || err.contains("collective"), "{err}");
    // The tensor service sees the connection drop at once; the watchdog (5 s here) is the backstop.
    assert!(took < Duration::from_secs(60), "node 0 took {took:?} to notice");
    let logged = events(&d.path().join("nodes")).len();
    assert!((2..=3).contains(&logged), "{logged} steps logged");

    let resume = ["train", "--resume", "nodes", "--quiet", "--collective-timeout", "60"];
    let port = free_port_block(3);
    let master = format!("127.0.0.1:{port}");
    let n1 = node(d.path(), &resume, 2, 1, &master, &[]);
    let n0 = node(d.path(), &resume, 2, 0, &master, &[]);
    for n in [n0, n1] {
        let (status, err, _) = wait(n, Duration::from_secs(120));
        assert!(status.success(), "{err}");
    }
    assert_same_run(&d.path().join("one"), &d.path().join("nodes"));
}

#[test]
fn launch_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    small_data(d.path(), 48, 5);
    let e = common::fails(d.path(), &train_args("sequence", "x", &["--devices", "0,0"]));
    assert!(e.contains("device 0 is listed twice"), "{e}");
    let e = common::fails(d.path(), &train_args("sequence", "x", &["--devices", "gpu0"]));
    assert!(e.contains("not a device index"), "{e}");
    let e = common::fails(d.path(), &train_args("sequence", "x", &["--nodes", "2"]));
    assert!(e.contains("--master"), "{e}");
    let e = common::fails(
        d.path(),
        &train_args("sequence", "x", &["--nodes", "2", "--node-rank", "2", "--master", "127.0.0.1:1"]),
    );
    assert!(e.contains("not below the number of nodes"), "{e}");
    // A run resumed on another number of ranks would follow another plan.
    ok(d.path(), &train_args("sequence", "r", &[]));
    let e = common::fails(d.path(), &["train", "--resume", "r", "--devices", "0,1"]);
    assert!(e.contains("the plan is for 1 devices but this launch has 2"), "{e}");
}
