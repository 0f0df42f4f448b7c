//! Runs across processes (`vizflow run --processes`, `vizflow cluster`), by topic: the
//! partials of one process from two, for both partitionings; a killed process stops
//! the cluster and a rerun completes exactly the missing dates; a peer that never
//! starts; peers that run different pipelines; the commands printed for a hostfile; a
//! bad date, alone and with `--fail-fast`.
//!
//! The ports of a cluster started here are never free for another test to take: a
//! process that listens is handed the listener this test bound (on standard input, as
//! `vizflow cluster --local` does), rather than binding a port the test let go of.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{
    generate_days, manifest, outputs, pipeline_file, read_lines, reference, regenerate, stderr,
    wait_within, written_and_skipped,
};
use vizflow::calendar::format_date;
use vizflow::cluster::LISTENER_ON_STDIN;
use vizflow::engine::date_owner;

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

/// How long a process may take before the test calls it hung and kills it: far more
/// than any run here needs on a loaded machine, so only a hang reaches it.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// The loopback addresses of a cluster of two processes, and the listener of process
/// 0, bound on the first (on a port the system chose) to hand to it. Process 1 only
/// connects: its address names it in messages.
fn two_addresses() -> (Vec<String>, TcpListener) {
    let listeners = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let [first, _] = listeners;
    (addresses, first)
}

fn hostfile(path: &Path, addresses: &[String]) -> PathBuf {
    std::fs::write(path, addresses.join("\n")).unwrap();
    path.to_owned()
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

/// `vizflow run` as process `process` of `processes`, with its stderr piped; a process
/// that listens (all but the last) is handed `listener`, bound on its hostfile line.
fn process(
    pipeline: &Path,
    args: &[String],
    hosts: &Path,
    processes: usize,
    process: usize,
    listener: Option<TcpListener>,
) -> Command {
    let mut command = Command::new(EXE);
    command
        .arg("run")
        .arg(pipeline)
        .args(args)
        .args(["--processes", &processes.to_string()])
        .args(["--process", &process.to_string()])
        .arg("--hostfile")
        .arg(hosts)
        .stderr(Stdio::piped());
    if let Some(listener) = listener {
        command
            .stdin(OwnedFd::from(listener))
            .env(LISTENER_ON_STDIN, "1");
    }
    command
}

/// The exit status and standard error of `child`, which must exit within `limit` (it
/// is killed and the test fails otherwise).
fn finish_within(mut child: Child, limit: Duration, what: &str) -> (ExitStatus, String) {
    let (lines, _) = crossbeam_channel::unbounded();
    let log = read_lines(&mut child, lines);
    let status = wait_within(child, limit);
    let log = log.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("{what} did not exit within {limit:?}:\n{log}"));
    (status, log)
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

/// Regression: when every date was already written, the processes of a rerun with
/// --skip-existing each stopped without starting, and each saw the other's connection
/// drop (exit 3).
#[test]
fn a_rerun_with_nothing_left_to_compute_skips_every_date_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 3, 20_000);
    let out = tmp.path().join("out");
    let cluster = || {
        Command::new(EXE)
            .arg("cluster")
            .arg(pipeline_file())
            .args(["--local", "2", "--workers", "1", "--skip-existing"])
            .args(run_args(&data, &out))
            .output()
            .unwrap()
    };
    let first = cluster();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        written_and_skipped(&stderr(&first)),
        (3, 0),
        "{}",
        stderr(&first)
    );
    let written = outputs(&out);
    let rerun = cluster();
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(
        written_and_skipped(&stderr(&rerun)),
        (0, 3),
        "{}",
        stderr(&rerun)
    );
    assert_eq!(outputs(&out), written);
}

