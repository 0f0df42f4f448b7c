//! `vizflow reduce` against an oracle: merging the partials of several dates equals
//! aggregating all their rows at once. The oracle is `vizflow run` itself over one file
//! holding every date's rows (a pipeline without a keyed stage, so that rows of several
//! dates in one file aggregate as they would in their own), with the group-by, metrics
//! and bins the reduce asks for. Float sums cancel (signed notionals), so a merge of
//! rounded sums would differ in the last bits.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::reduce::{ReduceError, ReduceOptions, reduce};
use vizflow::run::{DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate_date};

const WIDTH: f64 = 2e-4;

fn dates() -> Vec<NaiveDate> {
    (2..=6)
        .map(|d| NaiveDate::from_ymd_opt(2024, 1, d).unwrap())
        .collect()
}

fn spec(seed: u64) -> GenSpec {
    GenSpec {
        rows: 4_000,
        symbols: 30,
        seed,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    }
}

/// A pipeline without a keyed stage over `data` into `out`, grouped by `group_by`,
/// with `alpha1` in bins of `width` and `metrics` beside its own.
fn pipeline(data: &Path, out: &Path, group_by: &str, width: f64, metrics: &str) -> Pipeline {
    let text = format!(
        r#"
[input]
dir = "{data}"
pattern = "alpha_{{date}}.feather"

[output]
dir = "{out}"

[columns]
timestamp = "ticktime"
symbol = "ukey"

[derive]
signed = "CASE WHEN orderSide = 'B' THEN qty * fillPrice ELSE -qty * fillPrice END"

[time]
market = "CN"
format = "hhmmssmmm"

[bin]
alpha1 = {width:?}

[aggregate]
group_by = [{group_by}]

[aggregate.metrics]
count = "count()"
flow = "sum(signed)"
mean_alpha2 = "mean(alpha2)"
low = "min(fillPrice)"
high = "max(fillPrice)"
{metrics}
"#,
        data = data.display(),
        out = out.display(),
    );
    Pipeline::from_toml(&text).unwrap()
}

fn run_quietly(pipeline: &Pipeline) {
    let options = RunOptions {
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    for date in run(pipeline, &options).unwrap().dates {
        assert!(
            matches!(date.status, DateStatus::Written { .. }),
            "{:?}",
            date.status
        );
    }
}

/// The test's dates, each in its own file in `dir/days`, and all their rows in one
/// file of the first date in `dir/all`; the per-date partials in `dir/partials`.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let days = dir.join("days");
    let all = dir.join("all");
    std::fs::create_dir_all(&days).unwrap();
    std::fs::create_dir_all(&all).unwrap();
    let mut batches = Vec::new();
    for (i, date) in dates().into_iter().enumerate() {
        let rows = generate_date(&spec(i as u64), date);
        let path = days.join(format!("alpha_{}.feather", date.format("%Y%m%d")));
        write_batches(
            &path,
            FileFormat::IpcFile,
            rows.schema(),
            std::slice::from_ref(&rows),
            None,
        )
        .unwrap();
        batches.push(rows);
    }
    let first = dates()[0].format("%Y%m%d");
    let path = all.join(format!("alpha_{first}.feather"));
    write_batches(
        &path,
        FileFormat::IpcFile,
        batches[0].schema(),
        &batches,
        None,
    )
    .unwrap();
    let partials = dir.join("partials");
    run_quietly(&pipeline(
        &days,
        &partials,
        "\"alpha1_bin\", \"orderSide\"",
        WIDTH,
        "",
    ));
    (all, partials)
}

/// The oracle: the partial of all rows at once, without its `date` column.
fn oracle(
    dir: &Path,
    all: &Path,
    name: &str,
    group_by: &str,
    width: f64,
    metrics: &str,
) -> RecordBatch {
    let out = dir.join(name);
    run_quietly(&pipeline(all, &out, group_by, width, metrics));
    let first = dates()[0].format("%Y%m%d");
    let (partial, _) = read_parquet(&out.join(format!("{first}.parquet"))).unwrap();
    let keep: Vec<usize> = (1..partial.num_columns()).collect();
    partial.project(&keep).unwrap()
}

fn assert_same(reduced: &RecordBatch, expected: &RecordBatch, what: &str) {
    assert!(expected.num_rows() > 1, "{what}: groups to compare");
    let names = |b: &RecordBatch| -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    assert_eq!(names(reduced), names(expected), "{what}: columns");
    for (field, (got, want)) in reduced
        .schema()
        .fields()
        .iter()
        .zip(reduced.columns().iter().zip(expected.columns()))
    {
        let got = arrow::compute::cast(got, want.data_type()).unwrap();
        assert_eq!(
            &got.to_data(),
            &want.to_data(),
            "{what}: column {}",
            field.name()
        );
    }
}

