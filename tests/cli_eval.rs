//! `core-cli serve`, `generate` and `eval longbench-chat` end to end, over real HTTP on 127.0.0.1:
//! our own server answers, a judge server made here misbehaves (500s, time-outs, replies without a
//! rating), and the run still scores or reports every question, then resumes from its cache.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::ok;
use serde_json::{Value, json};

/// A tiny model trained for two steps: enough to answer (badly) through the real stack.
fn tiny_model(dir: &Path) {
    ok(dir, &["train", "--steps", "2", "--max-tokens", "512", "--quiet", "--out", "run"]);
}

/// `core-cli serve` on a free port; returns the child and its base URL once it listens.
fn serve(dir: &Path, extra: &[&str]) -> (Child, String) {
    serve_with(dir, extra, &[], Stdio::inherit())
}

/// [`serve`] with extra environment variables and stderr sent to `stderr`.
fn serve_with(dir: &Path, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_core-cli"))
        .args(["serve", "--model", "run/export", "--port", "0"])
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().nth(2).expect("listening line").to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"), "{line}");
    (child, url)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// With a key (here from `LONGALIGN_API_KEY`) every route needs it; the key appears in no output.
#[test]
fn serve_requires_its_api_key_on_every_route() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    let key = "la-test-key-8d2f1c";
    let log = std::fs::File::create(d.path().join("serve.err")).unwrap();
    let (child, url) =
        serve_with(d.path(), &["--max-new-tokens", "4"], &[("LONGALIGN_API_KEY", key)], log.into());
    let guard = Killed(child);
    let c = http();
    let base = url.trim_end_matches("/v1").to_string();
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let requests = [
        c.get(format!("{url}/models")),
        c.get(format!("{base}/health")),
        c.post(format!("{url}/chat/completions")).json(&body),
    ];
    for r in requests {
        let r = r.build().unwrap();
        let path = r.url().path().to_string();
        let longer = format!("Bearer {key}x");
        for auth in [None, Some("Bearer wrong-key"), Some(key), Some(longer.as_str())] {
            let mut q = r.try_clone().unwrap();
            if let Some(a) = auth {
                q.headers_mut().insert("authorization", a.parse().unwrap());
            }
            let resp = c.execute(q).unwrap();
            assert_eq!(resp.status(), 401, "{path} with {auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let v: Value = resp.json().unwrap();
            assert_eq!(v["error"]["type"], "invalid_api_key", "{v}");
        }
        let mut q = r.try_clone().unwrap();
        q.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        let resp = c.execute(q).unwrap();
        assert_eq!(resp.status(), 200, "{path} with the key");
        assert!(!resp.text().unwrap().contains(key));
    }
    drop(guard);
    let err = std::fs::read_to_string(d.path().join("serve.err")).unwrap();
    assert!(!err.contains(key), "the key leaked into stderr: {err}");
    // --help shows that the variable exists, not its value.
    let help = Command::new(env!("CARGO_BIN_EXE_core-cli"))
        .args(["serve", "--help"])
        .env("LONGALIGN_API_KEY", key)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("LONGALIGN_API_KEY") && !help.contains(key), "{help}");
}

#[test]
fn serve_answers_openai_requests_streams_and_rejects_bad_ones() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    let (child, url) = serve(d.path(), &["--max-body-mib", "1", "--max-new-tokens", "16"]);
    let _guard = Killed(child);
    let c = http();
    let models: Value = c.get(format!("{url}/models")).send().unwrap().json().unwrap();
    assert_eq!(models["data"][0]["id"], "run");

    let body = json!({"model": "run", "messages": [{"role": "user", "content": "Repeat twice: apple"}],
                      "temperature": 0, "max_tokens": 8});
    let r: Value = c.post(format!("{url}/chat/completions")).json(&body).send().unwrap().json().unwrap();
    let text = r["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 8, "{r}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 10, "{r}");

    // Streaming gives the same greedy text, in SSE chunks, ending with [DONE].
    let mut sbody = body.clone();
    sbody["stream"] = true.into();
    let sse = c.post(format!("{url}/chat/completions")).json(&sbody).send().unwrap().text().unwrap();
    let mut streamed = String::new();
    let datas: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{sse}");
    for d in &datas[..datas.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        streamed.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(streamed, text);

    // And the CLI's own generation agrees with the server (same model, greedy).
    let cli = ok(
        d.path(),
        &["generate", "--model", "run/export", "--prompt", "Repeat twice: apple", "--max-new-tokens", "8"],
    );
    assert_eq!(cli, format!("{text}\n"));

    let status =
        |b: &str| c.post(format!("{url}/chat/completions")).body(b.to_string()).send().unwrap().status();
    assert_eq!(status("{\"messages\": ["), 400, "bad JSON");
    assert_eq!(status("{\"messages\": []}"), 400, "no messages");
    assert_eq!(status("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}"), 400, "bad role");
    let long = json!({"messages": [{"role": "user", "content": "a".repeat(5000)}]}).to_string();
    assert_eq!(status(&long), 413, "over the model's 4096-token context");
    let huge = json!({"messages": [{"role": "user", "content": "a".repeat(2 << 20)}]}).to_string();
    assert_eq!(status(&huge), 413, "over the 1 MiB body limit");
}

