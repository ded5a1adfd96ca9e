//! `core-cli build-data` end to end against a real HTTP generator on 127.0.0.1 that misbehaves the
//! way hosted LLM endpoints do: 500s, malformed question lists, empty and cut-off answers.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{fails, ok};
use longalign::util::rng::SplitMix64;
use serde_json::{Value, json};

/// A scripted generator. Document k (its text starts "DOCUMENT k.") gets:
/// k = 0: question lists that are never lists → skipped as malformed_questions;
/// k = 1: empty answers → skipped as empty_answer;
/// k = 4: answers cut off at max_tokens → skipped as truncated_answer;
/// k % 3 == 2: one malformed list first, then a good one (the retry recovers);
/// and every 4th request of all is an HTTP 500 (the client's retry recovers).
#[derive(Default)]
struct Generator {
    requests: AtomicU64,
    delay_ms: AtomicU64,
    first_seen: Mutex<HashSet<u64>>,
}

async fn generate(State(g): State<Arc<Generator>>, Json(req): Json<Value>) -> Response {
    let n = g.requests.fetch_add(1, Ordering::SeqCst);
    let delay = g.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if n % 4 == 3 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
    }
    let text =
        req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("");
    let k: u64 = text
        .strip_prefix("DOCUMENT ")
        .and_then(|r| r.split('.').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    let asking = text.contains("as a numbered list");
    let (content, finish) = if asking {
        let retry_once = k % 3 == 2 && g.first_seen.lock().unwrap().insert(k);
        if k == 0 || retry_once {
            ("I am sorry, but I would rather summarise the text in prose.".to_string(), "stop")
        } else {
            let qs: Vec<String> = (1..=5)
                .map(|i| format!("{i}. What does part {i} of document {k} say about topic {}?", i * 7))
                .collect();
            (format!("Here are the questions:\n\n{}\n", qs.join("\n")), "stop")
        }
    } else if k == 1 {
        ("   ".to_string(), "stop")
    } else if k == 4 {
        ("This answer runs on and on and".to_string(), "length")
    } else {
        let q = text.rsplit("\n\n").next().unwrap_or("");
        (format!("Document {k} answers \"{q}\" as follows: it is all in part two."), "stop")
    };
    Json(json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": text.len() / 4, "completion_tokens": content.len() / 4},
    }))
    .into_response()
}

fn start(g: Arc<Generator>) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(generate)).with_state(g);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rt)
}

/// Random prose of `words` words from a 3,000-word vocabulary, headed "DOCUMENT k.".
fn doc(k: u64, words: usize) -> String {
    let mut g = SplitMix64::new(1000 + k);
    let body: Vec<String> = (0..words).map(|_| format!("w{}", g.below(3000))).collect();
    format!("DOCUMENT {k}. {}", body.join(" "))
}

