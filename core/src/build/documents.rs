//! Long source documents for the Self-Instruct builder: folders (or single files) of `.txt` /
//! `.md` (one document each), `.jsonl` (one document per line, field `text`) and `.json` (an array
//! of `{"text": …}` objects or of strings). Each input carries a `source` label (papers, books,
//! code, …) that follows its documents into the training data's `meta.source`.
//!
//! Bad records never stop a run and are never dropped silently: each becomes a [`Skipped`] entry
//! naming the file, the line (or array index) and what was wrong.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// One input of `build-data --input`: `SOURCE=PATH`, or `PATH` (source = the file stem or folder
/// name).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub source: String,
    pub path: PathBuf,
}

impl Input {
    pub fn parse(spec: &str) -> Result<Self, String> {
        // `papers=docs/arxiv`: a label is a plain word, so `a=b` inside a path is not mistaken for one.
        if let Some((label, path)) = spec.split_once('=')
            && !label.is_empty()
            && label.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c))
        {
            if path.is_empty() {
                return Err(format!("{spec}: no path after '='"));
            }
            return Ok(Self { source: label.to_string(), path: PathBuf::from(path) });
        }
        let path = PathBuf::from(spec);
        let source = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty() && s != ".")
            .unwrap_or_else(|| "documents".into());
        Ok(Self { source, path })
    }
}

/// A long document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `source/relative/path`, plus `:LINE` for `.jsonl` and `[INDEX]` for `.json` arrays: stable
    /// across runs, so `--resume` recognises finished work.
    pub id: String,
    pub source: String,
    pub text: String,
}

/// A record or file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// `path`, `path:LINE` or `path[INDEX]`.
    pub location: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Documents {
    pub documents: Vec<Document>,
    pub files: usize,
    pub skipped: Vec<Skipped>,
    /// Files with other extensions, not read.
    pub ignored: Vec<PathBuf>,
}

const TEXT_EXTS: [&str; 3] = ["txt", "md", "markdown"];

/// Every file under `dir` (recursively, hidden entries left out), sorted so ids and order are the
/// same on every machine.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The `text` of a JSON record: a string, or an object's `text` field.
fn record_text(v: &serde_json::Value) -> Result<&str, String> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Object(o) => match o.get("text") {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(_) => Err("field `text`: expected a string".into()),
            None => Err("field `text`: missing".into()),
        },
        _ => Err("expected an object with a `text` field, or a string".into()),
    }
}

/// Adds a document, or skips it when its text is empty.
fn add(out: &mut Documents, id: String, source: &str, location: String, text: &str) {
    if text.trim().is_empty() {
        out.skipped.push(Skipped { location, reason: "empty text".into() });
    } else {
        out.documents.push(Document { id, source: source.to_string(), text: text.to_string() });
    }
}

