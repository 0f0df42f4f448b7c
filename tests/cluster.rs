//! Runs across processes (`vizflow run --processes`, `vizflow cluster`), by topic: the
//! partials of one process from two, for both partitionings; a killed process stops
//! the cluster and a rerun completes exactly the missing dates; a peer that never
//! starts; peers that run different pipelines; the commands printed for a hostfile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet};
use vizflow::run::{DateSelection, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate};

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn pipeline_file() -> PathBuf {
    manifest("examples/alpha_markout.toml")
}

/// `count` weekdays of January 2024 generated into `dir`, in parts of 65,536 rows.
fn generate_days(dir: &Path, count: usize, rows: usize) -> Vec<NaiveDate> {
    use chrono::Datelike;
    let dates: Vec<NaiveDate> = NaiveDate::from_ymd_opt(2024, 1, 2)
        .unwrap()
        .iter_days()
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .take(count)
        .collect();
    let spec = GenSpec {
        rows,
        symbols: 120,
        seed: 29,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    generate(&spec, dir, &dates).unwrap();
    dates
}

/// The partials of one process with one worker, by the library.
fn reference(data: &Path, out: &Path) -> BTreeMap<String, Outputs> {
    let pipeline = Pipeline::from_file(&pipeline_file()).unwrap();
    let options = RunOptions {
        input_dir: Some(data.into()),
        output_dir: Some(out.into()),
        dates: DateSelection::All,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options).unwrap();
    assert_eq!(summary.failed().count(), 0);
    outputs(out)
}

/// A date's partial (with its footer metadata) and its report.
#[derive(Debug, PartialEq)]
struct Outputs {
    partial: (RecordBatch, Vec<(String, String)>),
    report: serde_json::Value,
}

/// Every partial in `dir` by date, with its report. Hidden files (the temporary files
/// of writes a kill interrupted) are not partials and are left out.
fn outputs(dir: &Path) -> BTreeMap<String, Outputs> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(date) = name.strip_suffix(".parquet") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let partial = read_parquet(&dir.join(&name))
            .unwrap_or_else(|e| panic!("{name} is not a complete partial: {e}"));
        let report = std::fs::read(dir.join(format!("{date}.report.json")))
            .unwrap_or_else(|e| panic!("{date}.report.json is missing beside its partial: {e}"));
        let report = serde_json::from_slice(&report).unwrap();
        found.insert(date.to_owned(), Outputs { partial, report });
    }
    found
}

/// `count` loopback addresses with free ports.
fn free_addresses(count: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

fn hostfile(dir: &Path, addresses: &[String]) -> PathBuf {
    let path = dir.join("hosts.txt");
    std::fs::write(&path, addresses.join("\n")).unwrap();
    path
}

fn run_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "--input-dir",
        data.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
        "--progress",
        "log",
    ]
    .map(String::from)
    .to_vec()
}

/// `vizflow run` as process `process` of `processes`.
fn process(
    pipeline: &Path,
    args: &[String],
    hosts: &Path,
    processes: usize,
    process: usize,
) -> Command {
    let mut command = Command::new(EXE);
    command
        .arg("run")
        .arg(pipeline)
        .args(args)
        .args(["--processes", &processes.to_string()])
        .args(["--process", &process.to_string()])
        .arg("--hostfile")
        .arg(hosts);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The sum over processes of the `N written` and `N skipped` of their summary lines.
fn written_and_skipped(stderr: &str) -> (usize, usize) {
    let mut totals = (0, 0);
    for line in stderr.lines().filter(|l| l.contains(" dates: ")) {
        let count = |what: &str| -> usize {
            let before = line.split(what).next().unwrap();
            before
                .rsplit([' ', ','])
                .find(|w| !w.is_empty())
                .unwrap()
                .parse()
                .unwrap()
        };
        totals.0 += count(" written");
        totals.1 += count(" skipped");
    }
    totals
}

#[test]
fn two_processes_of_two_workers_give_the_partials_of_one_for_both_partitionings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 3, 150_000);
    let expected = reference(&data, &tmp.path().join("one"));
    assert_eq!(expected.len(), dates.len());
    for partition in ["symbol", "date"] {
        let out = tmp.path().join(partition);
        let output = Command::new(EXE)
            .arg("cluster")
            .arg(pipeline_file())
            .args(["--local", "2", "--workers", "2", "--partition", partition])
            .args(run_args(&data, &out))
            .output()
            .unwrap();
        assert!(output.status.success(), "{partition}: {}", stderr(&output));
        // Exact sums make the partials (and the reports) identical, not merely close.
        assert_eq!(outputs(&out), expected, "partitioned by {partition}");
        assert_eq!(
            written_and_skipped(&stderr(&output)),
            (3, 0),
            "{}",
            stderr(&output)
        );
    }
}

