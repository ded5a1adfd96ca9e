//! Needle in a haystack: a "special magic number" sentence hidden at a chosen depth of a long
//! filler text; the model is asked for the number. Scored by exact retrieval (the answer contains
//! the number) over a grid of context lengths × depths, drawn as a heatmap.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::rng::SplitMix64;

pub use runner::{NeedleConfig, NeedleReport, run};

mod runner;

/// The bundled haystack (`datasets/haystack/haystack.txt`, original prose, CC0).
pub const HAYSTACK: &str = include_str!("../../../../datasets/haystack/haystack.txt");

pub const QUESTION: &str =
    "What is the special magic number mentioned in the text above? Answer with the number only.";

/// The hidden number of one cell: 7 digits, a function of (length, depth) so reruns agree.
pub fn key(length: usize, depth_pct: u32) -> String {
    let mut g = SplitMix64::new((length as u64) << 8 ^ depth_pct as u64 ^ 0x6e65_6564_6c65);
    format!("{}", 1_000_000 + g.below(9_000_000))
}

/// The needle sentence.
pub fn needle(key: &str) -> String {
    format!("The special magic number is {key}.")
}

/// Sentences of a text (kept with their final punctuation and a trailing space).
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        cur.push_str(w);
        cur.push(' ');
        if w.ends_with(['.', '!', '?']) {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The prompt of one cell: haystack sentences (cycled) filling about `length` tokens as counted by
/// `count`, the needle after the sentence nearest `depth_pct`% of the way in, then the question.
pub fn prompt(
    haystack: &str,
    length: usize,
    depth_pct: u32,
    key: &str,
    count: &dyn Fn(&str) -> usize,
) -> String {
    let pool = sentences(haystack);
    assert!(!pool.is_empty(), "empty haystack");
    let needle = needle(key);
    let fixed = count(&needle) + count(QUESTION) + 2;
    let budget = length.saturating_sub(fixed);
    let mut picked: Vec<&str> = Vec::new();
    let mut used = 0;
    for s in pool.iter().cycle() {
        let n = count(s);
        if used + n > budget {
            break;
        }
        used += n;
        picked.push(s);
        if picked.len() > 10 * budget + 10 {
            break; // a tokenizer that counts sentences as empty: stop anyway
        }
    }
    let at = ((picked.len() as f64) * depth_pct as f64 / 100.0).round() as usize;
    let mut text = String::new();
    for (i, s) in picked.iter().enumerate() {
        if i == at {
            text.push_str(&needle);
            text.push(' ');
        }
        text.push_str(s);
    }
    if at >= picked.len() {
        text.push_str(&needle);
    }
    format!("{}\n\n{QUESTION}", text.trim_end())
}

/// One cell's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub length: usize,
    pub depth_pct: u32,
    pub key: String,
    pub answer: String,
    pub prompt_tokens: u64,
    /// 1 when the answer contains the key.
    pub score: f64,
    /// The judge's 1–10 rating, when a judge was asked (and answered with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_score: Option<f64>,
}

/// The judge prompt for one needle answer (LongBench-Chat's rating format, `[[n]]`).
pub fn judge_prompt(key: &str, answer: &str) -> String {
    format!(
        "[Instructions]\nYou are asked to evaluate an AI assistant's answer to a question about a long \
         document, as an impartial judge. The question asks for a number hidden in the document. \
         Compare the answer with the reference answer: the correct number, stated clearly, deserves \
         10; a wrong or missing number deserves 1. Give an integer rating from 1 to 10 strictly in \
         the format \"[[rating]]\", e.g. \"[[5]]\".\n\n[Question]\n{QUESTION}\n\n\
         [Reference answer]\n{key}\n\n[Assistant's answer begins]\n{answer}\n[Assistant's answer ends]\n\nRating: "
    )
}

/// Exact retrieval: the answer contains the number.
pub fn score(answer: &str, key: &str) -> f64 {
    if answer.contains(key) { 1.0 } else { 0.0 }
}

/// Red (0) → amber → green (1).
fn color(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let (r, g) = if v < 0.5 { (220.0, 60.0 + 340.0 * v) } else { (220.0 - 380.0 * (v - 0.5), 230.0) };
    RGBColor(r as u8, g as u8, 70)
}

/// Draws the grid (rows: lengths, columns: depths) on any plotters backend.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    lengths: &[usize],
    depths: &[u32],
    grid: &[Vec<Option<f64>>],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..depths.len() as f64, 0f64..lengths.len() as f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (d2, l2) = (depths.to_vec(), lengths.to_vec());
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("needle depth (%)")
        .y_desc("context length (tokens)")
        .x_labels(depths.len() * 2 + 1)
        .y_labels(lengths.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                d2.get(i as usize).map_or(String::new(), |d| d.to_string())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&move |y| {
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                l2.get(i as usize).map_or(String::new(), |l| l.to_string())
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (li, row) in grid.iter().enumerate() {
        for (di, v) in row.iter().enumerate() {
            let (x, y) = (di as f64, li as f64);
            let fill = v.map_or(RGBColor(200, 200, 200), color);
            chart
                .draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let label = v.map_or("–".to_string(), |v| format!("{v:.2}"));
            chart
                .draw_series(std::iter::once(Text::new(label, (x + 0.3, y + 0.6), ("sans-serif", 13))))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Writes `heatmap.png` and `heatmap.svg` into `dir`. `grid[l][d]`: mean score, `None` = no result.
pub fn heatmap(
    dir: &Path,
    title: &str,
    lengths: &[usize],
    depths: &[u32],
    grid: &[Vec<Option<f64>>],
) -> anyhow::Result<()> {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
    let width = (140 + 90 * depths.len() as u32).max(60 + 11 * title.chars().count() as u32);
    let size = (width, 120 + 50 * lengths.len() as u32);
    let png = dir.join("heatmap.png");
    draw(BitMapBackend::new(&png, size).into_drawing_area(), title, lengths, depths, grid)
        .with_context(|| format!("drawing {}", png.display()))?;
    let svg = dir.join("heatmap.svg");
    draw(SVGBackend::new(&svg, size).into_drawing_area(), title, lengths, depths, grid)
        .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needle_sits_at_its_depth_and_the_prompt_fits_its_length() {
        let count = |s: &str| s.len(); // byte-level tokenizer
        for depth in [0, 25, 50, 100] {
            let k = key(2000, depth);
            assert_eq!(k.len(), 7);
            let p = prompt(HAYSTACK, 2000, depth, &k, &count);
            assert!(p.len() <= 2000 && p.len() > 1700, "{}", p.len());
            assert!(p.ends_with(QUESTION));
            let at = p.find(&needle(&k)).unwrap() as f64 / p.len() as f64;
            assert!((at - depth as f64 / 100.0).abs() < 0.1, "depth {depth}: needle at {at:.2}");
        }
        assert_ne!(key(1000, 0), key(1000, 50));
        assert_eq!(score("It is 1234567.", "1234567"), 1.0);
        assert_eq!(score("It is 123456.", "1234567"), 0.0);
    }

    #[test]
    fn heatmap_writes_png_and_svg() {
        let d = tempfile::tempdir().unwrap();
        let grid = vec![vec![Some(1.0), Some(0.0)], vec![Some(0.5), None]];
        heatmap(d.path(), "test", &[1000, 2000], &[0, 100], &grid).unwrap();
        let png = std::fs::read(d.path().join("heatmap.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        let svg = std::fs::read_to_string(d.path().join("heatmap.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("needle depth") && svg.contains("2000"));
    }
}
