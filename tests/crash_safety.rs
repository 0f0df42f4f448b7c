//! Crash safety and resumption of `vizflow run`: a process killed (`kill -9`) at
//! different points of a multi-date run leaves only complete partials, and a rerun
//! with `--skip-existing` computes exactly the missing dates; partials from another
//! pipeline are recomputed, and the run says so; `--fail-fast` stops at the first
//! failed date.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{
    generate_days, outputs, pipeline_file, reference, regenerate, stderr, written_and_skipped,
};

const EXE: &str = env!("CARGO_BIN_EXE_vizflow");

/// Rows of a slow date: five times the others, a few tenths of a second of work.
const SLOW_DATE_ROWS: usize = 500_000;

fn run_command(pipeline: &Path, data: &Path, out: &Path) -> Command {
    let mut command = Command::new(EXE);
    command
        .arg("run")
        .arg(pipeline)
        .arg("--input-dir")
        .arg(data)
        .arg("--output-dir")
        .arg(out)
        .args(["--progress", "log", "--workers", "2"]);
    command
}

#[test]
fn a_run_killed_at_any_point_leaves_complete_partials_and_the_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 12, 100_000);
    // The run must still be going when the kill lands, however late a loaded machine
    // lets the test send it. After the ninth date's `[9/12]` line only three small
    // dates are left, a few hundredths of a second each: the tenth (read only after
    // that line) is made slow.
    regenerate(&data, dates[9], SLOW_DATE_ROWS);
    let expected = reference(&data, &tmp.path().join("one"));
    // Kill after the first, the fourth and the ninth date is written, and once right
    // at the start (before any date is written): a new output directory each time.
    for kill_after in [0, 1, 4, 9] {
        let out = tmp.path().join(format!("killed-after-{kill_after}"));
        let mut child = run_command(&pipeline_file(), &data, &out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read the progress here, not on another thread, to kill without a hand-over.
        let mut progress = BufReader::new(child.stderr.take().unwrap());
        let (mut log, mut line) = (String::new(), String::new());
        let prefix = format!("[{kill_after}/");
        while kill_after > 0 && !line.starts_with(&prefix) {
            line.clear();
            let read = progress.read_line(&mut line).unwrap();
            assert!(read > 0, "the run writes {kill_after} dates:\n{log}");
            log.push_str(&line);
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        progress.read_to_string(&mut log).unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "killed after {kill_after}: the run ended before the kill ({status:?}):\n{log}"
        );

        let done = outputs(&out);
        assert!(
            done.len() >= kill_after && done.len() < dates.len(),
            "killed after {kill_after}: {} partials",
            done.len()
        );
        for (date, outputs) in &done {
            assert_eq!(
                outputs, &expected[date],
                "{date}, killed after {kill_after}"
            );
        }
        let output = run_command(&pipeline_file(), &data, &out)
            .arg("--skip-existing")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            written_and_skipped(&stderr(&output)),
            (dates.len() - done.len(), done.len()),
            "killed after {kill_after}: {}",
            stderr(&output)
        );
        assert_eq!(outputs(&out), expected, "killed after {kill_after}");
    }
}

#[test]
fn skip_existing_recomputes_partials_of_another_pipeline_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate_days(&data, 3, 2_000);
    let out = tmp.path().join("out");
    let first = run_command(&pipeline_file(), &data, &out).output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    // The same pipeline with another bin width: another hash.
    let text = std::fs::read_to_string(pipeline_file()).unwrap();
    let changed = text.replace("alpha1 = 1e-4", "alpha1 = 2e-4");
    assert_ne!(changed, text, "the example bins alpha1 at 1e-4");
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, changed).unwrap();
    let partial = out.join("20240103.parquet");
    let kept = run_command(&pipeline_file(), &data, &out)
        .args(["--skip-existing", "--dates", "20240102..20240103"])
        .output()
        .unwrap();
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert_eq!(
        written_and_skipped(&stderr(&kept)),
        (0, 2),
        "{}",
        stderr(&kept)
    );
    let redone = run_command(&other, &data, &out)
        .args(["--skip-existing", "--dates", "20240103"])
        .output()
        .unwrap();
    assert!(redone.status.success(), "{}", stderr(&redone));
    assert!(
        stderr(&redone).contains(&format!(
            "{}: the partial there was made by a different pipeline; recomputing it",
            partial.display()
        )),
        "{}",
        stderr(&redone)
    );
    assert_eq!(written_and_skipped(&stderr(&redone)), (1, 0));
}

#[test]
fn fail_fast_stops_at_the_first_failed_date() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dates = generate_days(&data, 5, 2_000);
    let broken = data.join("alpha_20240104.feather");
    std::fs::write(&broken, b"not a feather file").unwrap();
    let out = tmp.path().join("out");
    let output = run_command(&pipeline_file(), &data, &out)
        .arg("--fail-fast")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("5 dates: 2 written, 0 skipped, 1 failed, 2 not run"),
        "{log}"
    );
    assert!(
        log.contains("20240105: not run (an earlier date failed, --fail-fast)"),
        "{log}"
    );
    assert!(log.contains("failed dates:\n  FAILED 20240104: "), "{log}");
    assert_eq!(outputs(&out).len(), 2);
    // Without --fail-fast the dates after it run.
    let output = run_command(&pipeline_file(), &data, &out).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("{} dates: 4 written", dates.len())),
        "{}",
        stderr(&output)
    );
}