/// 200 concurrent requests on loopback: every one gets an answer or a clean 503, and the server
/// is still healthy afterwards.
#[test]
fn serve_survives_200_concurrent_requests() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    let (child, url) = serve(d.path(), &["--queue", "64", "--max-new-tokens", "4"]);
    let pid = child.id();
    let _guard = Killed(child);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let url = url.clone();
                s.spawn(move || {
                    let body = json!({"messages": [{"role": "user", "content": format!("Repeat twice: {i}")}],
                                      "max_tokens": 4, "temperature": 0});
                    http()
                        .post(format!("{url}/chat/completions"))
                        .json(&body)
                        .send()
                        .map(|r| r.status().as_u16())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("a response, not a dropped connection"))
            .collect()
    });
    let ok_n = statuses.iter().filter(|&&s| s == 200).count();
    assert!(statuses.iter().all(|&s| s == 200 || s == 503), "{statuses:?}");
    assert!(ok_n >= 64, "at least a queue's worth answered: {ok_n}");
    assert_eq!(
        http().get(format!("{}/health", url.trim_end_matches("/v1"))).send().unwrap().text().unwrap(),
        "ok"
    );
    // Bounded memory: the server's peak RSS stays modest (the model is ~3 MB).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    if let Some(kb) =
        status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1))
    {
        let mb = kb.parse::<u64>().unwrap() / 1024;
        assert!(mb < 1024, "peak RSS {mb} MB");
    }
}

/// What the judge server does with the n-th request for a prompt.
#[derive(Default)]
struct Judge {
    calls: Mutex<HashMap<String, usize>>,
    total: Mutex<usize>,
}

async fn judge(State(j): State<Arc<Judge>>, Json(req): Json<Value>) -> Response {
    *j.total.lock().unwrap() += 1;
    let prompt = req["messages"][1]["content"].as_str().unwrap_or_default().to_string();
    assert_eq!(req["messages"][0]["content"], "You're a good assistant at evaluating the quality of texts.");
    assert_eq!(req["temperature"], 0.0);
    let n = {
        let mut calls = j.calls.lock().unwrap();
        let n = calls.entry(prompt.clone()).or_default();
        *n += 1;
        *n
    };
    let reply = |text: &str| {
        Json(
            json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}),
        )
        .into_response()
    };
    // Question Q3 never gets a rating: it must end up reported as failed, not guessed.
    if prompt.contains("QUESTION-3") {
        return reply("I cannot decide.");
    }
    match n {
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        2 => {
            tokio::time::sleep(Duration::from_secs(3)).await; // past the client's 1 s timeout
            reply("too late [[1]]")
        }
        3 => reply("Looks fine but I forgot the format."),
        _ => reply("The answer misses details. Rating: [[3]] ... on reflection, Rating: [[7]]"),
    }
}

fn start_judge() -> (SocketAddr, Arc<Judge>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = Arc::new(Judge::default());
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(judge))
        .with_state(state.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state, rt)
}