/// Reads every input. Missing inputs are errors (a typo should not build an empty dataset);
/// unreadable files and bad records are [`Skipped`].
pub fn read_inputs(inputs: &[Input]) -> anyhow::Result<Documents> {
    let mut out = Documents::default();
    for input in inputs {
        if !input.path.exists() {
            bail!("{}: no such file or folder (input of source {:?})", input.path.display(), input.source);
        }
        let (root, files) = if input.path.is_dir() {
            let mut files = Vec::new();
            walk(&input.path, &mut files)?;
            (input.path.clone(), files)
        } else {
            (input.path.parent().map(Path::to_path_buf).unwrap_or_default(), vec![input.path.clone()])
        };
        for file in files {
            let ext = file.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            let is_text = TEXT_EXTS.contains(&ext.as_str());
            if !is_text && ext != "jsonl" && ext != "json" {
                out.ignored.push(file);
                continue;
            }
            out.files += 1;
            let rel = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
            let id = format!("{}/{}", input.source, rel);
            let shown = file.display().to_string();
            let text = match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => {
                        let reason = format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to());
                        out.skipped.push(Skipped { location: shown, reason });
                        continue;
                    }
                },
                Err(e) => {
                    out.skipped.push(Skipped { location: shown, reason: e.to_string() });
                    continue;
                }
            };
            if is_text {
                add(&mut out, id, &input.source, shown, &text);
            } else if ext == "jsonl" {
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let location = format!("{shown}:{}", i + 1);
                    match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) => match record_text(&v) {
                            Ok(t) => add(&mut out, format!("{id}:{}", i + 1), &input.source, location, t),
                            Err(reason) => out.skipped.push(Skipped { location, reason }),
                        },
                        Err(e) => {
                            out.skipped.push(Skipped { location, reason: format!("invalid JSON: {e}") })
                        }
                    }
                }
            } else {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Array(items)) => {
                        for (i, v) in items.iter().enumerate() {
                            let location = format!("{shown}[{i}]");
                            match record_text(v) {
                                Ok(t) => add(&mut out, format!("{id}[{i}]"), &input.source, location, t),
                                Err(reason) => out.skipped.push(Skipped { location, reason }),
                            }
                        }
                    }
                    Ok(_) => out.skipped.push(Skipped {
                        location: shown,
                        reason: "expected a JSON array of documents".into(),
                    }),
                    Err(e) => {
                        out.skipped.push(Skipped { location: shown, reason: format!("invalid JSON: {e}") })
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_with_and_without_a_label() {
        assert_eq!(Input::parse("papers=docs/arxiv").unwrap().source, "papers");
        assert_eq!(Input::parse("papers=docs/arxiv").unwrap().path, PathBuf::from("docs/arxiv"));
        let i = Input::parse("data/books").unwrap();
        assert_eq!((i.source.as_str(), i.path.as_path()), ("books", Path::new("data/books")));
        // '=' inside a path is not a label.
        assert_eq!(Input::parse("a/b=c/d.txt").unwrap().source, "d");
        assert!(Input::parse("x=").is_err());
    }

    #[test]
    fn reads_text_jsonl_and_json_and_reports_every_bad_record() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("docs");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "alpha text").unwrap();
        std::fs::write(root.join("sub/b.md"), "# beta").unwrap();
        std::fs::write(root.join("empty.txt"), "  \n").unwrap();
        std::fs::write(root.join("bin.txt"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(root.join("c.jsonl"), "{\"text\":\"one\"}\n\n{\"txt\":\"x\"}\nnot json\n\"two\"\n")
            .unwrap();
        std::fs::write(root.join("d.json"), r#"[{"text":"three"}, 5, "four"]"#).unwrap();
        std::fs::write(root.join("e.json"), r#"{"text":"not an array"}"#).unwrap();
        std::fs::write(root.join("notes.pdf"), "x").unwrap();
        std::fs::write(root.join(".hidden.txt"), "x").unwrap();
        let r = read_inputs(&[Input::parse(&format!("web={}", root.display())).unwrap()]).unwrap();
        let ids: Vec<&str> = r.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            ["web/a.txt", "web/c.jsonl:1", "web/c.jsonl:5", "web/d.json[0]", "web/d.json[2]", "web/sub/b.md"]
        );
        assert!(r.documents.iter().all(|d| d.source == "web"));
        assert_eq!(r.documents[1].text, "one");
        let skipped: Vec<(String, &str)> = r
            .skipped
            .iter()
            .map(|s| (s.location.rsplit('/').next().unwrap().to_string(), s.reason.as_str()))
            .collect();
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        assert!(skipped.contains(&("bin.txt".into(), "not UTF-8 (byte 0)")));
        assert!(skipped.contains(&("c.jsonl:3".into(), "field `text`: missing")));
        assert!(skipped.iter().any(|(l, r)| l == "c.jsonl:4" && r.starts_with("invalid JSON")));
        assert!(skipped.iter().any(|(l, _)| l == "d.json[1]"));
        assert!(skipped.contains(&("e.json".into(), "expected a JSON array of documents")));
        assert!(skipped.contains(&("empty.txt".into(), "empty text")));
        assert_eq!(r.ignored.len(), 1);
        assert!(
            read_inputs(&[Input::parse("no/such/dir").unwrap()])
                .unwrap_err()
                .to_string()
                .contains("no/such/dir")
        );
    }
}
