//! `core-cli plan` end to end: lengths files, data files, JSON reports and plan files.

mod common;

use std::collections::HashSet;

use common::{fails, longalign_lengths, ok};
use serde_json::Value;

#[test]
fn longalign_mix_packs_to_over_99_5_percent_and_compares_strategies() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("mix.txt"), longalign_lengths(10_000, 10_000, 7)).unwrap();
    let args = [
        "plan",
        "--lengths",
        "mix.txt",
        "--strategy",
        "pack",
        "--algorithm",
        "ffd",
        "--max-tokens",
        "65536",
        "--json",
    ];
    let v: Value = serde_json::from_str(&ok(d.path(), &args)).unwrap();
    for field in [
        "steps",
        "rows",
        "sequences",
        "useful_tokens",
        "capacity_tokens",
        "fill",
        "padding_fraction",
        "attn_work",
        "attn_work_dense",
        "truncated",
        "dropped",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    let fill = v["fill"].as_f64().unwrap();
    assert!(fill >= 0.995, "FFD fill {fill}");
    assert_eq!(v["sequences"], 20_000);
    let (useful, cap) = (v["useful_tokens"].as_f64().unwrap(), v["capacity_tokens"].as_f64().unwrap());
    assert!((fill - useful / cap).abs() < 1e-12);
    assert!((v["padding_fraction"].as_f64().unwrap() - (1.0 - fill)).abs() < 1e-12);

    // --compare: all three in one table, and in one JSON object.
    let text = ok(d.path(), &["plan", "--lengths", "mix.txt", "--max-tokens", "65536", "--compare"]);
    let header = text
        .lines()
        .find(|l| l.contains("naive") && l.contains("sorted") && l.contains("pack") && !l.contains(':'))
        .unwrap();
    assert!(header.trim_start().starts_with("naive"), "{text}");
    assert!(text.contains("padding %") && text.contains("fill %"), "{text}");
    let v: Value = serde_json::from_str(&ok(
        d.path(),
        &["plan", "--lengths", "mix.txt", "--max-tokens", "65536", "--compare", "--json"],
    ))
    .unwrap();
    let pad = |s: &str| v[s]["padding_fraction"].as_f64().unwrap();
    assert!(pad("naive") > pad("sorted") && pad("sorted") > pad("pack"), "{v}");
    assert!(v["pack"]["fill"].as_f64().unwrap() >= 0.995);
}

#[test]
fn plan_file_is_complete_and_deterministic() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("l.txt"), longalign_lengths(50, 200, 3)).unwrap();
    let base = ["plan", "--lengths", "l.txt", "--max-tokens", "65536", "--devices", "2", "--accum", "3"];
    let run = |seed: &str, out: &str| {
        let mut a = base.to_vec();
        a.extend(["--seed", seed, "--out", out]);
        ok(d.path(), &a);
        std::fs::read(d.path().join(out)).unwrap()
    };
    let (a, b, c) = (run("5", "a.jsonl"), run("5", "b.jsonl"), run("6", "c.jsonl"));
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another order");

    let mut seen = HashSet::new();
    let mut step_weight: std::collections::BTreeMap<u64, f64> = Default::default();
    let lengths: Vec<Vec<u32>> = std::fs::read_to_string(d.path().join("l.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    for line in String::from_utf8(a).unwrap().lines() {
        let mb: Value = serde_json::from_str(line).unwrap();
        assert!(mb["device"].as_u64().unwrap() < 2 && mb["micro"].as_u64().unwrap() < 3);
        for row in mb["rows"].as_array().unwrap() {
            let ids: Vec<usize> = serde_json::from_value(row["ids"].clone()).unwrap();
            let cu: Vec<u32> = serde_json::from_value(row["cu_seqlens"].clone()).unwrap();
            let w: Vec<f64> = serde_json::from_value(row["weights"].clone()).unwrap();
            assert_eq!(cu.len(), ids.len() + 1);
            assert!(*cu.last().unwrap() <= 65536);
            for (k, &id) in ids.iter().enumerate() {
                assert!(seen.insert(id), "id {id} twice");
                assert_eq!(cu[k + 1] - cu[k], lengths[id][0], "length of item {id}");
                *step_weight.entry(mb["step"].as_u64().unwrap()).or_default() += w[k] * lengths[id][1] as f64;
            }
        }
    }
    assert_eq!(seen.len(), 250, "every line of the lengths file is planned once");
    for (step, total) in step_weight {
        assert!((total - 1.0).abs() < 1e-5, "step {step}: weights sum to {total}");
    }
}