/// Waits for `child` at most `limit`.
fn wait_at_most(mut child: Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(limit).ok().map(Result::unwrap)
}

/// Reads a child's stderr on a thread: each line goes to `lines`, all of it to the
/// returned handle's result.
fn read_lines(
    child: &mut Child,
    lines: crossbeam_channel::Sender<String>,
) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    })
}

#[test]
fn killing_one_process_stops_the_other_and_a_rerun_completes_the_missing_dates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 16, 100_000);
    let expected = reference(&data, &tmp.path().join("one"));
    let out = tmp.path().join("out");
    let hosts = hostfile(tmp.path(), &free_addresses(2));
    let args = run_args(&data, &out);
    let spawn = |i| {
        process(&pipeline_file(), &args, &hosts, 2, i)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (spawn(0), spawn(1));
    let (lines, written) = crossbeam_channel::unbounded();
    let first_log = read_lines(&mut first, lines);
    let (ignored, _) = crossbeam_channel::unbounded();
    let second_log = read_lines(&mut second, ignored);

    // Kill process 1 as soon as process 0 has written its first date.
    let first_written = written
        .iter()
        .find(|line| line.starts_with("[1/"))
        .expect("process 0 writes a date");
    assert!(first_written.contains(".parquet"), "{first_written}");
    second.kill().unwrap();
    let killed = Instant::now();
    let status = wait_at_most(first, Duration::from_secs(10)).expect("process 0 stops within 10 s");
    assert!(!status.success(), "{status:?}");
    assert!(killed.elapsed() < Duration::from_secs(10));
    let log = first_log.join().unwrap();
    assert!(
        log.contains("error: process 0 lost its connection to process 1"),
        "process 0 says which peer it lost:\n{log}"
    );
    second.wait().unwrap();
    second_log.join().unwrap();

    // Every partial on disk is complete and right; some dates are missing.
    let done = outputs(&out);
    assert!(
        !done.is_empty() && done.len() < dates.len(),
        "{} of {}",
        done.len(),
        dates.len()
    );
    for (date, outputs) in &done {
        assert_eq!(outputs, &expected[date], "{date} after the kill");
    }

    // The rerun computes exactly the missing dates.
    let output = Command::new(EXE)
        .arg("cluster")
        .arg(pipeline_file())
        .args(["--local", "2", "--skip-existing"])
        .args(&args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        written_and_skipped(&stderr(&output)),
        (dates.len() - done.len(), done.len()),
        "{}",
        stderr(&output)
    );
    assert_eq!(outputs(&out), expected);
}

#[test]
fn a_peer_that_never_starts_fails_the_run_after_the_connect_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 1, 1_000);
    let addresses = free_addresses(2);
    let hosts = hostfile(tmp.path(), &addresses);
    let mut args = run_args(&data, &tmp.path().join("out"));
    args.extend(["--connect-timeout", "2"].map(String::from));
    for (me, peer, detail) in [(0, 1, "process 0 listened on"), (1, 0, "connecting failed")] {
        let started = Instant::now();
        let output = process(&pipeline_file(), &args, &hosts, 2, me)
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
            "{elapsed:?}"
        );
        let expected = format!(
            "error: process {peer} ({}) did not connect within 2 s: {detail}",
            addresses[peer]
        );
        assert!(
            stderr(&output).starts_with(&expected),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output)
                .contains("start every process of the hostfile (or raise --connect-timeout)"),
            "{}",
            stderr(&output)
        );
    }
    assert!(!tmp.path().join("out").join("20240102.parquet").exists());
}

#[test]
fn processes_that_run_different_pipelines_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 1, 1_000);
    let hosts = hostfile(tmp.path(), &free_addresses(2));
    let args = run_args(&data, &tmp.path().join("out"));
    let spawn = |pipeline: &Path, i| {
        process(pipeline, &args, &hosts, 2, i)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&manifest("examples/markout.toml"), 0);
    let second = spawn(&pipeline_file(), 1);
    for (i, child) in [first, second].into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "process {i}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(
                "runs a different pipeline than process 0 (the pipeline files differ); give \
                 every process the same pipeline file"
            ),
            "process {i}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn cluster_print_gives_the_command_of_every_host() {
    let output = Command::new(EXE)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "cluster",
            "examples/alpha_markout.toml",
            "--hostfile",
            "tests/golden/cluster/hosts.txt",
            "--print",
            "--workers",
            "2",
            "--partition",
            "date",
            "--dates",
            "20240102..20240131",
            "--skip-existing",
            "--output-dir",
            "/shared/vizflow out",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    let golden = manifest("tests/golden/cluster/print.txt");
    if std::env::var_os("VIZFLOW_BLESS").is_some() {
        std::fs::write(&golden, &printed).unwrap();
    }
    assert_eq!(printed, std::fs::read_to_string(&golden).unwrap());
}
