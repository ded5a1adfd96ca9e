//! Hugging Face Hub downloads against a local server on 127.0.0.1 that speaks the Hub's protocol
//! (`/api/{models,datasets}/{id}/revision/{rev}`, `/{id}/resolve/{rev}/{file}` with `ETag`,
//! `X-Linked-Etag`, `X-Repo-Commit`, LFS files redirected to storage with range requests): the
//! standard cache layout, `HF_HUB_OFFLINE=1` from the cache, resumed interrupted downloads, sha256
//! checks, gated repositories and `HF_TOKEN`, and `train` / `score` on `--model org/name` and
//! `--data hf://datasets/…` as a user runs them.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::ok;
use longalign::hub::{Hub, Progress, Repo, RepoKind};
use serde_json::json;

const TOKEN: &str = "hf_test_token_5c1e";

struct HubRepo {
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
    gated: bool,
}

#[derive(Default)]
struct State {
    /// `models/org/name` or `datasets/org/name`.
    repos: HashMap<String, HubRepo>,
    /// Method, path and Range header of every request.
    log: Vec<String>,
    /// LFS blobs whose next plain download is cut off halfway.
    cut: HashSet<String>,
    /// LFS blobs served with one byte changed.
    tampered: HashSet<String>,
}

type Shared = Arc<Mutex<State>>;

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn is_lfs(path: &str) -> bool {
    path.ends_with(".safetensors")
}