#[test]
fn plans_real_data_files_with_a_model_tokenizer_dir() {
    let d = tempfile::tempdir().unwrap();
    common::builtin_tokenizer_dir(&d.path().join("tok"));
    let data = [
        r#"{"conversations":[{"from":"human","value":"hello there"},{"from":"gpt","value":"hi"}],"source":"sharegpt"}"#,
        r#"{"instruction":"Add","input":"1 and 2","output":"3"}"#,
        r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a long answer"}]}"#,
    ]
    .join("\n");
    std::fs::write(d.path().join("d.jsonl"), data).unwrap();
    let v: Value = serde_json::from_str(&ok(
        d.path(),
        &["plan", "--data", "d.jsonl", "--tokenizer", "tok", "--max-tokens", "64", "--json"],
    ))
    .unwrap();
    assert_eq!(v["sequences"], 3);
    // Targets are each answer + `<|im_end|>` + "\n" (byte tokens): (2+2) + (1+2) + (13+2).
    assert_eq!(v["target_tokens"], 22);
    let s: Value =
        serde_json::from_str(&ok(d.path(), &["stats", "--data", "d.jsonl", "--tokenizer", "tok", "--json"]))
            .unwrap();
    assert_eq!(s["examples"], 3);
    assert_eq!(s["formats"]["sharegpt"], 1);
    assert_eq!(s["formats"]["alpaca"], 1);
    assert_eq!(s["target_tokens"], 22);
    assert_eq!(s["sources"]["sharegpt"]["examples"], 1);
}

