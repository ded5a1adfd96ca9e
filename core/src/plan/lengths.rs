//! Lengths files: planning from sequence lengths alone (`core-cli plan --lengths`, the app's
//! what-if mixes). One sequence per line, `total_len` or `total_len target_len`.

use std::path::Path;

use anyhow::{Context, bail};

use super::Item;

/// Reads a lengths file: one sequence per line, `total_len` or `total_len target_len` (target
/// defaults to total: every token carries loss). Item id = 0-based line number.
pub fn read(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// [`read`] of text already read; `name` labels errors (`name:line: …`).
pub fn parse(name: &str, text: &str) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{name}:{}", i + 1);
        let mut fields = line.split_whitespace();
        let parse = |f: Option<&str>, field: &str| -> anyhow::Result<Option<u32>> {
            f.map(|s| {
                s.parse::<u32>()
                    .with_context(|| format!("{}: {field}: {s:?} is not a non-negative integer", at()))
            })
            .transpose()
        };
        let total = parse(fields.next(), "total_len")?
            .with_context(|| format!("{}: empty line (expected `total_len [target_len]`)", at()))?;
        let target = parse(fields.next(), "target_len")?.unwrap_or(total);
        if fields.next().is_some() {
            bail!("{}: too many fields (expected `total_len [target_len]`)", at());
        }
        if total == 0 {
            bail!("{}: total_len: must be at least 1", at());
        }
        if target > total {
            bail!("{}: target_len: {target} exceeds total_len {total}", at());
        }
        items.push(Item { id: i, total, target });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_items_and_bad_lines_name_line_and_field() {
        let items = parse("l.txt", "10\n20 5\n").unwrap();
        assert_eq!(items, vec![Item { id: 0, total: 10, target: 10 }, Item { id: 1, total: 20, target: 5 }]);
        for (text, want) in [
            ("10\n\n", "l.txt:2: empty line"),
            ("x", "l.txt:1: total_len: \"x\""),
            ("5 6", "l.txt:1: target_len: 6 exceeds total_len 5"),
            ("0", "l.txt:1: total_len: must be at least 1"),
            ("1 1 1", "l.txt:1: too many fields"),
        ] {
            let e = format!("{:#}", parse("l.txt", text).unwrap_err());
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }
}
