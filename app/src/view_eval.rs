//! The Eval view: a LongBench-Chat result (`report.json`: score table, each answer with the
//! judge's analysis) or a needle-in-a-haystack grid (`grid.json`: the heatmap, each cell's answer).

use std::path::{Path, PathBuf};

use egui::{Color32, Pos2, Rect, Sense, Stroke, vec2};
use serde_json::Value;

use crate::AppState;

pub enum EvalResult {
    LongBenchChat { path: PathBuf, report: Value },
    Needle { path: PathBuf, grid: Value },
}

impl EvalResult {
    /// A result folder (or the file itself): `report.json` of `eval longbench-chat`, or
    /// `grid.json` of `eval needle`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = if path.is_dir() {
            ["report.json", "grid.json"].iter().map(|f| path.join(f)).find(|p| p.is_file()).ok_or_else(
                || {
                    anyhow::anyhow!(
                        "{}: no report.json (longbench-chat) or grid.json (needle)",
                        path.display()
                    )
                },
            )?
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        Self::from_json(file, &text)
    }

    /// A result file's text (`file` names it in errors and the heading).
    pub fn from_json(file: PathBuf, text: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if v.get("items").is_some_and(Value::is_array) {
            Ok(Self::LongBenchChat { path: file, report: v })
        } else if v.get("scores").is_some_and(Value::is_array) && v.get("lengths").is_some() {
            Ok(Self::Needle { path: file, grid: v })
        } else {
            anyhow::bail!(
                "{}: neither a LongBench-Chat report (field items) nor a needle grid (fields lengths, scores)",
                file.display()
            )
        }
    }
}

pub fn show(app: &mut AppState, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        if ui
            .button("Open file…")
            .on_hover_text("report.json (longbench-chat) or grid.json (needle)")
            .clicked()
        {
            app.pick_file();
        }
        if cfg!(target_arch = "wasm32") {
            ui.label("or drop report.json / grid.json here");
            return;
        }
        ui.label("result folder");
        ui.add(
            egui::TextEdit::singleline(&mut app.eval_input)
                .hint_text("eval --out folder, report.json or grid.json")
                .desired_width(320.0),
        );
        if ui.button("Open result").clicked() {
            let r = EvalResult::open(Path::new(app.eval_input.trim()));
            app.set_eval(r);
        }
    });
    ui.separator();
    match &app.eval {
        None => {
            ui.label("Open the output folder of `core-cli eval longbench-chat` or `core-cli eval needle`.");
        }
        Some(EvalResult::LongBenchChat { path, report }) => longbench(ui, path, report, &mut app.eval_item),
        Some(EvalResult::Needle { path, grid }) => needle(ui, path, grid),
    }
}

fn fmt_score(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.2}"))
}

fn longbench(ui: &mut egui::Ui, path: &Path, r: &Value, selected: &mut usize) {
    ui.heading(format!("LongBench-Chat · {}", path.display()));
    ui.strong(format!(
        "mean score {} · English {} · Chinese {} · {} scored, {} failed",
        fmt_score(&r["mean_score"]),
        fmt_score(&r["mean_score_en"]),
        fmt_score(&r["mean_score_zh"]),
        r["scored"],
        r["failed"]
    ));
    let items = r["items"].as_array().cloned().unwrap_or_default();
    ui.columns(2, |cols| {
        egui::ScrollArea::vertical().id_salt("lbc_items").show(&mut cols[0], |ui| {
            egui::Grid::new("lbc").striped(true).show(ui, |ui| {
                ui.strong("idx");
                ui.strong("score");
                ui.strong("question");
                ui.end_row();
                for (i, it) in items.iter().enumerate() {
                    let q: String = it["query"].as_str().unwrap_or("").chars().take(70).collect();
                    if ui.selectable_label(*selected == i, format!("#{}", it["idx"])).clicked() {
                        *selected = i;
                    }
                    ui.label(fmt_score(&it["score"]));
                    ui.label(q);
                    ui.end_row();
                }
            });
        });
        let ui = &mut cols[1];
        if let Some(it) = items.get(*selected) {
            ui.strong(format!("#{} · score {}", it["idx"], fmt_score(&it["score"])));
            if let Some(e) = it["error"].as_str() {
                ui.colored_label(Color32::from_rgb(200, 60, 60), e);
            }
            egui::ScrollArea::vertical().id_salt("lbc_detail").show(ui, |ui| {
                ui.label(egui::RichText::new("question").weak());
                ui.label(it["query"].as_str().unwrap_or(""));
                ui.label(egui::RichText::new("answer").weak());
                ui.label(it["prediction"].as_str().unwrap_or(""));
                ui.label(egui::RichText::new("judge").weak());
                ui.label(it["analysis"].as_str().unwrap_or(""));
            });
        }
    });
}

