//! The browser build end to end: `web/build.sh` makes the static folder, a static server on
//! 127.0.0.1 serves it, headless Chromium (software WebGL) runs it; the test reads the page over
//! the DevTools protocol: the app drew its frames, planned the bundled sample exactly as
//! `core-cli plan` does, logged no console errors, and its screenshot shows the visualiser.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Serves `dir` on 127.0.0.1 (GET only), on a thread that lives as long as the test.
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                // Drain the headers.
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/");
                let name = if path == "/" { "index.html" } else { path.trim_start_matches('/') };
                let file = dir.join(name);
                let (status, body) = match std::fs::read(&file) {
                    Ok(b) if !name.contains("..") => ("200 OK", b),
                    _ => ("404 Not Found", b"not found".to_vec()),
                };
                let kind = match file.extension().and_then(|e| e.to_str()) {
                    Some("html") => "text/html; charset=utf-8",
                    Some("js") => "text/javascript",
                    Some("wasm") => "application/wasm",
                    _ => "application/octet-stream",
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
            });
        }
    });
    port
}

/// GET over HTTP/1.1 (Chromium's DevTools server ignores HTTP/1.0), body by Content-Length.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

struct Browser(Child);
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One DevTools request on the page's websocket.
fn cdp(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    id: u64,
    method: &str,
    params: Value,
) -> Value {
    ws.send(tungstenite::Message::text(json!({"id": id, "method": method, "params": params}).to_string()))
        .unwrap();
    loop {
        let msg = ws.read().unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or(""))
            && v["id"] == id
        {
            return v["result"].clone();
        }
    }
}

