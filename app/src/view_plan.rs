//! The plan visualiser: the same data under naive, sorted and packed batching. Each row is a bar
//! as wide as the tokens it occupies; each sequence a coloured segment; padding hatched grey.
//!
//! ```text
//! naive   |███▓▓▓▒▒░░░░░░░░░░░░|   random sequences padded to the longest of the micro-batch
//! sorted  |████▓▓▓▓▒▒▒▒▒▒▒▒////|   similar lengths together: little padding
//! pack    |██▓▓▓▓▒▒▒░░█▓▓▓▓▒▒▒▒|   rows filled to capacity; attention stays within a sequence
//! ```

use egui::{Color32, Pos2, Rect, Sense, Stroke, vec2};
use egui_plot::{Bar, BarChart, Legend, Plot};
use longalign::plan::{Algorithm, LossMode, PlanStats, Strategy};

use crate::plans::{Planned, STRATEGIES};
use crate::{AppState, Focus};

const ROW_H: f32 = 7.0;

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    controls(app, ui);
    ui.separator();
    let shown: Vec<&Planned> = match app.focus {
        Focus::SideBySide => app.plans.iter().collect(),
        Focus::One(s) => app.plans.iter().filter(|p| p.strategy == s).collect(),
        Focus::Packers => app.packers.iter().collect(),
    };
    if shown.is_empty() {
        return;
    }
    let weights_h = 190.0;
    let rows_h = (ui.available_height() - weights_h - 170.0).max(120.0);
    ui.columns(shown.len(), |cols| {
        for (col, p) in cols.iter_mut().zip(&shown) {
            column(col, p, rows_h, app.timing_readout);
        }
    });
    ui.separator();
    weights(app, ui);
}

fn controls(app: &mut AppState, ui: &mut egui::Ui) {
    let s = &mut app.settings;
    ui.horizontal_wrapped(|ui| {
        ui.label("max tokens");
        ui.add(egui::Slider::new(&mut s.max_tokens, 128..=131_072).logarithmic(true));
        ui.label("batch size (naive, sorted)");
        ui.add(egui::DragValue::new(&mut s.batch_size).range(1..=256));
        ui.label("rows per pack");
        ui.add(egui::DragValue::new(&mut s.pack_rows).range(1..=64));
        ui.label("devices");
        ui.add(egui::DragValue::new(&mut s.devices).range(1..=512));
        ui.label("accumulation");
        ui.add(egui::DragValue::new(&mut s.accum).range(1..=128));
        ui.label("seed");
        ui.add(egui::DragValue::new(&mut s.seed));
    });
    ui.horizontal_wrapped(|ui| {
        ui.label("packing");
        for (a, name) in [(Algorithm::NextFit, "next-fit"), (Algorithm::Ffd, "FFD"), (Algorithm::Bfd, "BFD")]
        {
            ui.radio_value(&mut s.algorithm, a, name);
        }
        ui.separator();
        ui.label("loss");
        ui.radio_value(&mut s.loss, LossMode::Sequence, "sequence (LongAlign)");
        ui.radio_value(&mut s.loss, LossMode::Token, "token mean");
        ui.separator();
        ui.label("show");
        ui.selectable_value(&mut app.focus, Focus::SideBySide, "side by side");
        for st in STRATEGIES {
            ui.selectable_value(&mut app.focus, Focus::One(st), format!("{st} only"));
        }
        ui.selectable_value(&mut app.focus, Focus::Packers, "packers");
    });
}

/// The stats people compare, labelled with the strategy so each label is unique on screen.
pub fn stat_lines(p: &Planned) -> Vec<String> {
    let s: &PlanStats = &p.stats;
    let name = &p.name;
    vec![
        format!("{name} fill {:.2} %", 100.0 * s.fill),
        format!("{name} padding {:.2} %", 100.0 * s.padding_fraction),
        format!("{name} steps {}", s.steps),
        format!("{name} rows {} · {:.2} sequences/row", s.rows, s.mean_seqs_per_row),
        format!(
            "{name} attention work {:.3e} (dense {:.2}×)",
            s.attn_work as f64,
            s.attn_work_dense as f64 / s.attn_work.max(1) as f64
        ),
        format!("{name} truncated {} · dropped {}", s.truncated, s.dropped),
    ]
}

