//! `{% generation %}` … `{% endgeneration %}` blocks: what a chat template itself marks as the
//! assistant's output, i.e. the loss targets (transformers' `return_assistant_tokens_mask`).
//!
//! Templates whose earlier assistant turns render differently from the last one (Qwen3 and the
//! DeepSeek-R1 distills strip the reasoning of earlier turns) have no stable prefix to find their
//! targets by; a template with these blocks says where they are. minijinja does not know the tag,
//! so before compiling, each one becomes a `raw` block holding a marker character:
//!
//! ```text
//!   {%- generation %}   →  {%- raw %}\u{F8F0}{% endraw %}     (whitespace control kept on the
//!   {% endgeneration -%} →  {% raw %}\u{F8F1}{% endraw -%}     outer ends; still block tags, so
//!                                                              trim_blocks / lstrip_blocks apply)
//! ```
//!
//! and after rendering the markers are taken out again, their positions being the spans. The
//! markers are private-use characters; a conversation that contains one is refused.

/// Opens a generation span in the rendered text.
pub const OPEN: char = '\u{F8F0}';
/// Closes it.
pub const CLOSE: char = '\u{F8F1}';

/// `source` with every generation tag replaced, and whether there was any.
pub fn rewrite(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, found);
        };
        let inner = &tag[2..end];
        // Whitespace-control modifiers on each side ("-" or "+").
        let left = inner.chars().next().filter(|c| *c == '-' || *c == '+');
        let right = inner.chars().last().filter(|c| *c == '-' || *c == '+');
        let word = inner.trim_start_matches(['-', '+']).trim_end_matches(['-', '+']).trim();
        let marker = match word {
            "generation" => Some(OPEN),
            "endgeneration" => Some(CLOSE),
            _ => None,
        };
        match marker {
            Some(m) => {
                found = true;
                let (l, r) =
                    (left.map(String::from).unwrap_or_default(), right.map(String::from).unwrap_or_default());
                out.push_str(&format!("{{%{l} raw %}}{m}{{% endraw {r}%}}"));
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// The rendered text without markers, and the byte spans the markers enclosed.
pub fn extract(rendered: &str) -> Result<(String, Vec<(usize, usize)>), String> {
    let mut text = String::with_capacity(rendered.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in rendered.chars() {
        match c {
            OPEN if open.is_some() => return Err("nested {% generation %} blocks".into()),
            OPEN => open = Some(text.len()),
            CLOSE => match open.take() {
                Some(s) => spans.push((s, text.len())),
                None => return Err("{% endgeneration %} without {% generation %}".into()),
            },
            c => text.push(c),
        }
    }
    if open.is_some() {
        return Err("{% generation %} block not closed".into());
    }
    Ok((text, spans))
}

/// Whether a message text holds a marker character (it would be read as a span boundary).
pub fn has_marker(text: &str) -> bool {
    text.contains([OPEN, CLOSE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_raw_markers_with_their_whitespace_control() {
        let (s, found) = rewrite("a{%- generation %}b{% endgeneration -%}c{% if x %}{%generation%}");
        assert!(found);
        assert_eq!(
            s,
            format!(
                "a{{%- raw %}}{OPEN}{{% endraw %}}b{{% raw %}}{CLOSE}{{% endraw -%}}c{{% if x %}}{{% raw %}}{OPEN}{{% endraw %}}"
            )
        );
        assert_eq!(rewrite("{{ x }}{% for m in ms %}"), ("{{ x }}{% for m in ms %}".into(), false));
        // A tag that does not close is left alone (the template compiler reports it).
        assert_eq!(rewrite("x{% generation").0, "x{% generation");
    }

    #[test]
    fn markers_become_spans() {
        let r = format!("<u>hi</u><a>{OPEN}yes{CLOSE}</a><a>{OPEN}é{CLOSE}");
        let (text, spans) = extract(&r).unwrap();
        assert_eq!(text, "<u>hi</u><a>yes</a><a>é");
        assert_eq!(spans.iter().map(|&(a, b)| &text[a..b]).collect::<Vec<_>>(), ["yes", "é"]);
        assert!(extract(&format!("{OPEN}{OPEN}")).is_err());
        assert!(extract(&format!("{CLOSE}")).is_err());
        assert!(extract(&format!("{OPEN}x")).is_err());
    }
}