#[test]
fn overlong_sequences_follow_the_policy_and_are_counted() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("l.txt"), "100 10\n5000 100\n200\n").unwrap();
    let run = |policy: &str| -> Value {
        serde_json::from_str(&ok(
            d.path(),
            &["plan", "--lengths", "l.txt", "--max-tokens", "1000", "--overlong", policy, "--json"],
        ))
        .unwrap()
    };
    let t = run("truncate");
    assert_eq!(
        (t["truncated"].as_u64(), t["dropped"].as_u64(), t["sequences"].as_u64()),
        (Some(1), Some(0), Some(3))
    );
    let dr = run("drop");
    assert_eq!(
        (dr["truncated"].as_u64(), dr["dropped"].as_u64(), dr["sequences"].as_u64()),
        (Some(0), Some(1), Some(2))
    );
    let e = fails(d.path(), &["plan", "--lengths", "l.txt", "--max-tokens", "1000", "--overlong", "error"]);
    assert!(e.contains("item 1 has 5000 tokens, over the limit of 1000"), "{e}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("l.txt"), "100\n12x\n").unwrap();
    let e = fails(d.path(), &["plan", "--lengths", "l.txt"]);
    assert!(e.contains("l.txt:2: total_len") && e.contains("12x"), "{e}");
    std::fs::write(d.path().join("l.txt"), "10 20\n").unwrap();
    assert!(
        fails(d.path(), &["plan", "--lengths", "l.txt"])
            .contains("l.txt:1: target_len: 20 exceeds total_len 10")
    );
    std::fs::write(d.path().join("l.txt"), "10\n\n").unwrap();
    assert!(fails(d.path(), &["plan", "--lengths", "l.txt"]).contains("l.txt:2: empty line"));
    assert!(fails(d.path(), &["plan", "--lengths", "missing.txt"]).contains("missing.txt"));
    assert!(fails(d.path(), &["plan", "--lengths", "l.txt", "--strategy", "zigzag"]).contains("zigzag"));
    assert!(fails(d.path(), &["plan", "--tokenizer", "nodir"]).contains("nodir: not a directory"));

    let data = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n{\"messages\":[{\"role\":\"robot\",\"content\":\"q\"}]}\nnot json\n";
    std::fs::write(d.path().join("d.jsonl"), data).unwrap();
    let e = fails(d.path(), &["stats", "--data", "d.jsonl"]);
    assert!(e.contains("d.jsonl:2: messages[0].role: unknown role \"robot\""), "{e}");
    let s: Value =
        serde_json::from_str(&ok(d.path(), &["stats", "--data", "d.jsonl", "--skip-invalid", "--json"]))
            .unwrap();
    assert_eq!((s["examples"].as_u64(), s["skipped"].as_u64()), (Some(1), Some(2)));
    assert!(s["skipped_reasons"][1].as_str().unwrap().starts_with("d.jsonl:3: -: invalid JSON"), "{s}");
    let text = ok(d.path(), &["stats", "--data", "d.jsonl", "--skip-invalid"]);
    assert!(text.contains("2 skipped") && text.contains("skipped d.jsonl:2"), "{text}");
}

/// `data mix`: per-source weights (down- and up-sampling), formats normalised to messages with
/// their source, a report, and bad specs refused.
#[test]
fn data_mix_weights_sources_and_normalises_formats() {
    let d = tempfile::tempdir().unwrap();
    let long: String = (0..10)
        .map(|i| {
            serde_json::json!({"messages": [{"role": "user", "content": format!("doc {i}")},
                                            {"role": "assistant", "content": "ok"}]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(d.path().join("long.jsonl"), long).unwrap();
    let sg: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            serde_json::json!({"conversations": [{"from": "human", "value": format!("hi {i}")},
                                                      {"from": "gpt", "value": "hello"}]})
        })
        .collect();
    std::fs::write(d.path().join("chat.json"), serde_json::to_string(&sg).unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(
        d.path(),
        &["data", "mix", "long.jsonl:0.5", "chat.json:2.5", "--out", "mix.jsonl", "--json"],
    ))
    .unwrap();
    assert_eq!(v["examples"], 5 + 10, "{v}");
    assert_eq!(v["inputs"][0]["taken"], 5);
    assert_eq!(v["inputs"][1]["taken"], 10);
    let text = std::fs::read_to_string(d.path().join("mix.jsonl")).unwrap();
    let sources: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["meta"]["source"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sources.iter().filter(|s| *s == "long").count(), 5);
    assert_eq!(sources.iter().filter(|s| *s == "chat").count(), 10);
    let first_chat = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["meta"]["source"] == "chat")
        .unwrap();
    assert_eq!(
        first_chat["messages"][1],
        serde_json::json!({"role": "assistant", "content": "hello"}),
        "ShareGPT became messages"
    );
    // The mix is valid training input.
    ok(d.path(), &["stats", "--data", "mix.jsonl"]);
    assert!(fails(d.path(), &["data", "mix", "long.jsonl:x", "--out", "m.jsonl"]).contains("weight"));
}

/// `data dedupe`: edited and exact copies of a long document are dropped, others kept.
#[test]
fn data_dedupe_drops_edited_and_exact_copies() {
    let d = tempfile::tempdir().unwrap();
    let doc = |seed: u64| -> String {
        let mut x = seed;
        (0..2000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("w{}", (x >> 33) % 1500)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (a, b) = (doc(1), doc(2));
    let edited = format!("Preface added. {}", a.replacen("w", "v", 3));
    let rec = |text: &str| {
        serde_json::json!({"messages": [{"role": "user", "content": format!("{text}\nSummarise.")},
                                        {"role": "assistant", "content": "A summary."}]})
        .to_string()
            + "\n"
    };
    let file = [rec(&a), rec(&b), rec(&edited), rec(&a)].concat();
    std::fs::write(d.path().join("docs.jsonl"), file).unwrap();
    let v: Value = serde_json::from_str(&ok(
        d.path(),
        &["data", "dedupe", "--data", "docs.jsonl", "--out", "kept.jsonl", "--json"],
    ))
    .unwrap();
    assert_eq!(
        (v["kept"].as_u64(), v["exact_duplicates"].as_u64(), v["near_duplicates"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["dropped"][0]["line"], 3);
    assert_eq!(v["dropped"][0]["duplicate_of_line"], 1);
    assert_eq!(std::fs::read_to_string(d.path().join("kept.jsonl")).unwrap().lines().count(), 2);
}

/// Qwen3's real template renders earlier assistant turns without their reasoning block, so no
/// prefix finds their targets: `--turns` decides (split by default), `stats` says what it cost,
/// `train` trains on it and records the choice.
#[test]
fn templates_that_are_not_prefix_stable_follow_the_turn_policy() {
    let d = tempfile::tempdir().unwrap();
    common::builtin_tokenizer_dir(&d.path().join("tok"));
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat_templates/qwen3.jinja");
    let conv = |i: usize| {
        serde_json::json!({"messages": [
            {"role": "user", "content": format!("question {i}")},
            {"role": "assistant", "content": format!("<think>\nreasoning {i}\n</think>\n\nanswer {i}")},
            {"role": "user", "content": "and then?"},
            {"role": "assistant", "content": format!("second answer {i}")},
        ]})
        .to_string()
    };
    let single = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
    std::fs::write(d.path().join("d.jsonl"), format!("{}\n{}\n{}\n{single}\n", conv(1), conv(2), conv(3)))
        .unwrap();
    let args = ["--data", "d.jsonl", "--tokenizer", "tok", "--chat-template", template];
    let stats = |extra: &[&str]| -> Value {
        let a: Vec<&str> = ["stats"].iter().chain(&args).chain(extra).chain(&["--json"]).copied().collect();
        serde_json::from_str(&ok(d.path(), &a)).unwrap()
    };
    // split (the default): each two-turn conversation becomes two sequences.
    let s = stats(&[]);
    assert_eq!(s["examples"], 7, "{s}");
    assert_eq!(s["not_prefix_stable"]["conversations"], 3);
    assert_eq!(s["not_prefix_stable"]["sequences"], 6);
    assert!(s["not_prefix_stable"]["extra_tokens"].as_u64().unwrap() > 3 * 20);
    let text =
        ok(d.path(), &["stats", "--data", "d.jsonl", "--tokenizer", "tok", "--chat-template", template]);
    assert!(text.contains("3 conversations not prefix-stable") && text.contains("--turns split"), "{text}");
    // last: one sequence each, fewer targets.
    let l = stats(&["--turns", "last"]);
    assert_eq!((l["examples"].as_u64(), l["not_prefix_stable"]["sequences"].as_u64()), (Some(4), Some(3)));
    assert!(l["target_tokens"].as_u64() < s["target_tokens"].as_u64());
    // error: the old refusal, naming file and line.
    let a: Vec<&str> = ["stats"].iter().chain(&args).chain(&["--turns", "error"]).copied().collect();
    let e = fails(d.path(), &a);
    assert!(e.contains("d.jsonl:1") && e.contains("not prefix-stable"), "{e}");
    // plan and train use the same sequences; the run records the policy.
    let a: Vec<&str> =
        ["plan"].iter().chain(&args).chain(&["--max-tokens", "512", "--json"]).copied().collect();
    let p: Value = serde_json::from_str(&ok(d.path(), &a)).unwrap();
    assert_eq!(p["sequences"], 7);
    assert_eq!(p["target_tokens"], s["target_tokens"]);
    let a: Vec<&str> = ["train"]
        .iter()
        .chain(&args)
        .chain(&["--max-tokens", "512", "--steps", "2", "--quiet", "--out", "run"])
        .copied()
        .collect();
    ok(d.path(), &a);
    let cfg = std::fs::read_to_string(d.path().join("run/config.toml")).unwrap();
    assert!(cfg.contains("turns = \"split\""), "{cfg}");
    // score: one line per training sequence, each with its own targets.
    let a = [
        "score",
        "--model",
        "run/export",
        "--tokenizer",
        "tok",
        "--chat-template",
        template,
        "--data",
        "d.jsonl",
    ];
    let lines: Vec<Value> = ok(d.path(), &a).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 7);
    let targets: u64 = lines.iter().map(|l| l["target_tokens"].as_u64().unwrap()).sum();
    assert_eq!(Some(targets), s["target_tokens"].as_u64());
}