fn column(ui: &mut egui::Ui, p: &Planned, rows_h: f32, show_time: bool) {
    ui.heading(&p.name);
    for line in stat_lines(p) {
        ui.label(line);
    }
    if show_time {
        ui.label(egui::RichText::new(format!("planned in {:.1} ms", p.seconds * 1e3)).weak());
    }
    ui.add(egui::Label::new(egui::RichText::new(&p.command).monospace().size(10.0)).wrap())
        .on_hover_text("the same plan from the command line (add --json for these numbers)");
    let width = ui.available_width();
    egui::ScrollArea::vertical().id_salt(("rows", &p.name)).max_height(rows_h).show_rows(
        ui,
        ROW_H,
        p.rows.len(),
        |ui, range| {
            for r in &p.rows[range] {
                let (rect, resp) = ui.allocate_exact_size(vec2(width, ROW_H), Sense::hover());
                let painter = ui.painter_at(rect);
                let scale = rect.width() / p.widest as f32;
                let used: u32 = r.seqs.iter().map(|s| s.1).sum();
                let mut x = rect.left();
                for &(id, n) in &r.seqs {
                    let w = n as f32 * scale;
                    let seg = Rect::from_min_size(Pos2::new(x, rect.top()), vec2(w.max(1.0), ROW_H));
                    painter.rect_filled(seg, 0.0, color(id));
                    x += w;
                }
                let pad = Rect::from_min_max(
                    Pos2::new(x, rect.top()),
                    Pos2::new(rect.left() + r.row_len as f32 * scale, rect.bottom()),
                );
                if pad.width() > 0.5 {
                    hatch(&painter, pad);
                }
                if r.first_of_micro_batch {
                    painter.line_segment(
                        [rect.left_top(), rect.right_top()],
                        Stroke::new(1.0, Color32::from_gray(90)),
                    );
                }
                resp.on_hover_text(format!(
                    "{} sequences, {used} tokens of {} ({:.1} % padding)",
                    r.seqs.len(),
                    r.row_len,
                    100.0 * (r.row_len - used) as f64 / r.row_len.max(1) as f64
                ));
            }
        },
    );
}

/// A stable, distinct colour per sequence id (golden-ratio hues).
fn color(id: usize) -> Color32 {
    let h = (id as f32 * 0.618_034).fract();
    let hsva = egui::ecolor::Hsva::new(h, 0.55, 0.85, 1.0);
    Color32::from(hsva)
}

fn hatch(painter: &egui::Painter, r: Rect) {
    painter.rect_filled(r, 0.0, Color32::from_gray(60));
    let stroke = Stroke::new(1.0, Color32::from_gray(110));
    let mut x = r.left() - r.height();
    while x < r.right() {
        let a = Pos2::new(x.max(r.left()), r.bottom() - (x.max(r.left()) - x));
        let b = Pos2::new(
            (x + r.height()).min(r.right()),
            r.top() + ((x + r.height()) - (x + r.height()).min(r.right())),
        );
        painter.line_segment([a, b], stroke);
        x += 5.0;
    }
}

/// One step of the packed plan: each sequence's share of the step's loss under token-mean and
/// under LongAlign's sequence weighting.
fn weights(app: &mut AppState, ui: &mut egui::Ui) {
    let Some(p) = app.plans.iter().find(|p| p.strategy == Strategy::Pack) else { return };
    let steps = p.plan.steps.len();
    if steps == 0 {
        return;
    }
    app.weight_step = app.weight_step.min(steps - 1);
    ui.horizontal(|ui| {
        ui.strong("Loss weights, pack step");
        ui.add(egui::DragValue::new(&mut app.weight_step).range(0..=steps - 1));
        ui.label(format!("of {steps}"));
    });
    let shares = crate::plans::step_shares(p, app.weight_step);
    if let Some(&(id, n, tok, seq)) = shares.iter().max_by_key(|s| s.1) {
        ui.label(format!(
            "{} sequences in this step. The one with the most target tokens (#{id}, {n}) carries {:.1} % of the step's loss under token-mean, {:.1} % under sequence weighting (each of M = {} counts 1/M).",
            shares.len(),
            100.0 * tok,
            100.0 * seq,
            shares.iter().filter(|s| s.1 > 0).count()
        ));
    }
    let tok: Vec<Bar> =
        shares.iter().enumerate().map(|(i, s)| Bar::new(i as f64 - 0.2, 100.0 * s.2).width(0.4)).collect();
    let seq: Vec<Bar> =
        shares.iter().enumerate().map(|(i, s)| Bar::new(i as f64 + 0.2, 100.0 * s.3).width(0.4)).collect();
    Plot::new("weights")
        .height(150.0)
        .legend(Legend::default())
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .y_axis_label("% of step loss")
        .show(ui, |pu| {
            pu.bar_chart(BarChart::new("token mean", tok).color(Color32::from_rgb(220, 120, 80)));
            pu.bar_chart(BarChart::new("sequence (LongAlign)", seq).color(Color32::from_rgb(80, 160, 220)));
        });
}
