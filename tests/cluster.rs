//! Runs across processes (`vizflow run --processes`, `vizflow cluster`), by topic: the
//! partials of one process from two, for both partitionings; a killed process stops
//! the cluster and a rerun completes exactly the missing dates; a peer that never
//! starts; peers that run different pipelines; the commands printed for a hostfile.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    generate_days, manifest, outputs, pipeline_file, read_lines, reference, stderr, wait_at_most,
    written_and_skipped,
};

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

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

#[test]
fn a_bad_date_fails_alone_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 4, 70_000);
    let expected = reference(&data, &tmp.path().join("one"));
    // Truncate the third date's file: every process fails to read its share of it.
    let broken = data.join("alpha_20240104.feather");
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    for partition in ["symbol", "date"] {
        let out = tmp.path().join(partition);
        let output = Command::new(EXE)
            .arg("cluster")
            .arg(pipeline_file())
            .args(["--local", "2", "--partition", partition])
            .args(run_args(&data, &out))
            .output()
            .unwrap();
        let log = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{log}");
        // Each process names itself in the error of its share.
        let error = format!(
            "{} is not a valid Arrow IPC file (truncated or corrupt)",
            broken.display()
        );
        assert!(
            log.contains(&format!("FAILED 20240104: process 0: {error}")),
            "{log}"
        );
        assert!(log.contains(&format!("process 1: {error}")), "{log}");
        let done = outputs(&out);
        assert_eq!(done.len(), 3, "{partition}");
        for (date, outputs) in &done {
            assert_eq!(outputs, &expected[date], "{date}, by {partition}");
        }
    }
}
