//! `vizflow serve`: its JSON API answers the rows of `vizflow reduce` for the same
//! selection (provisional dates included), no URL reaches a file, and one request's
//! work is bounded. (The dashboard itself is tested in a real browser by
//! `tests/browser/dashboard.mjs`, which `.ci/run` runs.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;

/// A `vizflow serve` on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vizflow"))
            .arg("serve")
            .arg(dir)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        // The server prints its address once it listens (or exits, closing the pipe).
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server { child, address }
    }

    /// `GET target` with `host` as the Host header: the status and the body.
    fn get_from(&self, target: &str, host: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = (response.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned());
        (status, body)
    }

    fn get(&self, target: &str) -> (u16, String) {
        self.get_from(target, &self.address.clone())
    }

    fn json(&self, target: &str) -> Value {
        let (status, body) = self.get(target);
        assert_eq!(status, 200, "{target}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query value percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rows `vizflow reduce DIR ARGS -o FILE.json` writes.
fn reduce_rows(dir: &Path, args: &[&str]) -> Value {
    let out = dir.with_extension("reduce.json");
    let output = Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .arg("reduce")
        .arg(dir)
        .args(args)
        .args(["--progress", "quiet", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", common::stderr(&output));
    let rows: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    std::fs::remove_file(&out).unwrap();
    rows["rows"].clone()
}

#[test]
fn the_api_answers_the_rows_of_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::alpha_markout_partials(dir.path());
    // A date `vizflow live` still has open: a provisional partial.
    std::fs::copy(
        out.join("20240102.parquet"),
        out.join("20240104.live.parquet"),
    )
    .unwrap();
    let server = Server::start(&out, &[]);

    let meta = server.json("/api/meta");
    assert_eq!(
        meta["dates"],
        serde_json::json!(["20240102", "20240103", "20240104"])
    );
    assert_eq!(meta["provisional"][0]["date"], "20240104");
    assert_eq!(
        meta["group_by"],
        serde_json::json!(["alpha1_bin", "orderSide"])
    );
    assert_eq!(meta["bins"][0]["source"], "alpha1");
    assert!(meta["metrics"].as_array().unwrap().len() >= 3, "{meta}");

    let filter = "orderSide = 'B' AND alpha1_bin BETWEEN -5 AND 5";
    let metric = "hit=sum(is_closed) / count()";
    // (query, the flags of `vizflow reduce` it stands for)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (String::new(), vec!["--live"]),
        (
            "by=orderSide&dates=20240102".into(),
            vec!["--by", "orderSide", "--dates", "20240102", "--live"],
        ),
        (
            "by=date,orderSide&dates=20240103..20240104".into(),
            vec![
                "--by",
                "date,orderSide",
                "--dates",
                "20240103..20240104",
                "--live",
            ],
        ),
        ("by=".into(), vec!["--by", "", "--live"]),
        (
            format!(
                "by=alpha1_bin&where={}&metric={}&rebin={}&live=false",
                encode(filter),
                encode(metric),
                encode("alpha1_bin=3")
            ),
            vec![
                "--by",
                "alpha1_bin",
                "--where",
                filter,
                "--metric",
                metric,
                "--rebin",
                "alpha1_bin=3",
            ],
        ),
    ];
    for (query, flags) in cases {
        let answer = server.json(&format!("/api/reduce?{query}"));
        let expected = reduce_rows(&out, &flags);
        assert!(!expected.as_array().unwrap().is_empty(), "{query}: no rows");
        assert_eq!(
            answer["rows"], expected,
            "/api/reduce?{query} against vizflow reduce {flags:?}"
        );
        let live = !query.contains("live=false")
            && !query.contains("20240102&")
            && !query.ends_with("20240102");
        let provisional = if live {
            serde_json::json!(["20240104"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(answer["provisional"], provisional, "{query}");
    }
    // The new metric is there, computed from the merged components.
    let answer = server.json(&format!(
        "/api/reduce?by=orderSide&metric={}",
        encode(metric)
    ));
    for row in answer["rows"].as_array().unwrap() {
        let hit = row["sum(is_closed)"].as_f64().unwrap() / row["count()"].as_f64().unwrap();
        assert_eq!(row["hit"].as_f64().unwrap(), hit, "{row}");
    }
}

#[test]
fn no_url_reaches_a_file_and_a_request_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::alpha_markout_partials(dir.path());
    std::fs::write(out.join("secret.txt"), "the secret").unwrap();
    let server = Server::start(&out, &["--max-groups", "3", "--header-timeout", "1"]);

    // The page and its assets are there...
    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("/app.js") && page.contains("/echarts.min.js"),
        "{page}"
    );
    assert_eq!(server.get("/echarts.min.js").0, 200);
    // ... and nothing else, however the path is written.
    for target in [
        "/secret.txt",
        "/20240102.parquet",
        "/../Cargo.toml",
        "/..%2f..%2fCargo.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/app.js/../../secret.txt",
        "//etc/passwd",
        "/api/../secret.txt",
        "/api/reduce/../../secret.txt",
        "/static/..%5c..%5csecret.txt",
        "../secret.txt",
    ] {
        let (status, body) = server.get(target);
        assert!(matches!(status, 400 | 404), "{target}: {status} {body}");
        assert!(
            !body.contains("the secret")
                && !body.contains("[workspace]")
                && !body.contains("root:"),
            "{target}: {body}"
        );
    }
    let (status, body) = server.get(&format!("/api/reduce?dates={}", encode("../secret.txt")));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("dates"), "{body}");

    // A page of another site reaching the server by DNS rebinding.
    let (status, body) = server.get_from("/api/meta", "attacker.example:80");
    assert_eq!(status, 421, "{body}");

    // Bounds: the query's length, the groups one request may return.
    let (status, body) = server.get(&format!("/api/reduce?where={}", "x".repeat(9000)));
    assert_eq!(status, 414, "{body}");
    let (status, body) = server.get("/api/reduce");
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("more than the 3") && body.contains("rebin"),
        "{body}"
    );
    assert_eq!(
        server.json("/api/reduce?by=orderSide")["rows"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A header far over what a browser sends is refused before any work.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2 << 20)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");

    // A client that never finishes its headers (a slow-loris) is cut off, and the server
    // answers others meanwhile.
    let mut slow = TcpStream::connect(&server.address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    assert_eq!(server.get("/api/reduce?by=orderSide").0, 200);
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the connection is closed, not left open: {closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // Bad requests are named.
    for (query, names) in [
        ("file=x", "unknown parameter file"),
        ("by=nope", "nope"),
        ("by=orderSide&metric=m%3Dsum(nothing)", "nothing"),
        ("by=orderSide&where=orderSide%20%3D", "where"),
        ("by=orderSide&live=maybe", "live=maybe"),
        ("by=orderSide&dates=20250101", "20250101"),
    ] {
        let (status, body) = server.get(&format!("/api/reduce?{query}"));
        assert!(matches!(status, 400 | 404), "{query}: {status} {body}");
        assert!(body.contains(names), "{query}: {body}");
    }
}