/// Ten papers (.txt) and three web pages (.jsonl), plus a too-short paper and an edited copy of
/// paper 3 (a near duplicate).
fn corpus(dir: &Path) {
    let papers = dir.join("docs/papers");
    std::fs::create_dir_all(&papers).unwrap();
    for k in 0..10 {
        std::fs::write(papers.join(format!("p{k:02}.txt")), doc(k, 300 + 40 * k as usize)).unwrap();
    }
    std::fs::write(papers.join("short.txt"), "DOCUMENT 99. too short").unwrap();
    let mut copy = doc(3, 420);
    copy = copy.replacen("w", "changed w", 3);
    std::fs::write(papers.join("p03-copy.txt"), copy).unwrap();
    let web: Vec<String> = (10..13)
        .map(|k| json!({"text": doc(k, 350), "url": format!("https://example.org/{k}")}).to_string())
        .collect();
    std::fs::write(dir.join("docs/web.jsonl"), web.join("\n") + "\n{\"url\": \"no text here\"}\n").unwrap();
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn args(addr: SocketAddr, out: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "build-data",
        "--input",
        "paper=docs/papers",
        "--input",
        "docs/web.jsonl",
        "--out",
        out,
        "--endpoint",
        &format!("http://{addr}/v1"),
        "--model",
        "scripted",
        "--min-tokens",
        "1000",
        "--max-tokens",
        "20000",
        "--upsample",
        "0",
        "--backoff",
        "0.01",
        "--concurrency",
        "3",
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// (job, task type, question, answer) of every record.
fn content(recs: &[Value]) -> BTreeMap<String, (String, String, String)> {
    recs.iter()
        .map(|r| {
            let m = &r["meta"];
            (
                m["job"].as_str().unwrap().to_string(),
                (
                    m["task_type"].as_str().unwrap().to_string(),
                    m["question"].as_str().unwrap().to_string(),
                    r["messages"][1]["content"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn build_data_survives_a_flaky_generator_and_its_output_trains() {
    let d = tempfile::tempdir().unwrap();
    corpus(d.path());
    let (addr, _rt) = start(Arc::new(Generator::default()));
    let a = args(addr, "long.jsonl", &["--json", "--seed", "7"]);
    let report: Value =
        serde_json::from_str(&ok(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();

    // Input stage: 13 + 2 files' documents, one bad JSONL line named, one too short, one near duplicate.
    assert_eq!(report["documents"], 15, "{report}");
    assert_eq!(
        report["unreadable"][0]["location"].as_str().unwrap().rsplit('/').next().unwrap(),
        "web.jsonl:4"
    );
    assert_eq!(report["unreadable"][0]["reason"], "field `text`: missing");
    assert_eq!(report["sources"]["paper"]["too_short"], 1);
    assert_eq!(report["duplicates"].as_array().unwrap().len(), 1);
    assert_eq!(
        report["duplicates"][0]["doc_id"], "paper/p03.txt",
        "the copy sorts first, so the original is the repeat"
    );
    assert_eq!(report["duplicates"][0]["duplicate_of"], "paper/p03-copy.txt");
    assert_eq!(report["sources"]["web"]["kept"], 3);
    assert_eq!(report["jobs_planned"], 13);

    // Generation: three counted skips, ten examples, every 500 and malformed list recovered.
    assert_eq!(report["written"], 10, "{report}");
    assert_eq!(
        report["skipped"],
        json!({"empty_answer": 1, "malformed_questions": 1, "truncated_answer": 1})
    );
    assert!(report["requests"].as_u64().unwrap() >= 10 * 2 + 3, "{report}");
    assert!(report["prompt_tokens"].as_u64().unwrap() > 0);

    let recs = records(&d.path().join("long.jsonl"));
    assert_eq!(recs.len(), 10);
    let tasks = ["general", "summary", "reasoning", "extraction"];
    for r in &recs {
        let m = &r["meta"];
        let k: u64 = m["doc_id"]
            .as_str()
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .map_or(0, |s| s.parse().unwrap());
        assert!(![0, 1, 4].contains(&k) || m["source"] == "web", "{m}");
        assert!(tasks.contains(&m["task_type"].as_str().unwrap()), "{m}");
        let (t, dt, at) = (
            m["tokens"].as_u64().unwrap(),
            m["doc_tokens"].as_u64().unwrap(),
            m["answer_tokens"].as_u64().unwrap(),
        );
        assert!(at > 0 && t > dt + at, "{m}");
        assert_eq!(m["prompt_version"], "longalign-rs/self-instruct/1");
        let user = r["messages"][0]["content"].as_str().unwrap();
        let q = m["question"].as_str().unwrap();
        assert!(user.starts_with("DOCUMENT ") && user.ends_with(q), "{q}");
        assert!(r["messages"][1]["content"].as_str().unwrap().contains(q));
    }
    assert_eq!(report["output"]["examples"], 10);
    let by = &report["output"]["by_source_task"];
    let total: u64 = by
        .as_object()
        .unwrap()
        .values()
        .flat_map(|m| m.as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10);
    assert!(d.path().join("long.report.json").exists() && d.path().join("long.prompts.toml").exists());

    // The human summary names the skips; a second run refuses to clobber the output.
    let e = fails(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("long.jsonl exists: pass --resume"), "{e}");

    // The output is training data as it stands.
    let stats: Value =
        serde_json::from_str(&ok(d.path(), &["stats", "--data", "long.jsonl", "--json"])).unwrap();
    assert_eq!(stats["examples"], 10, "{stats}");
    ok(
        d.path(),
        &["train", "--data", "long.jsonl", "--max-tokens", "4096", "--steps", "1", "--quiet", "--out", "run"],
    );
    assert!(d.path().join("run/events.jsonl").exists());

    // A dry run plans without an endpoint.
    let plan = ok(
        d.path(),
        &[
            "build-data",
            "--input",
            "docs/papers",
            "--out",
            "x.jsonl",
            "--min-tokens",
            "1000",
            "--dry-run",
            "--examples",
            "20",
        ],
    );
    assert!(plan.contains("dry run: 20 jobs planned"), "{plan}");
}

#[test]
fn killed_build_resumes_without_duplicates_and_matches_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    corpus(d.path());

    // Uninterrupted reference run.
    let (addr, _rt) = start(Arc::new(Generator::default()));
    ok(d.path(), &args(addr, "full.jsonl", &["--quiet"]).iter().map(String::as_str).collect::<Vec<_>>());
    let full = content(&records(&d.path().join("full.jsonl")));
    assert_eq!(full.len(), 10);

    // A slow generator; kill the build once a few examples are down.
    let slow = Arc::new(Generator::default());
    slow.delay_ms.store(150, Ordering::SeqCst);
    let (addr2, _rt2) = start(slow.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_core-cli"))
        .args(args(addr2, "part.jsonl", &["--quiet"]))
        .current_dir(d.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = d.path().join("part.jsonl");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(&part).map(|t| t.lines().count()).unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = records(&part).len();
    assert!((3..10).contains(&before), "{before}");

    slow.delay_ms.store(0, Ordering::SeqCst);
    let a = args(addr2, "part.jsonl", &["--resume", "--json"]);
    let report: Value =
        serde_json::from_str(&ok(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(report["jobs_already_done"].as_u64().unwrap() as usize, before, "{report}");
    let recs = records(&part);
    let jobs: Vec<&str> = recs.iter().map(|r| r["meta"]["job"].as_str().unwrap()).collect();
    assert_eq!(jobs.iter().collect::<HashSet<_>>().len(), jobs.len(), "duplicates: {jobs:?}");
    // Same jobs, task types, questions and answers as the uninterrupted run: the picks are seeded by
    // job, not by timing or retries.
    assert_eq!(content(&recs), full);
}

#[test]
fn custom_task_types_from_a_prompt_file_and_the_overhead_benchmark() {
    let d = tempfile::tempdir().unwrap();
    corpus(d.path());
    let (addr, _rt) = start(Arc::new(Generator::default()));
    // The built-in file, printed, with its tasks replaced by one custom task type.
    let builtin = ok(d.path(), &["build-data", "--print-prompts"]);
    let head = &builtin[..builtin.find("\n[[task]]").unwrap() + 1];
    let custom = format!(
        "{head}[[task]]\nname = \"clauses\"\nweight = 1.0\ninstruction = \"Propose questions about the obligations each party takes on.\"\n"
    );
    std::fs::write(d.path().join("legal.toml"), custom).unwrap();
    let a = args(addr, "legal.jsonl", &["--prompts", "legal.toml", "--json"]);
    let report: Value =
        serde_json::from_str(&ok(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(report["written"], 10, "{report}");
    let recs = records(&d.path().join("legal.jsonl"));
    assert!(recs.iter().all(|r| r["meta"]["task_type"] == "clauses"));
    assert!(
        std::fs::read_to_string(d.path().join("legal.prompts.toml"))
            .unwrap()
            .contains("obligations each party")
    );
    // Unknown task names in --task-weights are named with the ones that exist.
    let a = args(addr, "x.jsonl", &["--prompts", "legal.toml", "--task-weights", "summary=2"]);
    let e = fails(d.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("no task named \"summary\" (tasks: clauses)"), "{e}");

    // The overhead benchmark runs end to end (tiny here; the figure in the README is 200 × 32k).
    let b: Value = serde_json::from_str(&ok(
        d.path(),
        &["bench", "build-data", "--docs", "4", "--doc-tokens", "3000", "--json"],
    ))
    .unwrap();
    assert_eq!(b["written"], 4, "{b}");
    assert!(b["documents_per_s"].as_f64().unwrap() > 0.0);
    assert!((2800..3300).contains(&b["doc_tokens"].as_u64().unwrap()), "{b}");
}
