//! Chat templates, rendered the way Hugging Face transformers renders them.
//!
//! transformers' `apply_chat_template` compiles the model's Jinja template in an
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])`,
//! overrides `tojson` (no HTML escaping, `ensure_ascii=False`, `indent`/`separators`/`sort_keys`),
//! adds the globals `raise_exception(msg)` and `strftime_now(fmt)`, and renders with `messages`,
//! `tools=None`, `documents=None`, `add_generation_prompt` and every special token of the tokenizer
//! (`bos_token`, `eos_token`, …) as variables. We do the same with minijinja; Python's string methods
//! (`.strip()`, `.startswith()`, `.split()`, `.items()`, …) come from minijinja-contrib's pycompat.
//! Whitespace must match byte for byte: a stray newline is a different token and a different target.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indexmap::IndexMap;
use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, ErrorKind, Value, syntax::SyntaxConfig};

use super::Message;
use crate::util::time;

/// A compiled chat template plus the variables transformers passes to it.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Special tokens by their transformers name (`bos_token`, `eos_token`, …).
    special: BTreeMap<String, String>,
    /// The template marks its assistant output with `{% generation %}` blocks.
    generation: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("special", &self.special).finish_non_exhaustive()
    }
}

/// The template could not be compiled or rendered (including `raise_exception` from the template).
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(pub String);

fn describe(err: &Error) -> String {
    // `raise_exception` messages are the template author's words: show them as they are.
    if err.kind() == ErrorKind::InvalidOperation
        && let Some(detail) = err.detail()
        && let Some(msg) = detail.strip_prefix("raise_exception: ")
    {
        return msg.to_string();
    }
    let mut s = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        write!(s, ": {e}").ok();
        source = e.source();
    }
    s
}

impl ChatTemplate {
    /// Compiles `source`; `special` are the tokenizer's special tokens by transformers name.
    pub fn new(source: &str, special: BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError(describe(&e)))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
        });
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, time::unix_now()));
        let (source, generation) = super::generation::rewrite(source);
        env.add_template_owned("chat", source).map_err(|e| TemplateError(describe(&e)))?;
        Ok(Self { env, special, generation })
    }

    /// Whether the template marks its assistant output with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.generation
    }

    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special
    }

    /// Renders a conversation. `add_generation_prompt` appends the header of a new assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TemplateError> {
        Ok(self.render_spans(messages, add_generation_prompt)?.0)
    }

    /// [`Self::render`] and the byte spans of its `{% generation %}` blocks (none without them).
    pub fn render_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<(usize, usize)>), TemplateError> {
        let text = self.render_marked(messages, add_generation_prompt)?;
        if !self.generation {
            return Ok((text, Vec::new()));
        }
        if let Some(i) = messages.iter().position(|m| super::generation::has_marker(&m.content)) {
            return Err(TemplateError(format!(
                "message {i} contains U+F8F0 or U+F8F1, which mark {{% generation %}} blocks"
            )));
        }
        super::generation::extract(&text).map_err(TemplateError)
    }

    fn render_marked(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut map = IndexMap::new();
                map.insert(Value::from("role"), Value::from(m.role.as_str()));
                map.insert(Value::from("content"), Value::from(m.content.as_str()));
                Value::from(map)
            })
            .collect();
        let mut ctx: IndexMap<Value, Value> = IndexMap::new();
        for (k, v) in &self.special {
            ctx.insert(Value::from(k.as_str()), Value::from(v.as_str()));
        }
        ctx.insert(Value::from("messages"), Value::from(msgs));
        ctx.insert(Value::from("tools"), Value::from(()));
        ctx.insert(Value::from("documents"), Value::from(()));
        ctx.insert(Value::from("add_generation_prompt"), Value::from(add_generation_prompt));
        let tmpl = self.env.get_template("chat").map_err(|e| TemplateError(describe(&e)))?;
        tmpl.render(Value::from(ctx)).map_err(|e| TemplateError(describe(&e)))
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
/// sort_keys=sort_keys)`, so no HTML escaping and Python's spacing.
fn tojson(value: Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mut indent: Option<Value> = args.first().cloned();
    if let Some(v) = kwargs.get::<Option<Value>>("indent")? {
        indent = Some(v);
    }
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(v.as_usize().ok_or_else(|| {
                Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or string")
            })?)),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let dumper = PyJson { indent, item_sep, key_sep, sort_keys, ensure_ascii };
    let mut out = String::new();
    dumper.dump(&value, 0, &mut out)?;
    Ok(Value::from(out))
}

struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn dump(&self, v: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
        use minijinja::value::ValueKind as K;
        match v.kind() {
            K::Undefined | K::None => out.push_str("null"),
            K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            K::Number => match v.as_i64() {
                Some(i) if !v.to_string().contains(['.', 'e', 'E', 'n', 'N']) => write!(out, "{i}").unwrap(),
                _ => out.push_str(&py_float_repr(f64::try_from(v.clone())?)),
            },
            K::String => self.string(v.as_str().unwrap_or_default(), out),
            K::Seq | K::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.dump(item, depth + 1, out)?;
                }
                self.newline(depth, out);
                out.push(']');
            }
            K::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|a| a.to_string());
                }
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    // Python converts non-string keys (ints, bools, None) to their JSON text.
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => {
                            let mut s = String::new();
                            self.dump(k, depth, &mut s)?;
                            s
                        }
                    };
                    self.string(&key, out);
                    out.push_str(&self.key_sep);
                    self.dump(&v.get_item(k)?, depth + 1, out)?;
                }
                self.newline(depth, out);
                out.push('}');
            }
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: Object of type {other} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
                c if self.ensure_ascii && (c as u32) > 0x7e => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        write!(out, "\\u{unit:04x}").unwrap();
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub(crate) fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits as d.ddde±x.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{x}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// The subset of C `strftime` that chat templates use (`%d %b %Y` in Llama 3.x), in UTC.
pub fn strftime(fmt: &str, unix: i64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = time::civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let yday = days - time::days_from_civil(y, 1, 1);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => write!(out, "{d:02}").unwrap(),
            // glibc's "no padding" flag, e.g. `%-d`.
            Some('-') => match chars.next() {
                Some('d') => write!(out, "{d}").unwrap(),
                Some('m') => write!(out, "{m}").unwrap(),
                Some('H') => write!(out, "{hh}").unwrap(),
                other => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "strftime_now: unsupported directive %-{}",
                            other.map(String::from).unwrap_or_default()
                        ),
                    ));
                }
            },
            Some('m') => write!(out, "{m:02}").unwrap(),
            Some('Y') => write!(out, "{y}").unwrap(),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)).unwrap(),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => write!(out, "{hh:02}").unwrap(),
            Some('I') => write!(out, "{:02}", if hh % 12 == 0 { 12 } else { hh % 12 }).unwrap(),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{mm:02}").unwrap(),
            Some('S') => write!(out, "{ss:02}").unwrap(),
            Some('j') => write!(out, "{:03}", yday + 1).unwrap(),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e300, "1.5e+300"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(py_float_repr(x), want);
        }
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC = 1721952000 (the default date in Llama 3.1's template).
        assert_eq!(strftime("%d %b %Y", 1_721_952_000).unwrap(), "26 Jul 2024");
        assert_eq!(strftime("%A %B %j %H:%M:%S", 1_721_952_000 + 3661).unwrap(), "Friday July 208 01:01:01");
        assert_eq!(strftime("%Y-%m-%d", 0).unwrap(), "1970-01-01");
        assert_eq!(strftime("%j", 951_782_400).unwrap(), "060"); // 2000-02-29
        assert_eq!(strftime("%-d/%-m", 1_721_952_000).unwrap(), "26/7");
        assert!(strftime("%Q", 0).is_err());
    }
}
