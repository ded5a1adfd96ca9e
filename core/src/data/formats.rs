//! Readers for the conversation formats users have.
//!
//! | format   | one record                                                                         |
//! |----------|------------------------------------------------------------------------------------|
//! | messages | `{"messages":[{"role":"system|user|assistant","content":"…"}, …]}` (LongAlign, OpenAI) |
//! | sharegpt | `{"conversations":[{"from":"system|human|gpt","value":"…"}, …]}`                    |
//! | alpaca   | `{"instruction":"…","input":"…","output":"…"}` (+ optional `system`, `history`)      |
//!
//! Files are JSON lines (`.jsonl`) or one JSON array (`.json`), told apart by their first character,
//! not their name. The format is detected per record unless forced. A bad record is an error naming
//! file, line and field; with `skip_invalid` it is skipped and counted instead. Nothing is dropped
//! silently.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use serde_json::value::RawValue;

use super::{Example, Message, Role};

/// Input format of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Messages,
    ShareGpt,
    Alpaca,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Messages => "messages",
            Format::ShareGpt => "sharegpt",
            Format::Alpaca => "alpaca",
        }
    }

    /// Parses a `--format` value: `auto` is `None`.
    pub fn parse_option(s: &str) -> Result<Option<Format>, String> {
        match s {
            "auto" => Ok(None),
            "messages" | "openai" | "longalign" => Ok(Some(Format::Messages)),
            "sharegpt" => Ok(Some(Format::ShareGpt)),
            "alpaca" => Ok(Some(Format::Alpaca)),
            _ => Err(format!("unknown format {s:?} (expected auto, messages, sharegpt or alpaca)")),
        }
    }
}

/// A bad record: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{file}:{line}: {field}: {message}")]
pub struct DataError {
    pub file: String,
    /// 1-based line of the record (for a JSON array, the line where the element starts).
    pub line: usize,
    /// JSON path of the offending field (`messages[2].role`), or `-` for the whole record.
    pub field: String,
    pub message: String,
}

/// What reading a file produced.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    /// Valid examples with the 1-based line they start on.
    pub examples: Vec<(usize, Example)>,
    pub formats: BTreeMap<Format, usize>,
    /// Records skipped because of `skip_invalid`, each with its reason.
    pub skipped: Vec<DataError>,
}

/// Reads a `.jsonl` or `.json` file. Errors on the first bad record unless `skip_invalid`.
pub fn read_file(path: &Path, format: Option<Format>, skip_invalid: bool) -> Result<ReadReport, DataError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DataError {
        file: name.clone(),
        line: 0,
        field: "-".into(),
        message: format!("cannot read: {e}"),
    })?;
    read_str(&name, &text, format, skip_invalid)
}