fn write_cases(dir: &Path) {
    let cases: Vec<Value> = (1..=4)
        .map(|i| {
            let query = if i == 4 {
                format!("QUESTION-{i}: 文中的密码是什么？")
            } else {
                format!("QUESTION-{i}: what is the key?")
            };
            json!({"idx": i, "prompt": format!("{} filler text. {query}", "Long document".repeat(20)),
                   "query": query, "answer": format!("The key is {i}{i}{i}.")})
        })
        .collect();
    std::fs::write(dir.join("test_cases.json"), serde_json::to_string(&cases).unwrap()).unwrap();
    let shots: Vec<Value> = (1..=4)
        .map(|_| json!([{"answer": "good", "score": 9}, {"answer": "ok", "score": 5}, {"answer": "bad", "score": 1}]))
        .collect();
    std::fs::write(dir.join("few_shots.json"), serde_json::to_string(&shots).unwrap()).unwrap();
    std::fs::write(
        dir.join("prompt_fs.txt"),
        "[Question]\n{}\n[Reference]\n{}\n[A]\n{}\nRating: [[{}]]\n[A]\n{}\nRating: [[{}]]\n[A]\n{}\nRating: [[{}]]\n[Rate]\n{}\nRating: ",
    )
    .unwrap();
}

#[test]
fn longbench_chat_eval_survives_a_flaky_judge_and_resumes_from_its_cache() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    write_cases(d.path());
    let (child, url) = serve(d.path(), &["--max-new-tokens", "6"]);
    let server = Killed(child);
    let (judge_addr, judge_state, _rt) = start_judge();
    let judge_url = format!("http://{judge_addr}/v1");
    let args = |endpoint: &str| -> Vec<String> {
        [
            "eval",
            "longbench-chat",
            "--data",
            "test_cases.json",
            "--few-shots",
            "few_shots.json",
            "--judge-prompt",
            "prompt_fs.txt",
            "--endpoint",
            endpoint,
            "--endpoint-model",
            "run",
            "--judge-url",
            &judge_url,
            "--judge-model",
            "judge",
            "--out",
            "ev",
            "--json",
            "--timeout-s",
            "1",
            "--backoff-s",
            "0.05",
            "--retries",
            "3",
            "--max-new-tokens",
            "6",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |endpoint: &str| -> Value {
        let a = args(endpoint);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        serde_json::from_str(&ok(d.path(), &refs)).unwrap()
    };
    let v = run(&url);
    assert_eq!(v["scored"], 3, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    assert_eq!(v["mean_score"], 7.0, "the last [[…]] counts: {v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["idx"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(items[2]["score"].is_null() && items[2]["error"].as_str().unwrap().contains("rating"), "{v}");
    // Per scored question: 500 → retried, time-out → retried, no rating → asked again, rating.
    // Q3: five replies without a rating, then given up.
    assert_eq!(*judge_state.total.lock().unwrap(), 3 * 4 + 5);
    let md = std::fs::read_to_string(d.path().join("ev/report.md")).unwrap();
    assert!(md.contains("Mean score **7.00**") && md.contains("Chinese 7.00"), "{md}");

    // Resume: the answering server is gone, one judgement was lost mid-write. Nothing is asked
    // twice: no answers (they are cached), only the lost judgement and the failed one again.
    drop(server);
    let jpath = d.path().join("ev/judgements.jsonl");
    let text = std::fs::read_to_string(&jpath).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("\"idx\":2")).collect();
    std::fs::write(&jpath, kept.join("\n") + "\n{\"idx\":2,\"sco").unwrap();
    *judge_state.total.lock().unwrap() = 0;
    let v = run("http://127.0.0.1:9/v1");
    assert_eq!((v["scored"].as_u64(), v["failed"].as_u64()), (Some(3), Some(1)), "{v}");
    // Q2's prompt was seen four times already, so the judge rates it at once; Q3 five more tries.
    assert_eq!(*judge_state.total.lock().unwrap(), 1 + 5);
}

#[test]
fn eval_without_a_judge_reports_labelled_overlap_scores() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    write_cases(d.path());
    let out = ok(
        d.path(),
        &[
            "eval",
            "longbench-chat",
            "--data",
            "test_cases.json",
            "--model",
            "run/export",
            "--out",
            "ev",
            "--max-new-tokens",
            "4",
            "--limit",
            "2",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["protocol"].as_str().unwrap().contains("NOT the LongBench-Chat judge protocol"));
    assert_eq!(v["answered"], 2);
    assert!(v["mean_rouge_l"].as_f64().unwrap() >= 0.0);
}

/// Opt-in (reads the official files beside the checkout, `../shared/data/longbench-chat`, and
/// needs python3): for all 50 questions, our filled judge prompt is byte-identical to the official
/// script's `template.format(question, answer, *few_shot_ans_scores, prediction)`.
#[test]
#[ignore = "reads ../shared/data/longbench-chat and runs python3"]
fn official_judge_prompt_is_byte_identical() {
    use longalign::eval::longbench_chat::{JudgeTemplate, read_few_shots};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/longbench-chat");
    let template = JudgeTemplate::read(&dir.join("prompt_fs.txt")).unwrap();
    let shots = read_few_shots(&dir.join("few_shots.json")).unwrap();
    assert_eq!(shots.len(), 50);
    let question = |i: usize| format!("Question {i}: what does the {{report}} say? 问题");
    let answer = |i: usize| format!("Reference {i}\nwith two lines");
    let prediction = |i: usize| format!("Prediction {i} [[not a rating]]");
    let ours: Vec<String> =
        (1..=50).map(|i| template.fill(&question(i), &answer(i), &shots[i - 1], &prediction(i))).collect();
    let script = r#"
import json, sys
d = sys.argv[1]
template = open(d + "/prompt_fs.txt", encoding="utf-8").read()
few_shots = json.load(open(d + "/few_shots.json", encoding="utf-8"))
out = []
for idx in range(1, 51):
    few_shot_answers = [x['answer'] for x in few_shots[idx - 1]]
    few_shot_scores = [x['score'] for x in few_shots[idx - 1]]
    few_shot_ans_scores = []
    for k in range(len(few_shot_answers)):
        few_shot_ans_scores.append(few_shot_answers[k])
        few_shot_ans_scores.append(few_shot_scores[k])
    q = "Question %d: what does the {report} say? 问题" % idx
    a = "Reference %d\nwith two lines" % idx
    p = "Prediction %d [[not a rating]]" % idx
    out.append(template.format(q, a, *few_shot_ans_scores, p))
sys.stdout.write(json.dumps(out))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&dir).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "question {}", i + 1);
    }
}

