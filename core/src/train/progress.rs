//! What a `core-cli train` run shows on the terminal while it works: the warm-up's input shapes and
//! kernel compiles, then the steps. Hidden when the run is quiet (or not the lead rank).

use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::Trainer;
use super::trainer::WarmUp;

/// Runs the trainer's warm-up with a live line — which shape, and the compiles so far (a cold
/// CUDA process compiles for minutes) — then prints its totals.
pub(super) fn warm_up<B: AutodiffBackend>(trainer: &mut Trainer<B>, quiet: bool) -> WarmUp {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    let before = crate::jit::counts();
    let jit = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let c = crate::jit::counts().since(before);
        let _ = write!(w, "{} kernel compiles, {} autotune runs", c.compiles, c.autotunes);
    };
    bar.set_style(
        ProgressStyle::with_template("warm-up {pos}/{len} input shapes · {jit} · {elapsed}")
            .expect("static template")
            .with_key("jit", jit),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    let w = trainer.warm_up_with(|done, shapes| {
        bar.set_length(shapes as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "warm-up: {} input shapes in {:.1} s ({} kernel compiles, {} autotune runs)",
            w.shapes, w.seconds, w.jit.compiles, w.jit.autotunes
        );
    }
    w
}

/// The steps' bar, at `start` of `total`; the run sets its message (loss, useful tok/s).
pub(super) fn steps(start: usize, total: usize, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps · {msg} · {elapsed} elapsed, ETA {eta}")
            .expect("static template"),
    );
    bar.set_position(start as u64);
    bar
}