fn respond(state: &Shared, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut st = state.lock().unwrap();
    st.log.push(format!("{method} {path} {}", range.clone().unwrap_or_default()));
    let authed =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Storage: /lfs/<sha256>
    if parts.len() == 2 && parts[0] == "lfs" {
        let sha = parts[1].to_string();
        let Some(mut bytes) =
            st.repos.values().flat_map(|r| r.files.values()).find(|b| sha256(b) == sha).cloned()
        else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if st.tampered.contains(&sha) {
            bytes[0] ^= 1;
        }
        if let Some(start) =
            range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-'))
        {
            let start: usize = start.parse().unwrap();
            let total = bytes.len();
            return Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{total}", total - 1))
                .body(Body::from(bytes[start..].to_vec()))
                .unwrap();
        }
        if st.cut.remove(&sha) {
            // Announce the whole file, send half, then fail: a dropped connection.
            let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
            let stream = tokio_stream::iter(vec![Ok(half), Err(std::io::Error::other("connection reset"))]);
            return Response::builder()
                .header(header::CONTENT_LENGTH, bytes.len())
                .body(Body::from_stream(stream))
                .unwrap();
        }
        return Body::from(bytes).into_response();
    }
    let (kind, rest) = match parts.first() {
        Some(&"api") => ("api", &parts[1..]),
        Some(&"datasets") => ("datasets", &parts[1..]),
        _ => ("models", &parts[..]),
    };
    if kind == "api" {
        // /api/{models,datasets}/org/name/revision/rev
        if rest.len() != 5 || rest[3] != "revision" {
            return StatusCode::NOT_FOUND.into_response();
        }
        let key = format!("{}/{}/{}", rest[0], rest[1], rest[2]);
        let Some(repo) = st.repos.get(&key) else { return StatusCode::NOT_FOUND.into_response() };
        if repo.gated && !authed {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if rest[4] != "main" && rest[4] != repo.commit {
            return StatusCode::NOT_FOUND.into_response();
        }
        let siblings: Vec<_> = repo.files.keys().map(|f| json!({"rfilename": f})).collect();
        return axum::Json(
            json!({"id": format!("{}/{}", rest[1], rest[2]), "sha": repo.commit, "siblings": siblings}),
        )
        .into_response();
    }
    // /{org}/{name}/resolve/{rev}/{path…}
    if rest.len() < 5 || rest[2] != "resolve" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let key = format!("{kind}/{}/{}", rest[0], rest[1]);
    let file = rest[4..].join("/");
    let Some(repo) = st.repos.get(&key) else { return StatusCode::NOT_FOUND.into_response() };
    if repo.gated && !authed {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(bytes) = repo.files.get(&file) else { return StatusCode::NOT_FOUND.into_response() };
    let b = Response::builder().header("x-repo-commit", &repo.commit);
    if is_lfs(&file) {
        let sha = sha256(bytes);
        return b
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("/lfs/{sha}"))
            .header("x-linked-etag", format!("\"{sha}\""))
            .header("x-linked-size", bytes.len())
            .body(Body::empty())
            .unwrap();
    }
    let etag = format!("\"{}\"", &sha256(bytes)[..40]);
    let b = b.header(header::ETAG, etag).header(header::CONTENT_LENGTH, bytes.len());
    if method == Method::HEAD {
        b.body(Body::empty()).unwrap()
    } else {
        b.body(Body::from(bytes.clone())).unwrap()
    }
}

/// The server on a free port, on its own thread.
fn start(state: Shared) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap| {
                let st = state.clone();
                async move { respond(&st, m, u, h) }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// A tiny trained model exported as a Hugging Face directory, and a small data file.
fn model_files(d: &Path) -> BTreeMap<String, Vec<u8>> {
    ok(d, &["train", "--steps", "1", "--max-tokens", "512", "--quiet", "--out", "run"]);
    ok(d, &["export", "run", "--out", "exp"]);
    std::fs::read_dir(d.join("exp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

fn hub_state(d: &Path) -> Shared {
    let files = model_files(d);
    assert!(
        files.contains_key("model.safetensors") && files.contains_key("config.json"),
        "{:?}",
        files.keys()
    );
    common::small_data(d, 12, 3);
    let data = std::fs::read(d.join("small.jsonl")).unwrap();
    let mut st = State::default();
    let commit = |c: char| std::iter::repeat_n(c, 40).collect::<String>();
    st.repos.insert(
        "models/org/tiny".into(),
        HubRepo { commit: commit('a'), files: files.clone(), gated: false },
    );
    st.repos.insert("models/org/gated".into(), HubRepo { commit: commit('b'), files, gated: true });
    let mut ds = BTreeMap::new();
    ds.insert("data/train.jsonl".to_string(), data);
    ds.insert("README.md".to_string(), b"# data".to_vec());
    st.repos.insert("datasets/org/data".into(), HubRepo { commit: commit('c'), files: ds, gated: false });
    Arc::new(Mutex::new(st))
}

fn cli_env(d: &Path, addr: SocketAddr, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_core-cli"));
    c.args(args).current_dir(d).env("HF_ENDPOINT", format!("http://{addr}")).env("HF_HOME", d.join("hf"));
    for k in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"] {
        c.env_remove(k);
    }
    c.envs(extra.iter().copied()).output().unwrap()
}

#[test]
fn train_and_score_from_the_hub_then_offline_from_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let state = hub_state(d);
    let addr = start(state.clone());
    let train = [
        "train",
        "--model",
        "org/tiny",
        "--data",
        "hf://datasets/org/data/data/train.jsonl",
        "--steps",
        "1",
        "--max-tokens",
        "512",
        "--quiet",
    ];
    let run = |out: &str, extra: &[(&str, &str)]| {
        let a: Vec<&str> = train.iter().copied().chain(["--out", out]).collect();
        cli_env(d, addr, &a, extra)
    };
    let o = run("r1", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The standard layout: refs, blobs named by sha256 (LFS) or ETag, snapshot links.
    let repo = d.join("hf/hub/models--org--tiny");
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    assert_eq!(commit, "a".repeat(40));
    let snap = repo.join("snapshots").join(&commit);
    let weights = std::fs::read(d.join("exp/model.safetensors")).unwrap();
    assert!(std::fs::symlink_metadata(snap.join("model.safetensors")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), weights);
    assert!(repo.join("blobs").join(sha256(&weights)).is_file());
    assert!(
        d.join("hf/hub/datasets--org--data/snapshots")
            .join("c".repeat(40))
            .join("data/train.jsonl")
            .is_file()
    );
    // The config keeps the Hub names (a resume resolves them again).
    let cfg = std::fs::read_to_string(d.join("r1/config.toml")).unwrap();
    assert!(
        cfg.contains("model = \"org/tiny\"") && cfg.contains("hf://datasets/org/data/data/train.jsonl"),
        "{cfg}"
    );

    // Offline: the same run from the cache, without a single request.
    let before = state.lock().unwrap().log.len();
    let o = run("r2", &[("HF_HUB_OFFLINE", "1")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(state.lock().unwrap().log.len(), before, "offline made requests");
    let e = cli_env(
        d,
        addr,
        &["score", "--model", "org/other", "--data", "small.jsonl"],
        &[("HF_HUB_OFFLINE", "1")],
    );
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("HF_HUB_OFFLINE") && err.contains("org/other"), "{err}");

    // A gated repository: a clear error without a token, and the token never printed.
    let score = ["score", "--model", "org/gated", "--data", "small.jsonl"];
    let e = cli_env(d, addr, &score, &[]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("gated") && err.contains("HF_TOKEN"), "{err}");
    let e = cli_env(d, addr, &score, &[("HF_TOKEN", "hf_wrong_token_77")]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("401") && !err.contains("hf_wrong_token_77"), "{err}");
    let o = cli_env(d, addr, &score, &[("HF_TOKEN", TOKEN)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() == 12);
    let missing = cli_env(d, addr, &["score", "--model", "org/nothing", "--data", "small.jsonl"], &[]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

#[test]
fn interrupted_downloads_resume_and_bad_blobs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let state = hub_state(d);
    let addr = start(state.clone());
    let weights = std::fs::read(d.join("exp/model.safetensors")).unwrap();
    let sha = sha256(&weights);
    let hub = Hub { endpoint: format!("http://{addr}"), token: None, cache: d.join("cache"), offline: false };
    let repo = Repo { kind: RepoKind::Model, id: "org/tiny".into(), revision: "main".into() };

    state.lock().unwrap().cut.insert(sha.clone());
    let e = hub.model(&repo, &Progress::Hidden).unwrap_err();
    assert!(format!("{e:#}").contains("run again to resume"), "{e:#}");
    let part = d.join("cache/models--org--tiny/blobs").join(format!("{sha}.incomplete"));
    let have = std::fs::metadata(&part).unwrap().len();
    assert_eq!(have, weights.len() as u64 / 2);
    assert!(!d.join("cache/models--org--tiny/blobs").join(&sha).exists(), "no complete-looking blob");

    let snap = hub.model(&repo, &Progress::Hidden).unwrap();
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), weights);
    let log = state.lock().unwrap().log.clone();
    assert!(log.iter().any(|l| l.starts_with(&format!("GET /lfs/{sha} bytes={have}-"))), "{log:?}");
    assert!(!part.exists());

    // A blob whose bytes do not hash to the Hub's sha256 is refused and not kept.
    let hub2 = Hub { cache: d.join("cache2"), ..hub.clone() };
    state.lock().unwrap().tampered.insert(sha.clone());
    let e = hub2.model(&repo, &Progress::Hidden).unwrap_err();
    assert!(format!("{e:#}").contains("sha256"), "{e:#}");
    let blobs = d.join("cache2/models--org--tiny/blobs");
    assert!(!blobs.join(&sha).exists() && !blobs.join(format!("{sha}.incomplete")).exists());

    // Files of a dataset repository, and bad references.
    let ds = Repo { kind: RepoKind::Dataset, id: "org/data".into(), revision: "main".into() };
    let p = hub.file(&ds, "data/train.jsonl", &Progress::Hidden).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), std::fs::read(d.join("small.jsonl")).unwrap());
    assert!(format!("{:#}", hub.file(&ds, "nope.jsonl", &Progress::Hidden).unwrap_err()).contains("no file"));
}