#[test]
fn merging_dates_equals_aggregating_their_rows_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (all, partials) = setup(dir.path());
    let keys = "\"alpha1_bin\", \"orderSide\"";

    // Every group-by column, the pipeline's metrics.
    let reduced = reduce(&partials, &ReduceOptions::default()).unwrap();
    assert_eq!(reduced.dates, dates());
    assert_same(
        &reduced.table,
        &oracle(dir.path(), &all, "o1", keys, WIDTH, ""),
        "all keys",
    );

    // A subset of the keys, a new metric, a metric replaced.
    let options = ReduceOptions {
        by: Some(vec!["orderSide".into()]),
        metrics: vec![
            ("hit".into(), "count(alpha2) / count()".into()),
            ("low".into(), "min(fillPrice) * 2".into()),
        ],
        ..ReduceOptions::default()
    };
    let reduced = reduce(&partials, &options).unwrap();
    let metrics = "hit = \"count(alpha2) / count()\"";
    let mut expected = oracle(dir.path(), &all, "o2", "\"orderSide\"", WIDTH, metrics);
    // The oracle's `low` doubled, as the reduce's replaced metric.
    let low = expected.schema().index_of("low").unwrap();
    let doubled = arrow::compute::kernels::numeric::mul(
        expected.column(low),
        &arrow::array::Float64Array::new_scalar(2.0),
    )
    .unwrap();
    let mut columns = expected.columns().to_vec();
    columns[low] = doubled;
    expected = RecordBatch::try_new(expected.schema(), columns).unwrap();
    // The reduce puts a new metric after the pipeline's; the oracle's pipeline too.
    assert_same(&reduced.table, &expected, "by orderSide");

    // Bins merged by 3: as binning at three times the width.
    let options = ReduceOptions {
        rebin: vec![("alpha1_bin".into(), 3)],
        ..ReduceOptions::default()
    };
    let reduced = reduce(&partials, &options).unwrap();
    let expected = oracle(dir.path(), &all, "o3", keys, 3.0 * WIDTH, "");
    assert_same(&reduced.table, &expected, "rebinned by 3");
    assert_eq!(reduced.layout.bins[0].width, 3.0 * WIDTH);

    // A condition over the groups keeps exactly the groups that satisfy it.
    let options = ReduceOptions {
        filter: Some("orderSide = 'B' AND alpha1_bin BETWEEN -5 AND 5".into()),
        ..ReduceOptions::default()
    };
    let reduced = reduce(&partials, &options).unwrap();
    let expected = oracle(dir.path(), &all, "o1", keys, WIDTH, "");
    let bins = expected
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let sides =
        arrow::compute::cast(expected.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
    let sides = sides.as_string::<i32>();
    let keep: arrow::array::BooleanArray = (0..expected.num_rows())
        .map(|r| Some(sides.value(r) == "B" && (-5..=5).contains(&bins.value(r))))
        .collect();
    let expected = arrow::compute::filter_record_batch(&expected, &keep).unwrap();
    assert_same(&reduced.table, &expected, "where");
}

#[test]
fn dates_and_time_keys_select_and_group_the_partials() {
    let dir = tempfile::tempdir().unwrap();
    let (_, partials) = setup(dir.path());
    // By date: one group per date, each equal to that date's partial summed over its
    // groups.
    let options = ReduceOptions {
        by: Some(vec!["date".into()]),
        dates: Some("20240103..20240105".into()),
        ..ReduceOptions::default()
    };
    let reduced = reduce(&partials, &options).unwrap();
    assert_eq!(reduced.dates, dates()[1..4].to_vec());
    assert_eq!(reduced.table.num_rows(), 3);
    for (row, date) in reduced.dates.iter().enumerate() {
        let one = ReduceOptions {
            by: Some(vec![]),
            dates: Some(date.format("%Y%m%d").to_string()),
            ..ReduceOptions::default()
        };
        let total = reduce(&partials, &one).unwrap().table;
        let count = |t: &RecordBatch, row: usize| {
            t.column_by_name("count")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(row)
        };
        assert_eq!(count(&reduced.table, row), count(&total, 0));
        let (partial, _) =
            read_parquet(&partials.join(format!("{}.parquet", date.format("%Y%m%d")))).unwrap();
        let per_group = partial
            .column_by_name("count")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(count(&total, 0), per_group.values().iter().sum::<i64>());
    }
    // By weekday: 2024-01-02 is a Tuesday (2), ..., 2024-01-06 a Saturday (6).
    let options = ReduceOptions {
        by: Some(vec!["weekday".into()]),
        ..ReduceOptions::default()
    };
    let table = reduce(&partials, &options).unwrap().table;
    let weekdays = table
        .column(0)
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(weekdays.values().to_vec(), vec![2, 3, 4, 5, 6]);
    // A date without a partial is named.
    let options = ReduceOptions {
        dates: Some("20240102,20240109".into()),
        ..ReduceOptions::default()
    };
    let error = reduce(&partials, &options).unwrap_err().to_string();
    assert!(error.contains("no partial of 20240109"), "{error}");
}

