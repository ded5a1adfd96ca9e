//! Per-step line plots, shared by the Train view's runs (`events.jsonl`) and in-app training.

use egui_plot::{Legend, Line, Plot, PlotPoints};

/// Anything logged once per optimizer step.
pub trait PerStep {
    fn step(&self) -> usize;
}

#[cfg(not(target_arch = "wasm32"))]
impl PerStep for longalign::train::events::StepEvent {
    fn step(&self) -> usize {
        self.step
    }
}

impl PerStep for longalign::train::StepReport {
    fn step(&self) -> usize {
        self.step
    }
}

/// A named series: its points and the value plotted for each.
pub type Series<'a, T> = (&'a str, &'a [T], &'a dyn Fn(&T) -> f64);

/// A titled plot of `series` against the step.
pub fn curve<T: PerStep>(ui: &mut egui::Ui, title: &str, height: f32, series: &[Series<'_, T>]) {
    ui.strong(title);
    Plot::new(title).height(height).legend(Legend::default()).x_axis_label("step").show(ui, |p| {
        for (name, points, f) in series {
            let pts: PlotPoints = points.iter().map(|e| [e.step() as f64, f(e)]).collect();
            p.line(Line::new(*name, pts));
        }
    });
}