/// Red (0) → green (1).
fn heat(x: f64) -> Color32 {
    let x = x.clamp(0.0, 1.0) as f32;
    Color32::from_rgb((220.0 * (1.0 - x) + 40.0 * x) as u8, (60.0 * (1.0 - x) + 180.0 * x) as u8, 70)
}

fn needle(ui: &mut egui::Ui, path: &Path, g: &Value) {
    ui.heading(format!("Needle in a haystack · {}", path.display()));
    ui.strong(format!(
        "mean exact retrieval {} · {} cells scored, {} missing{}",
        g["mean"].as_f64().map_or("—".into(), |m| format!("{:.1} %", 100.0 * m)),
        g["scored"],
        g["missing"],
        g["judge_mean"].as_f64().map_or(String::new(), |m| format!(" · judge mean {m:.2}"))
    ));
    let lengths: Vec<u64> =
        g["lengths"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    let depths: Vec<u64> =
        g["depths"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    let cells = g["cells"].as_array().cloned().unwrap_or_default();
    let (cw, ch, left, top) = (70.0, 34.0, 80.0, 20.0);
    let size = vec2(left + cw * depths.len() as f32, top + ch * lengths.len() as f32);
    let (rect, resp) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let font = egui::FontId::proportional(12.0);
    let text = ui.visuals().text_color();
    for (j, d) in depths.iter().enumerate() {
        let p = rect.min + vec2(left + cw * (j as f32 + 0.5), top / 2.0);
        painter.text(p, egui::Align2::CENTER_CENTER, format!("{d}%"), font.clone(), text);
    }
    let mut hovered = None;
    for (i, l) in lengths.iter().enumerate() {
        let y = rect.top() + top + ch * i as f32;
        painter.text(
            Pos2::new(rect.left() + left - 8.0, y + ch / 2.0),
            egui::Align2::RIGHT_CENTER,
            l.to_string(),
            font.clone(),
            text,
        );
        for (j, d) in depths.iter().enumerate() {
            let r = Rect::from_min_size(
                Pos2::new(rect.left() + left + cw * j as f32, y),
                vec2(cw - 2.0, ch - 2.0),
            );
            match g["scores"][i][j].as_f64() {
                Some(s) => {
                    painter.rect_filled(r, 2.0, heat(s));
                    painter.text(
                        r.center(),
                        egui::Align2::CENTER_CENTER,
                        format!("{s:.0}"),
                        font.clone(),
                        Color32::WHITE,
                    );
                }
                None => {
                    painter.rect_stroke(r, 2.0, Stroke::new(1.0, Color32::GRAY), egui::StrokeKind::Inside);
                }
            }
            if resp.hovered() && resp.hover_pos().is_some_and(|p| r.contains(p)) {
                hovered = cells
                    .iter()
                    .find(|c| c["length"].as_u64() == Some(*l) && c["depth_pct"].as_u64() == Some(*d));
            }
        }
    }
    ui.label(
        egui::RichText::new(
            "rows: context length (tokens) · columns: needle depth · 1 = the key was in the answer",
        )
        .weak(),
    );
    if let Some(c) = hovered {
        resp.on_hover_text(format!(
            "key {} · answer {:?}",
            c["key"].as_str().unwrap_or(""),
            c["answer"].as_str().unwrap_or("")
        ));
    }
}