/// Headless Chromium on `url`. Returns the browser (killed on drop), its profile folder and its
/// DevTools port. With `webgpu`, the page gets a WebGPU adapter (Dawn on SwiftShader: a CPU
/// implementation of the real browser API).
fn chromium(url: &str, webgpu: bool) -> (Browser, tempfile::TempDir, u16) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        "--window-size=1400,900",
        "--remote-debugging-port=0",
    ]);
    if webgpu {
        cmd.arg("--enable-unsafe-webgpu");
    }
    let browser = Browser(
        cmd.arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is installed (apt-get install chromium; .ci/run does)"),
    );
    // Chromium writes the DevTools port it chose into the profile.
    let t0 = Instant::now();
    let devtools = loop {
        if let Ok(s) = std::fs::read_to_string(profile.path().join("DevToolsActivePort"))
            && let Some(p) = s.lines().next().and_then(|l| l.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "chromium did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    (browser, profile, devtools)
}

/// Waits until the page's title starts with `prefix`; returns it and the page's DevTools socket.
fn page_titled(devtools: u16, prefix: &str, limit_s: u64) -> (String, String) {
    let t0 = Instant::now();
    loop {
        let pages: Value =
            http_get(devtools, "/json").and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(json!([]));
        let page = pages.as_array().and_then(|a| a.iter().find(|p| p["type"] == "page").cloned());
        if let Some(p) = page
            && p["title"].as_str().is_some_and(|t| t.starts_with(prefix))
        {
            return (
                p["title"].as_str().unwrap().to_string(),
                p["webSocketDebuggerUrl"].as_str().unwrap().to_string(),
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(limit_s),
            "no page titled {prefix:?} in {limit_s}s: {pages}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn web_build_runs_in_headless_chromium_without_console_errors() {
    // Build into its own target folder: the outer `cargo test` may hold the main one's lock.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    let out = Command::new("bash")
        .arg(repo().join("web/build.sh"))
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target.join("web-build"))
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "web/build.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let port = serve(repo().join("web/dist"));

    let (_browser, _profile, devtools) = chromium(&format!("http://127.0.0.1:{port}/index.html"), false);
    // Wait until the app has drawn (web/index.html's title changes after three frames).
    let (title, ws_url) = page_titled(devtools, "LongAlign-rs ready", 90);

    // The numbers on the page are the CLI's for the same plan.
    let args = longalign::cli::Cli::try_parse_from([
        "core-cli",
        "plan",
        "--compare",
        "--json",
        "--max-tokens",
        "2048",
    ])
    .unwrap();
    let Some(longalign::cli::Command::Plan(args)) = args.command else { unreachable!() };
    let want = longalign::cli::plan::json(&args).unwrap();
    let expect = format!(
        "LongAlign-rs ready · fill % naive {:.2} · sorted {:.2} · pack {:.2}",
        100.0 * want["naive"]["fill"].as_f64().unwrap(),
        100.0 * want["sorted"]["fill"].as_f64().unwrap(),
        100.0 * want["pack"]["fill"].as_f64().unwrap()
    );
    assert_eq!(title, expect);

    let (mut ws, _) = tungstenite::connect(ws_url.as_str()).unwrap();
    let errors =
        cdp(&mut ws, 1, "Runtime.evaluate", json!({"expression": "JSON.stringify(window.__errors)"}));
    assert_eq!(errors["result"]["value"], "[]", "console errors: {errors}");
    let shot = cdp(&mut ws, 2, "Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    if let Some(p) = std::env::var_os("LONGALIGN_WEB_SCREENSHOT") {
        std::fs::write(p, &png).unwrap();
    }
    let img = image::load_from_memory(&png).unwrap().to_rgba8();
    // The window is 1400 × 900; the page gets its width and what the (headless) browser frame leaves.
    assert!(img.width() == 1400 && img.height() > 600, "{} × {}", img.width(), img.height());
    let colours: std::collections::HashSet<[u8; 4]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 50, "a blank page: {} colours", colours.len());

    // Training in the page: `?train=3` trains the tiny preset three steps on the CPU backend
    // (wasm), and the title reports the losses. They are the native session's for the same
    // configuration (same code; wasm's scalar f32 may round differently from native SIMD).
    // On the CPU backend (this headless browser has no WebGPU adapter).
    let losses = |title: &str| -> Vec<f64> {
        title.split("losses ").nth(1).unwrap().split(' ').map(|x| x.parse().unwrap()).collect()
    };
    let no_errors = |ws: &mut tungstenite::WebSocket<_>, what: &str| {
        let e = cdp(ws, 50, "Runtime.evaluate", json!({"expression": "JSON.stringify(window.__errors)"}));
        assert_eq!(e["result"]["value"], "[]", "{what}: console errors: {e}");
    };
    cdp(&mut ws, 3, "Page.navigate", json!({"url": format!("http://127.0.0.1:{port}/index.html?train=3")}));
    // Steps run in a Web Worker, so the page keeps getting animation frames while one runs (on
    // the page's own thread a step of several seconds would stop them).
    page_titled(devtools, "LongAlign-rs training · training · step 1/3", 300);
    let frames = |ws: &mut tungstenite::WebSocket<_>, id| {
        let v = cdp(ws, id, "Runtime.evaluate", json!({"expression": "window.__frames"}));
        v["result"]["value"].as_f64().unwrap()
    };
    let (f0, t0) = (frames(&mut ws, 40), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (f1, dt) = (frames(&mut ws, 41), t0.elapsed().as_secs_f64());
    let fps = (f1 - f0) / dt;
    eprintln!("page frames while training on cpu: {fps:.1}/s");
    assert!(fps >= 5.0, "the page got {fps:.1} frames/s while training: its thread is blocked");
    let (title, _) = page_titled(devtools, "LongAlign-rs trained", 300);
    assert!(title.contains(" on cpu "), "{title}");
    no_errors(&mut ws, "training on cpu");
    let page = losses(&title);
    let mut state = longalign_app::AppState::with_sample();
    state.in_app.steps = 3;
    let cfg = longalign_app::in_app::config(&state);
    let d = state.data.as_ref().unwrap();
    let mut session =
        longalign::train::session::cpu_session(&cfg, d.dataset.as_ref().unwrap(), &d.tokenizer).unwrap();
    let native: Vec<f64> = std::iter::from_fn(|| session.step()).map(|e| e.loss).collect();
    assert_eq!(page.len(), 3, "{title}");
    for (p, n) in page.iter().zip(&native) {
        assert!((p - n).abs() <= 1e-3 * n.abs(), "page {page:?} vs native {native:?}");
    }
    if let Some(p) = std::env::var_os("LONGALIGN_WEB_TRAIN_SCREENSHOT") {
        let shot = cdp(&mut ws, 30, "Page.captureScreenshot", json!({"format": "png"}));
        std::fs::write(
            p,
            base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
    }
    drop(ws);

    // Training on WebGPU: `?backend=webgpu` in a browser with an adapter. The page's first two
    // losses are the native CPU session's (a fresh model depends on the seed only, not on the
    // backend), to within f32 rounding across two implementations.
    let (_gpu_browser, _gpu_profile, devtools) =
        chromium(&format!("http://127.0.0.1:{port}/index.html?train=2&backend=webgpu"), true);
    let (title, ws_url) = page_titled(devtools, "LongAlign-rs trained", 600);
    assert!(title.contains(" on webgpu "), "{title}");
    let (mut ws, _) = tungstenite::connect(ws_url.as_str()).unwrap();
    no_errors(&mut ws, "training on webgpu");
    let page = losses(&title);
    assert_eq!(page.len(), 2, "{title}");
    eprintln!("losses: webgpu page {page:?}, native cpu {native:?}");
    for (p, n) in page.iter().zip(&native) {
        assert!((p - n).abs() <= 1e-3 * n.abs(), "webgpu page {page:?} vs native cpu {native:?}");
    }
}