#[test]
fn killing_one_process_stops_the_other_and_a_rerun_completes_the_missing_dates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 16, 100_000);
    // Process 0 writes its first date (the first) before it reads its second (the
    // third): a third date of five times the rows, a few tenths of a second of work,
    // holds it there, so the cluster is still running when the kill lands, however
    // late a loaded machine lets the test send it.
    regenerate(&data, dates[2], 500_000);
    let expected = reference(&data, &tmp.path().join("one"));
    let out = tmp.path().join("out");
    let (addresses, listener) = two_addresses();
    let hosts = hostfile(&tmp.path().join("hosts.txt"), &addresses);
    let args = run_args(&data, &out);
    let mut first = process(&pipeline_file(), &args, &hosts, 2, 0, Some(listener))
        .spawn()
        .unwrap();
    let mut second = process(&pipeline_file(), &args, &hosts, 2, 1, None)
        .spawn()
        .unwrap();
    let (ignored, _) = crossbeam_channel::unbounded();
    let second_log = read_lines(&mut second, ignored);

    // Kill process 1 as soon as process 0 has written its first date (reading process
    // 0's progress here, not on another thread, to kill without a hand-over).
    let mut progress = BufReader::new(first.stderr.take().unwrap());
    let (mut first_log, mut line) = (String::new(), String::new());
    while !line.starts_with("[1/") {
        line.clear();
        let read = progress.read_line(&mut line).unwrap();
        assert!(read > 0, "process 0 writes a date:\n{first_log}");
        first_log.push_str(&line);
    }
    assert!(line.contains(".parquet"), "{line}");
    second.kill().unwrap();
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        progress.read_to_string(&mut rest).unwrap();
        rest
    });
    let status = wait_within(first, HANG_LIMIT);
    first_log.push_str(&rest.join().unwrap());
    let status = status.unwrap_or_else(|| {
        panic!("process 0 did not stop after process 1 was killed:\n{first_log}")
    });
    // The binary aborts when it loses a peer, after saying which.
    assert_eq!(status.signal(), Some(6), "{status:?}:\n{first_log}");
    assert!(
        first_log.contains("error: process 0 lost its connection to process 1"),
        "process 0 says which peer it lost:\n{first_log}"
    );
    let status = second.wait().unwrap();
    let second_log = second_log.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "process 1 ended before the kill ({status:?}):\n{second_log}"
    );

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
    let mut args = run_args(&data, &tmp.path().join("out"));
    args.extend(["--connect-timeout", "2"].map(String::from));
    let fails_after_the_timeout = |me: usize, hosts: &[String], listener, detail: &str| {
        let peer = 1 - me;
        let hosts_file = hostfile(&tmp.path().join(format!("hosts-{me}.txt")), hosts);
        let started = Instant::now();
        let child = process(&pipeline_file(), &args, &hosts_file, 2, me, listener)
            .spawn()
            .unwrap();
        // Half the default --connect-timeout (60 s): a run that ignored
        // `--connect-timeout 2` would not stop before it; a loaded machine has 28 s to
        // spare.
        let limit = Duration::from_secs(30);
        let (status, log) = finish_within(child, limit, &format!("process {me}"));
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Some(2), "process {me}: {log}");
        assert!(
            elapsed >= Duration::from_secs(2),
            "process {me}: {elapsed:?}"
        );
        let expected = format!(
            "error: process {peer} ({}) did not connect within 2 s: {detail}",
            hosts[peer]
        );
        assert!(log.starts_with(&expected), "process {me}: {log}");
        assert!(
            log.contains("start every process of the hostfile (or raise --connect-timeout)"),
            "process {me}: {log}"
        );
    };
    // Process 0 alone listens, and hears nothing.
    let (addresses, listener) = two_addresses();
    let heard_nothing = format!(
        "process 0 listened on {} and heard nothing from it",
        addresses[0]
    );
    fails_after_the_timeout(0, &addresses, Some(listener), &heard_nothing);
    // Process 1 alone connects to process 0 on port 0, where no process can listen: it
    // is refused until the timeout.
    let refused = ["127.0.0.1:0".to_owned(), addresses[1].clone()];
    fails_after_the_timeout(1, &refused, None, "connecting failed");
    assert!(!tmp.path().join("out").join("20240102.parquet").exists());
}

#[test]
fn processes_that_run_different_pipelines_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 1, 1_000);
    let (addresses, listener) = two_addresses();
    let hosts = hostfile(&tmp.path().join("hosts.txt"), &addresses);
    let args = run_args(&data, &tmp.path().join("out"));
    let first = process(
        &manifest("examples/markout.toml"),
        &args,
        &hosts,
        2,
        0,
        Some(listener),
    )
    .spawn()
    .unwrap();
    let second = process(&pipeline_file(), &args, &hosts, 2, 1, None)
        .spawn()
        .unwrap();
    for (i, child) in [first, second].into_iter().enumerate() {
        let (status, log) = finish_within(child, HANG_LIMIT, &format!("process {i}"));
        assert_eq!(status.code(), Some(2), "process {i}: {log}");
        assert!(
            log.contains(
                "runs a different pipeline than process 0 (the pipeline files differ); give \
                 every process the same pipeline file"
            ),
            "process {i}: {log}"
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

#[test]
fn fail_fast_across_processes_writes_no_date_after_a_failed_date_of_process_1() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 6, 20_000);
    let expected = reference(&data, &tmp.path().join("one"));
    // Partitioned by date, with one worker a process, the i-th date belongs to process
    // i mod 2; the fourth date's is process 1, with a date of each process after it.
    let failed = 3;
    let owner = |ordinal: usize| date_owner(ordinal, 2);
    assert_eq!(owner(failed), 1, "process 1 owns the fourth date");
    let failed_date = format_date(dates[failed]);
    let broken = data.join(format!("alpha_{failed_date}.feather"));
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let output = Command::new(EXE)
        .arg("cluster")
        .arg(pipeline_file())
        .args(["--local", "2", "--partition", "date", "--fail-fast"])
        .args(run_args(&data, &out))
        .output()
        .unwrap();
    let log = stderr(&output);
    // README: 1 when dates failed (the cluster stopped as asked; no process died).
    assert_eq!(output.status.code(), Some(1), "{log}");
    let reason = format!(
        "{} is not a valid Arrow IPC file (truncated or corrupt)",
        broken.display()
    );
    assert!(
        log.lines()
            .any(|line| line.contains(&format!("FAILED {failed_date}: ")) && line.contains(&reason)),
        "the log names the failed date and why:\n{log}"
    );
    // --fail-fast: nothing is written for the failed date or any after it, and each
    // date after it is reported as not run, by the process that owns it.
    let done = outputs(&out);
    for (ordinal, date) in dates.iter().enumerate().skip(failed) {
        let date = format_date(*date);
        assert!(
            !done.contains_key(&date) && !out.join(format!("{date}.report.json")).exists(),
            "{date} was written, but {failed_date} failed first (--fail-fast):\n{log}"
        );
        if ordinal > failed {
            let not_run = format!("{date}: not run (an earlier date failed, --fail-fast)");
            assert!(
                log.lines().any(|line| {
                    line.starts_with(&format!("[process {}] [", owner(ordinal)))
                        && line.contains(&not_run)
                }),
                "process {} reports {date} as not run:\n{log}",
                owner(ordinal)
            );
        }
    }
    for (date, outputs) in &done {
        assert_eq!(outputs, &expected[date], "{date}");
    }
}
