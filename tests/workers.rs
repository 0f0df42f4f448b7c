//! How many workers a run uses: `--workers`, or by default the machine's available
//! cores (as Polars' thread pool does), shared among the processes of
//! `cluster --local`; the printed commands of a hostfile cluster name one count for
//! every process (their handshake checks that they agree).

mod common;

use std::process::Command;

use common::{generate_days, pipeline_file, stderr};

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn workers_text(n: usize) -> String {
    match n {
        1 => "with 1 worker".to_owned(),
        n => format!("with {n} workers"),
    }
}

/// Runs `vizflow run` over two small generated dates with `args`; returns its log.
fn run(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 2, 5_000);
    let output = Command::new(EXE)
        .arg("run")
        .arg(pipeline_file())
        .arg("--input-dir")
        .arg(&data)
        .arg("--output-dir")
        .arg(tmp.path().join("out"))
        .args(["--progress", "log"])
        .args(args)
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("2 dates: 2 written"), "{log}");
    log
}

#[test]
fn a_run_without_workers_uses_the_available_cores() {
    let log = run(&[]);
    assert!(log.contains(&workers_text(cores())), "{log}");
}

#[test]
fn workers_given_are_used() {
    for n in [1, 3] {
        let log = run(&["--workers", &n.to_string()]);
        assert!(log.contains(&workers_text(n)), "{log}");
    }
}

#[test]
fn a_hostfile_cluster_prints_one_worker_count_for_every_process() {
    let output = Command::new(EXE)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "cluster",
            "examples/alpha_markout.toml",
            "--hostfile",
            "tests/golden/cluster/hosts.txt",
            "--print",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    let commands: Vec<&str> = printed.lines().filter(|l| l.contains(" run ")).collect();
    assert!(commands.len() >= 2, "{printed}");
    let flag = format!("--workers {}", cores());
    assert!(commands.iter().all(|c| c.contains(&flag)), "{printed}");
}
