//! The Data view: what is in the dataset, how long it is, where the loss falls.

use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId};
use egui_plot::{Bar, BarChart, Plot};

use crate::AppState;

/// Long texts are shown with their middle elided: an inspector for 64k-token documents must not
/// lay out megabytes of text every frame.
const SHOW_CHARS: usize = 3000;

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    let Some(d) = &app.data else { return };
    let lengths = d.lengths();
    let total: u64 = lengths.iter().map(|l| l.0 as u64).sum();
    let target: u64 = lengths.iter().map(|l| l.1 as u64).sum();
    ui.heading(&d.name);
    ui.label(format!(
        "{} sequences · {} invalid records · formats: {}",
        d.len(),
        d.invalid.len(),
        d.formats
            .iter()
            .map(|(f, n)| if *n > 0 { format!("{f} {n}") } else { f.clone() })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ui.label(format!(
        "{total} tokens, {target} of them targets ({:.1} %) · longest {} · mean {:.0}",
        100.0 * target as f64 / total.max(1) as f64,
        lengths.iter().map(|l| l.0).max().unwrap_or(0),
        total as f64 / lengths.len().max(1) as f64
    ));
    ui.add_space(6.0);
    ui.columns(2, |cols| {
        let ui = &mut cols[0];
        ui.strong("Per source");
        egui::Grid::new("sources").striped(true).show(ui, |ui| {
            for h in ["source", "sequences", "tokens", "target %", "mean length"] {
                ui.strong(h);
            }
            ui.end_row();
            for (name, s) in &d.sources {
                ui.label(name);
                ui.label(s.examples.to_string());
                ui.label(s.tokens.to_string());
                ui.label(format!("{:.1}", 100.0 * s.target_tokens as f64 / s.tokens.max(1) as f64));
                ui.label(format!("{:.0}", s.mean_len));
                ui.end_row();
            }
        });
        if !d.invalid.is_empty() {
            egui::CollapsingHeader::new(format!("{} invalid records (skipped)", d.invalid.len())).show(
                ui,
                |ui| {
                    for line in d.invalid.iter().take(200) {
                        ui.monospace(line);
                    }
                },
            );
        }

        let ui = &mut cols[1];
        ui.strong("Sequence lengths (tokens)");
        let bins = d.histogram();
        let bars: Vec<Bar> = bins
            .iter()
            .enumerate()
            .map(|(i, &(lo, n))| Bar::new(i as f64, n as f64).width(0.9).name(format!("≥ {lo}")))
            .collect();
        let labels: Vec<String> = bins
            .iter()
            .map(|&(lo, _)| if lo >= 1024 { format!("{}k", lo / 1024) } else { lo.to_string() })
            .collect();
        Plot::new("length_histogram")
            .height(180.0)
            .allow_zoom(false)
            .allow_drag(false)
            .allow_scroll(false)
            .x_axis_formatter(move |m, _| {
                let i = m.value.round();
                if (m.value - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .show(ui, |p| {
                p.bar_chart(BarChart::new("sequences", bars).color(Color32::from_rgb(90, 140, 220)))
            });
    });

    ui.separator();
    let Some(ds) = &d.dataset else {
        ui.label("A lengths file has no text to inspect.");
        return;
    };
    ui.horizontal(|ui| {
        ui.strong("Inspect example");
        ui.add(egui::DragValue::new(&mut app.inspect).range(0..=ds.len().saturating_sub(1)));
        ui.label(format!("(line {})", ds.lines.get(app.inspect).copied().unwrap_or(0)));
    });
    let Some(ex) = ds.examples.get(app.inspect) else { return };
    let t = &ds.tokens[app.inspect];
    ui.label(format!(
        "{} tokens, {} targets · source {}",
        t.len(),
        t.target_count(),
        ex.source.as_deref().unwrap_or("(none)")
    ));
    match d.tokenizer.target_spans(&ex.messages) {
        Ok((text, spans)) => {
            ui.label(egui::RichText::new("rendered with the chat template; loss targets highlighted").weak());
            egui::ScrollArea::vertical().id_salt("inspect").max_height(ui.available_height()).show(
                ui,
                |ui| {
                    ui.label(highlighted(&text, &spans));
                },
            );
        }
        Err(e) => {
            ui.colored_label(Color32::from_rgb(200, 60, 60), e.to_string());
        }
    }
}

/// The rendered text with target byte spans highlighted, the middle elided past SHOW_CHARS.
fn highlighted(text: &str, spans: &[(usize, usize)]) -> LayoutJob {
    let plain = TextFormat { font_id: FontId::monospace(12.0), color: Color32::GRAY, ..Default::default() };
    let target = TextFormat {
        font_id: FontId::monospace(12.0),
        color: Color32::from_rgb(20, 20, 20),
        background: Color32::from_rgb(170, 220, 140),
        ..Default::default()
    };
    // Cut points: every span boundary, so each piece is all target or all not.
    let mut cuts: Vec<usize> = spans.iter().flat_map(|&(a, b)| [a, b]).chain([0, text.len()]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut job = LayoutJob::default();
    let elide = text.len() > SHOW_CHARS;
    let (keep_head, keep_tail) = (SHOW_CHARS / 2, text.len().saturating_sub(SHOW_CHARS / 2));
    let mut elided = false;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let fmt = if spans.iter().any(|&(s, e)| a >= s && b <= e) { target.clone() } else { plain.clone() };
        if !elide {
            job.append(&text[a..b], 0.0, fmt);
            continue;
        }
        let floor = |i: usize| (0..=i).rev().find(|&j| text.is_char_boundary(j)).unwrap_or(0);
        let head_end = floor(b.min(keep_head));
        if a < head_end {
            job.append(&text[a..head_end], 0.0, fmt.clone());
        }
        if b > keep_head && a < keep_tail && !elided {
            elided = true;
            job.append(&format!("\n… {} bytes not shown …\n", keep_tail - keep_head), 0.0, plain.clone());
        }
        let tail_start = floor(a.max(keep_tail));
        if b > tail_start {
            job.append(&text[tail_start..b], 0.0, fmt);
        }
    }
    job
}
