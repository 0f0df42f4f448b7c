//! The pipeline hash stored in every partial, which `--skip-existing` compares: a rule
//! written in Rust counts by its fingerprint (its `Debug` form by default), so a rerun
//! with other parameters recomputes the partials, and one with the same keeps them.

use std::path::Path;

use chrono::NaiveDate;

use vizflow::config::Pipeline;
use vizflow::io::FileFormat;
use vizflow::operators::enrich::{Emit, Event, TagRule};
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary, run};
use vizflow::synthetic::{GenSpec, generate};

/// Flags rows whose `qty` is above `limit`.
#[derive(Debug)]
struct Above {
    limit: f64,
}

impl TagRule for Above {
    type State = ();
    type Input<'a> = Option<f64>;
    type Output = bool;

    fn name(&self) -> String {
        "above".into()
    }
    fn inputs(&self) -> Vec<String> {
        vec!["qty".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec!["above".into()]
    }
    fn process(&self, qty: Option<f64>, _: Event, _: &mut (), emit: &mut Emit<'_, bool>) {
        emit.push(qty.is_some_and(|q| q > self.limit));
    }
}

fn pipeline(dir: &Path, limit: f64) -> Pipeline {
    Pipeline::from_toml(&format!(
        r#"
        input = {{ dir = "{}", pattern = "alpha_{{date}}.feather" }}
        output = {{ dir = "{}" }}
        columns = {{ timestamp = "ticktime", symbol = "ukey" }}
        time = {{ market = "CN" }}
        aggregate = {{ group_by = ["above"], metrics = {{ n = "count()" }} }}
        "#,
        dir.join("in").display(),
        dir.join("out").display()
    ))
    .unwrap()
    .with_rule(Above { limit })
}

fn run_skipping(pipeline: &Pipeline) -> RunSummary {
    let options = RunOptions {
        dates: DateSelection::All,
        skip_existing: true,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    run(pipeline, &options).unwrap()
}

fn statuses(summary: &RunSummary) -> Vec<&'static str> {
    summary
        .dates
        .iter()
        .map(|d| match d.status {
            DateStatus::Written { .. } => "written",
            DateStatus::Skipped => "skipped",
            _ => "other",
        })
        .collect()
}

#[test]
fn skip_existing_recomputes_when_a_rust_rules_parameters_change() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenSpec {
        rows: 2_000,
        symbols: 5,
        seed: 7,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    let dates = ["2024-01-02", "2024-01-03"].map(|d| d.parse::<NaiveDate>().unwrap());
    generate(&spec, &dir.path().join("in"), &dates).unwrap();

    assert_ne!(
        pipeline(dir.path(), 300.0).config_hash(),
        pipeline(dir.path(), 400.0).config_hash()
    );
    assert_eq!(
        pipeline(dir.path(), 300.0).config_hash(),
        pipeline(dir.path(), 300.0).config_hash()
    );
    let first = run_skipping(&pipeline(dir.path(), 300.0));
    assert_eq!(statuses(&first), ["written", "written"]);
    let same = run_skipping(&pipeline(dir.path(), 300.0));
    assert_eq!(statuses(&same), ["skipped", "skipped"]);
    let other = run_skipping(&pipeline(dir.path(), 400.0));
    assert_eq!(statuses(&other), ["written", "written"]);
}

const MARKOUT: &str = r#"
# the reference markout
[input]
dir = "data"
pattern = "alpha_{date}.feather"

[output]
dir = "out"

[columns]
timestamp = "ticktime"
symbol = "ukey"

[[cast]]
column = "qty"
to = "int64"

[derive]
mid = "(AskPrice1 + BidPrice1) / 2"

[time]
market = "CN"

[forward_return]
price = "mid"
horizons = [60, 300]

[bin]
alpha1 = 1e-4

[aggregate]
group_by = ["alpha1_bin", "orderSide"]

[aggregate.metrics]
count = "count()"
mean_return_60 = "mean(return_60)"
"#;

fn hash(text: &str) -> String {
    Pipeline::from_toml(text).unwrap().config_hash()
}

/// The same pipeline written differently: comments, blank lines, spacing, inline tables,
/// the order of sections and of keys whose order means nothing, literal strings.
#[test]
fn the_hash_ignores_how_the_pipeline_is_written() {
    let rewritten = r#"
        time = { market = "CN" }   # moved up, inline
        columns = { symbol = "ukey", timestamp = "ticktime" }
        input = { pattern = 'alpha_{date}.feather', dir = "data" }
        output = { dir = "out" }
        forward_return = { horizons = [ 60,300 ], price = "mid" }
        bin = { alpha1 = 0.0001 }
        derive = { mid = "(AskPrice1+BidPrice1)/2" }
        [[cast]]
        to = "int64"
        column = "qty"
        [aggregate]
        metrics = { count = "count()", mean_return_60 = "mean(return_60)" }
        group_by = ["alpha1_bin", "orderSide"]
    "#;
    assert_eq!(hash(MARKOUT), hash(rewritten));
    let commented = MARKOUT.replace("[time]", "# a new comment\n\n[time]   ");
    assert_eq!(hash(MARKOUT), hash(&commented));
}

/// Every change of meaning changes the hash, the order of metrics (which orders the
/// partial's columns) included.
#[test]
fn the_hash_changes_with_the_meaning() {
    let changes = [
        ("horizons = [60, 300]", "horizons = [60, 600]"),
        ("alpha1 = 1e-4", "alpha1 = 2e-4"),
        ("market = \"CN\"", "market = \"HK\""),
        ("(AskPrice1 + BidPrice1) / 2", "(AskPrice1 + BidPrice1) / 3"),
        (
            "count = \"count()\"\nmean_return_60 = \"mean(return_60)\"",
            "mean_return_60 = \"mean(return_60)\"\ncount = \"count()\"",
        ),
        (
            "[\"alpha1_bin\", \"orderSide\"]",
            "[\"orderSide\", \"alpha1_bin\"]",
        ),
        ("to = \"int64\"", "to = \"int64\"\ntolerance = 1e-3"),
        (
            "pattern = \"alpha_{date}.feather\"",
            "pattern = \"beta_{date}.feather\"",
        ),
    ];
    for (from, to) in changes {
        assert!(MARKOUT.contains(from), "{from}");
        let changed = MARKOUT.replace(from, to);
        assert_ne!(hash(MARKOUT), hash(&changed), "{from} -> {to}");
    }
}

/// `[stream]` enters the hash when set: its lateness and policy change which rows
/// count, and `emit_every` asks for a provisional results' file that a date written
/// without it lacks (so `--skip-existing` recomputes it).
#[test]
fn the_stream_section_enters_the_hash() {
    let streamed = format!("{MARKOUT}\n[stream]\nlateness = \"2s\"\n");
    let provisional = format!("{streamed}emit_every = \"60s\"\n");
    let every_other = format!("{streamed}emit_every = \"120s\"\n");
    let hashes = [
        hash(MARKOUT),
        hash(&streamed),
        hash(&provisional),
        hash(&every_other),
    ];
    for (i, a) in hashes.iter().enumerate() {
        for b in &hashes[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
