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