#[test]
fn bad_partials_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (all, partials) = setup(dir.path());
    let error = |options: &ReduceOptions| reduce(&partials, options).unwrap_err().to_string();
    let by = ReduceOptions {
        by: Some(vec!["ukey".into()]),
        ..ReduceOptions::default()
    };
    assert!(
        error(&by).contains("'ukey' is not a group column"),
        "{}",
        error(&by)
    );
    let metric = ReduceOptions {
        metrics: vec![("x".into(), "sum(qty)".into())],
        ..ReduceOptions::default()
    };
    let text = error(&metric);
    assert!(
        text.contains("needs the component 'sum(qty)'") && text.contains("sum(signed)"),
        "{text}"
    );
    let rebin = ReduceOptions {
        rebin: vec![("alpha1_bin".into(), 2)],
        ..ReduceOptions::default()
    };
    assert!(error(&rebin).contains("must be odd"), "{}", error(&rebin));

    // A partial of another pipeline: refused, both hashes named; with --allow-mixed
    // and the same metrics, merged.
    let other = dir.path().join("other");
    run_quietly(&pipeline(
        &all,
        &other,
        "\"alpha1_bin\", \"orderSide\"",
        1e-3,
        "",
    ));
    let first = dates()[0].format("%Y%m%d");
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(
        other.join(format!("{first}.parquet")),
        mixed.join(format!("{first}.parquet")),
    )
    .unwrap();
    let second = dates()[1].format("%Y%m%d");
    std::fs::copy(
        partials.join(format!("{second}.parquet")),
        mixed.join(format!("{second}.parquet")),
    )
    .unwrap();
    let text = reduce(&mixed, &ReduceOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("different pipelines") && text.contains("--allow-mixed"),
        "{text}"
    );
    let allowed = ReduceOptions {
        allow_mixed: true,
        ..ReduceOptions::default()
    };
    assert!(reduce(&mixed, &allowed).is_ok());

    // A damaged partial is named.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join(format!("{first}.parquet")), b"PAR1 not really").unwrap();
    let text = reduce(&damaged, &ReduceOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(&format!("{first}.parquet")) && text.contains("not a readable partial"),
        "{text}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        reduce(&empty, &ReduceOptions::default()),
        Err(ReduceError::NoPartials { .. })
    ));
}

/// The command: a table on the terminal with bins in their units, and each output
/// format written.
#[test]
fn the_command_shows_and_writes_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_, partials) = setup(dir.path());
    let exe = env!("CARGO_BIN_EXE_vizflow");
    let output = Command::new(exe)
        .args([
            "reduce",
            partials.to_str().unwrap(),
            "--by",
            "alpha1_bin",
            "--where",
            "alpha1_bin BETWEEN -2 AND 2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| alpha1_bin | alpha1 "), "{stdout}");
    assert!(stdout.contains("| -2         | -0.0004"), "{stdout}");
    assert!(!stdout.contains(".exact"), "{stdout}");
    for extension in ["parquet", "csv", "json"] {
        let file = dir.path().join(format!("reduced.{extension}"));
        let status = Command::new(exe)
            .args([
                "reduce",
                partials.to_str().unwrap(),
                "--by",
                "orderSide",
                "-o",
            ])
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read(&file).unwrap();
        match extension {
            "parquet" => {
                let (table, metadata) = read_parquet(&file).unwrap();
                assert_eq!(table.num_rows(), 2);
                assert!(
                    metadata
                        .iter()
                        .any(|(k, v)| k == "vizflow.group_by" && v == "[\"orderSide\"]")
                );
                // It merges again, to the same table.
                let again = dir.path().join("again");
                std::fs::create_dir_all(&again).unwrap();
                std::fs::copy(&file, again.join("20240102.parquet")).unwrap();
                let remerged = reduce(&again, &ReduceOptions::default()).unwrap().table;
                let without_date: Vec<usize> = (0..table.num_columns()).collect();
                assert_eq!(remerged, table.project(&without_date).unwrap());
            }
            "csv" => assert!(String::from_utf8_lossy(&text).starts_with("orderSide,count,flow")),
            _ => {
                let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
                assert_eq!(json["rows"].as_array().unwrap().len(), 2);
                assert!(json["rows"][0]["count"].is_i64());
            }
        }
    }
}