/// Reads records from text already in memory (`name` is used in errors).
pub fn read_str(
    name: &str,
    text: &str,
    format: Option<Format>,
    skip_invalid: bool,
) -> Result<ReadReport, DataError> {
    let mut report = ReadReport::default();
    let handle = |line: usize, raw: &str, report: &mut ReadReport| -> Result<(), DataError> {
        match parse_record(raw, format) {
            Ok((fmt, ex)) => {
                *report.formats.entry(fmt).or_default() += 1;
                report.examples.push((line, ex));
                Ok(())
            }
            Err((field, message)) => {
                let err = DataError { file: name.to_string(), line, field, message };
                if skip_invalid {
                    report.skipped.push(err);
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    };
    let body = text.trim_start_matches('\u{feff}');
    if body.trim_start().starts_with('[') {
        // A JSON array: parse the array once, keeping each element's raw text so errors can name
        // the line it starts on.
        let elems: Vec<&RawValue> = serde_json::from_str(body).map_err(|e| DataError {
            file: name.to_string(),
            line: e.line(),
            field: "-".into(),
            message: format!("invalid JSON array: {e}"),
        })?;
        let base = body.as_ptr() as usize;
        for raw in elems {
            let offset = raw.get().as_ptr() as usize - base;
            let line = 1 + body[..offset].bytes().filter(|&b| b == b'\n').count();
            handle(line, raw.get(), &mut report)?;
        }
    } else {
        for (i, raw) in body.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            handle(i + 1, raw, &mut report)?;
        }
    }
    Ok(report)
}

type FieldError = (String, String);

fn field_err(field: impl Into<String>, msg: impl Into<String>) -> FieldError {
    (field.into(), msg.into())
}

/// Parses one record. Errors carry (field path, message).
pub fn parse_record(raw: &str, format: Option<Format>) -> Result<(Format, Example), FieldError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| field_err("-", format!("invalid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| field_err("-", "a record must be a JSON object"))?;
    let fmt = match format {
        Some(f) => f,
        None if obj.contains_key("messages") => Format::Messages,
        None if obj.contains_key("conversations") => Format::ShareGpt,
        None if obj.contains_key("instruction") => Format::Alpaca,
        None => {
            return Err(field_err(
                "-",
                "unknown format: no `messages` (LongAlign/OpenAI), `conversations` (ShareGPT) or `instruction` (Alpaca) field",
            ));
        }
    };
    let messages = match fmt {
        Format::Messages => turns(obj, "messages", "role", "content", |r| match r {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        })?,
        Format::ShareGpt => turns(obj, "conversations", "from", "value", |r| match r {
            "system" => Some(Role::System),
            "human" | "user" => Some(Role::User),
            "gpt" | "assistant" | "chatgpt" | "bard" => Some(Role::Assistant),
            _ => None,
        })?,
        Format::Alpaca => alpaca(obj)?,
    };
    validate(&messages, fmt)?;
    let source = obj
        .get("meta")
        .and_then(|m| m.get("source"))
        .or_else(|| obj.get("source"))
        .and_then(|s| s.as_str())
        .map(str::to_string);
    Ok((fmt, Example { messages, source }))
}

fn turns(
    obj: &serde_json::Map<String, Value>,
    list: &str,
    role_key: &str,
    content_key: &str,
    role_of: impl Fn(&str) -> Option<Role>,
) -> Result<Vec<Message>, FieldError> {
    let arr = obj
        .get(list)
        .ok_or_else(|| field_err(list, "missing"))?
        .as_array()
        .ok_or_else(|| field_err(list, "must be a list of turns"))?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, turn) in arr.iter().enumerate() {
        let at = |k: &str| format!("{list}[{i}].{k}");
        let turn =
            turn.as_object().ok_or_else(|| field_err(format!("{list}[{i}]"), "a turn must be an object"))?;
        let role_str = turn
            .get(role_key)
            .ok_or_else(|| field_err(at(role_key), "missing"))?
            .as_str()
            .ok_or_else(|| field_err(at(role_key), "must be a string"))?;
        let role = role_of(role_str).ok_or_else(|| {
            let expected = if list == "messages" { "system, user, assistant" } else { "system, human, gpt" };
            field_err(at(role_key), format!("unknown role {role_str:?} (expected {expected})"))
        })?;
        let content = text_content(turn.get(content_key)).map_err(|m| field_err(at(content_key), m))?;
        out.push(Message { role, content });
    }
    Ok(out)
}

/// A string, or OpenAI's list of parts where every part is `{"type":"text","text":…}`.
pub fn text_content(v: Option<&Value>) -> Result<String, String> {
    match v {
        None => Err("missing".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => {
                        return Err(format!(
                            "part {j}: only text parts ({{\"type\":\"text\",\"text\":…}}) are supported"
                        ));
                    }
                }
            }
            Ok(s)
        }
        Some(other) => Err(format!("must be a string, not {}", json_kind(other))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn alpaca(obj: &serde_json::Map<String, Value>) -> Result<Vec<Message>, FieldError> {
    let get = |k: &str, required: bool| -> Result<String, FieldError> {
        match obj.get(k) {
            None | Some(Value::Null) if !required => Ok(String::new()),
            None => Err(field_err(k, "missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(field_err(k, format!("must be a string, not {}", json_kind(other)))),
        }
    };
    let (instruction, input, output) =
        (get("instruction", true)?, get("input", false)?, get("output", true)?);
    let system = get("system", false)?;
    let mut out = Vec::new();
    if !system.is_empty() {
        out.push(Message::new(Role::System, system));
    }
    // LLaMA-Factory's alpaca `history`: earlier [user, assistant] pairs.
    if let Some(h) = obj.get("history").filter(|h| !h.is_null()) {
        let pairs =
            h.as_array().ok_or_else(|| field_err("history", "must be a list of [user, assistant] pairs"))?;
        for (i, pair) in pairs.iter().enumerate() {
            match pair.as_array().map(|p| p.as_slice()) {
                Some([Value::String(q), Value::String(a)]) => {
                    out.push(Message::new(Role::User, q.clone()));
                    out.push(Message::new(Role::Assistant, a.clone()));
                }
                _ => {
                    return Err(field_err(
                        format!("history[{i}]"),
                        "must be a [user, assistant] pair of strings",
                    ));
                }
            }
        }
    }
    // Instruction and input are joined by a blank line, as the Alpaca prompt separates them.
    let user = if input.is_empty() { instruction } else { format!("{instruction}\n\n{input}") };
    out.push(Message::new(Role::User, user));
    out.push(Message::new(Role::Assistant, output));
    Ok(out)
}

fn validate(messages: &[Message], fmt: Format) -> Result<(), FieldError> {
    let (list, content) = match fmt {
        Format::Messages => ("messages", "content"),
        Format::ShareGpt => ("conversations", "value"),
        Format::Alpaca => ("", "output"),
    };
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(field_err(list, "no assistant turn: nothing to learn from"));
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role == Role::Assistant && m.content.trim().is_empty() {
            let field =
                if fmt == Format::Alpaca { content.to_string() } else { format!("{list}[{i}].{content}") };
            return Err(field_err(field, "empty assistant content"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &str) -> Result<(Format, Example), FieldError> {
        parse_record(raw, None)
    }

    #[test]
    fn three_formats_detected() {
        let (f, ex) = one(r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"meta":{"source":"book"}}"#).unwrap();
        assert_eq!(f, Format::Messages);
        assert_eq!(ex.messages.len(), 3);
        assert_eq!(ex.source.as_deref(), Some("book"));
        let (f, ex) = one(
            r#"{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}],"source":"web"}"#,
        )
        .unwrap();
        assert_eq!(f, Format::ShareGpt);
        assert_eq!(ex.messages[1], Message::new(Role::Assistant, "a"));
        assert_eq!(ex.source.as_deref(), Some("web"));
        let (f, ex) = one(r#"{"instruction":"Sum","input":"1 2","output":"3","system":"be brief","history":[["hi","hello"]]}"#).unwrap();
        assert_eq!(f, Format::Alpaca);
        assert_eq!(
            ex.messages,
            vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::User, "hi"),
                Message::new(Role::Assistant, "hello"),
                Message::new(Role::User, "Sum\n\n1 2"),
                Message::new(Role::Assistant, "3"),
            ]
        );
    }

    #[test]
    fn openai_text_parts() {
        let (_, ex) = one(r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"c"}]}"#).unwrap();
        assert_eq!(ex.messages[0].content, "ab");
        let e = one(r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]},{"role":"assistant","content":"c"}]}"#).unwrap_err();
        assert_eq!(e.0, "messages[0].content");
    }

    #[test]
    fn bad_records_name_the_field() {
        let cases = [
            (r#"{"messages":[{"role":"bot","content":"x"}]}"#, "messages[0].role", "unknown role"),
            (r#"{"messages":[{"role":"user","content":"q"}]}"#, "messages", "no assistant turn"),
            (
                r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"  "}]}"#,
                "messages[1].content",
                "empty assistant",
            ),
            (
                r#"{"messages":[{"role":"user","content":5},{"role":"assistant","content":"a"}]}"#,
                "messages[0].content",
                "not a number",
            ),
            (
                r#"{"conversations":[{"from":"human","value":"q"},{"from":"robot","value":"a"}]}"#,
                "conversations[1].from",
                "unknown role",
            ),
            (r#"{"instruction":"i","output":""}"#, "output", "empty assistant"),
            (r#"{"instruction":"i"}"#, "output", "missing"),
            (r#"{"text":"hello"}"#, "-", "unknown format"),
            (r#"{"messages": [}"#, "-", "invalid JSON"),
            (r#"[1,2]"#, "-", "JSON object"),
        ];
        for (raw, field, msg) in cases {
            let (f, m) = one(raw).unwrap_err();
            assert_eq!(f, field, "{raw}");
            assert!(m.contains(msg), "{raw}: {m}");
        }
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let text = "{\"instruction\":\"a\",\"output\":\"b\"}\n\n{\"messages\":[{\"role\":\"user\"}]}\n";
        let e = read_str("d.jsonl", text, None, false).unwrap_err();
        assert_eq!(e.to_string(), "d.jsonl:3: messages[0].content: missing");
        let r = read_str("d.jsonl", text, None, true).unwrap();
        assert_eq!(r.examples.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].line, 3);
    }

    #[test]
    fn json_array_with_element_lines() {
        let text = "[\n  {\"instruction\":\"a\",\"output\":\"b\"},\n  {\"conversations\":[]}\n]";
        let e = read_str("d.json", text, None, false).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "conversations"));
        let r = read_str("d.json", text, None, true).unwrap();
        assert_eq!(r.examples[0].0, 2);
        let e = read_str("d.json", "[{\"a\":1},", None, true).unwrap_err();
        assert!(e.message.contains("invalid JSON array"));
    }

    #[test]
    fn forced_format_is_enforced() {
        let raw = r#"{"instruction":"i","output":"o"}"#;
        let (f, _) = parse_record(raw, Some(Format::Alpaca)).unwrap();
        assert_eq!(f, Format::Alpaca);
        assert_eq!(parse_record(raw, Some(Format::Messages)).unwrap_err().0, "messages");
    }
}