/// `data fetch longbench-chat` against a local mirror: checksums are enforced (a wrong file is not
/// kept), verified files are not downloaded twice, and `--offline` never touches the network.
#[test]
fn data_fetch_verifies_caches_and_respects_offline() {
    let d = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "test_cases.json",
            b"[{\"idx\": 1, \"prompt\": \"p\", \"query\": \"q\", \"answer\": \"a\"}]".to_vec(),
        ),
        ("few_shots.json", b"[[{\"answer\": \"x\", \"score\": 1}]]".to_vec()),
        ("prompt_fs.txt", b"{}{}{}{}{}{}{}{}{}".to_vec()),
    ];
    let hits = Arc::new(Mutex::new(0usize));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (served, counter) = (files.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/mirror/{name}",
        axum::routing::get(move |axum::extract::Path(name): axum::extract::Path<String>| {
            let (served, counter) = (served.clone(), counter.clone());
            async move {
                *counter.lock().unwrap() += 1;
                match served.iter().find(|(n, _)| *n == name) {
                    Some((_, b)) => b.clone().into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}/mirror", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let fetch = |extra: &[String]| {
        let mut args: Vec<String> =
            ["data", "fetch", "longbench-chat", "--dir", "cache", "--base-url", &base]
                .map(String::from)
                .to_vec();
        args.extend_from_slice(extra);
        common::core_cli(d.path(), &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The pinned (official) checksums do not match the mirror's stand-in files.
    let out = fetch(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(!d.path().join("cache/test_cases.json").exists(), "a file that fails its checksum is not kept");

    let sums: Vec<String> = files
        .iter()
        .flat_map(|(n, b)| {
            ["--checksum".to_string(), format!("{n}={}", longalign::eval::fetch::git_blob_sha1(b))]
        })
        .collect();
    let offline: Vec<String> = sums.iter().cloned().chain(["--offline".to_string()]).collect();
    let out = fetch(&offline);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--offline"));
    let before = *hits.lock().unwrap();
    let out = fetch(&sums);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("downloaded, verified").count(), 3);
    assert_eq!(*hits.lock().unwrap(), before + 3);
    for (n, b) in &files {
        assert_eq!(&std::fs::read(d.path().join("cache").join(n)).unwrap(), b);
    }
    // Cached and verified: no request, also offline.
    let out = fetch(&offline);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("cached, verified").count(), 3);
    assert_eq!(*hits.lock().unwrap(), before + 3);
}

/// `eval needle` through our own server: a grid of lengths × depths, scored, cached (a rerun with
/// the server gone still reports), with PNG and SVG heatmaps.
#[test]
fn needle_eval_fills_its_grid_draws_a_heatmap_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    let (child, url) = serve(d.path(), &["--max-new-tokens", "8"]);
    let server = Killed(child);
    let args = |endpoint: &str| {
        ok(
            d.path(),
            &[
                "eval",
                "needle",
                "--endpoint",
                endpoint,
                "--endpoint-model",
                "run",
                "--lengths",
                "300,600",
                "--depths",
                "0,50,100",
                "--out",
                "nd",
                "--json",
                "--timeout-s",
                "30",
                "--retries",
                "1",
            ],
        )
    };
    let v: Value = serde_json::from_str(&args(&url)).unwrap();
    assert_eq!(v["scored"], 6, "{v}");
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    assert!(scores.iter().all(|r| r.as_array().unwrap().iter().all(|x| x == 0.0 || x == 1.0)), "{v}");
    for c in v["cells"].as_array().unwrap() {
        assert!(c["prompt_tokens"].as_u64().unwrap() <= c["length"].as_u64().unwrap() + 40, "{c}");
    }
    assert_eq!(&std::fs::read(d.path().join("nd/heatmap.png")).unwrap()[..4], b"\x89PNG");
    assert!(std::fs::read_to_string(d.path().join("nd/heatmap.svg")).unwrap().contains("needle depth"));
    drop(server);
    let again: Value = serde_json::from_str(&args("http://127.0.0.1:9/v1")).unwrap();
    assert_eq!(again["scores"], v["scores"], "served from the cache");
    assert!(again["judge_mean"].is_null());

    // Optionally rated by a judge too (the flaky one: 500, time-out, no rating, then [[7]]).
    let (judge_addr, _state, _rt) = start_judge();
    let judge_url = format!("http://{judge_addr}/v1");
    let out = ok(
        d.path(),
        &[
            "eval",
            "needle",
            "--lengths",
            "300,600",
            "--depths",
            "0,50,100",
            "--out",
            "nd",
            "--json",
            "--judge-url",
            &judge_url,
            "--judge-model",
            "j",
            "--timeout-s",
            "1",
            "--retries",
            "3",
        ],
    );
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["judge_mean"], 7.0, "{j}");
    assert_eq!(j["scores"], v["scores"]);
}

/// The judge's API key comes from the environment, reaches the server as a bearer token, and never
/// appears in output, caches or reports — also when the server rejects it.
#[test]
fn api_keys_are_sent_but_never_written() {
    const SECRET: &str = "sk-test-SECRET-1234567890";
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    write_cases(d.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|headers: axum::http::HeaderMap| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            if auth == format!("Bearer {SECRET}") {
                Json(json!({"choices": [{"message": {"content": "[[6]]"}}]})).into_response()
            } else {
                // Echo what was sent, as some proxies do: the client must not print it.
                (StatusCode::UNAUTHORIZED, format!("bad key: {auth}")).into_response()
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let judge_url = format!("http://{}/v1", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let run = |env_name: &str, key: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_core-cli"))
            .args(["eval", "longbench-chat", "--data", "test_cases.json", "--few-shots", "few_shots.json"])
            .args(["--judge-prompt", "prompt_fs.txt", "--model", "run/export", "--max-new-tokens", "3"])
            .args(["--judge-url", &judge_url, "--judge-model", "j", "--api-key-env", env_name, "--out", out])
            .args(["--limit", "2", "--json"])
            .env(env_name, key)
            .current_dir(d.path())
            .output()
            .unwrap()
    };
    let good = run("JUDGE_KEY", SECRET, "good");
    assert!(good.status.success());
    let v: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(v["mean_score"], 6.0, "{v}");
    let bad = run("JUDGE_KEY", &format!("{SECRET}-wrong"), "bad");
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["failed"], 2, "{v}");
    assert!(v["items"][0]["error"].as_str().unwrap().contains("401"), "{v}");
    let mut seen = String::new();
    for o in [&good, &bad] {
        seen.push_str(&String::from_utf8_lossy(&o.stdout));
        seen.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    for dir in ["good", "bad"] {
        for f in std::fs::read_dir(d.path().join(dir)).unwrap() {
            seen.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
        }
    }
    assert!(!seen.contains(SECRET), "the API key leaked into output or files");
}
