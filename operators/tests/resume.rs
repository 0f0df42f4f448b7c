//! `EnrichRule::resume`: a rule run over a date's rows in several calls, each symbol's
//! state carried from one call to the next, gives what one `apply` over the date gives
//! (the streaming keyed stage of issue 15 releases a date's rows in such calls).
//!
//! Seeded dates of several symbols in event order, cut at random release points (the
//! rows of every symbol below the point go in that call; a symbol may have no rows in a
//! call), for each rule that carries its state: `TagRunning` (with nulls), `TagCondition`,
//! a `TagRule` that keeps a state and drops and expands rows, and `FIFOMatch`, whose
//! entry rows of earlier calls are revised as later exits match them (applied here
//! before comparing) and whose lots left open are counted at the date's end.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::DataType;
use proptest::prelude::*;
use std::collections::BTreeMap;
use vizflow_operators::enrich::{
    Carried, Emit, EnrichRule, Event, Revisions, Rows, RuleOutput, TagRule, custom,
};
use vizflow_operators::expr::{Expr, Scalar};
use vizflow_operators::fifo::{FifoMatch, FifoSpec};
use vizflow_operators::tag_condition::TagCondition;
use vizflow_operators::tag_running::TagRunning;

/// Keeps the symbol's running sum of quantities; emits nothing for a quantity that is a
/// multiple of 3, two rows for an odd one, one row otherwise.
#[derive(Debug)]
struct Bursts;

impl TagRule for Bursts {
    type State = i64;
    type Input<'a> = Option<i64>;
    type Output = (i64, i64);
    fn name(&self) -> String {
        "bursts".into()
    }
    fn inputs(&self) -> Vec<String> {
        vec!["qty".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec!["running".into(), "copy".into()]
    }
    fn process(&self, qty: Option<i64>, _: Event, sum: &mut i64, emit: &mut Emit<'_, (i64, i64)>) {
        let qty = qty.unwrap_or(0);
        *sum += qty;
        if qty % 3 == 0 {
            return;
        }
        let copies = if qty % 2 == 1 { 2 } else { 1 };
        for copy in 0..copies {
            emit.push((*sum, copy));
        }
    }
}

/// The rules under test, each reading `qty` (and `side`).
fn rules() -> Vec<Arc<dyn EnrichRule>> {
    let position = Expr::parse("prev + CASE WHEN side = 'B' THEN qty ELSE -qty END").unwrap();
    let large = Expr::parse("qty >= 5").unwrap();
    vec![
        Arc::new(TagRunning::new("position", position, Scalar::Int(0))),
        Arc::new(TagCondition::new("large", large)),
        custom(Bursts),
        Arc::new(FifoMatch::new(FifoSpec::new("side", "qty")).unwrap()),
    ]
}

/// One symbol's rows of a date: (side, qty), in event order.
type Symbol = Vec<(bool, Option<i64>)>;

/// A rule's output rows, per symbol in order: (the symbol's row, the output values).
type Outputs = Vec<Vec<(usize, Vec<Option<String>>)>>;

/// Runs `rule` over the given symbols' rows (`rows[s]` for `s` in `symbols`) as one
/// call, `first[s]` being the index of the symbol's first row here among its rows.
fn call(
    rule: &dyn EnrichRule,
    date: &[Symbol],
    parts: &[(u32, std::ops::Range<usize>)],
    carried: Option<&mut Carried>,
    outputs: &mut Outputs,
    counts: &mut BTreeMap<String, u64>,
) {
    let (mut side, mut qty, mut runs, mut origin) = (vec![], vec![], vec![0], vec![]);
    for (symbol, range) in parts {
        for row in range.clone() {
            let (buy, q) = date[*symbol as usize][row];
            side.push(if buy { "B" } else { "S" });
            qty.push(q);
            origin.push((*symbol as usize, row));
        }
        runs.push(side.len());
    }
    let n = side.len();
    let names = rule.inputs();
    let columns: Vec<ArrayRef> = names
        .iter()
        .map(|name| match name.as_str() {
            "side" => Arc::new(StringArray::from(side.clone())) as ArrayRef,
            "qty" => Arc::new(Int64Array::from(qty.clone())) as ArrayRef,
            other => panic!("unexpected input {other}"),
        })
        .collect();
    // Times rising within each symbol; row_ids unique over the date.
    let elapsed: Vec<i64> = origin.iter().map(|(_, row)| *row as i64 * 10).collect();
    let row_id: Vec<u64> = origin
        .iter()
        .map(|(s, row)| (s * 1000 + row) as u64)
        .collect();
    let rows = Rows {
        columns: &columns,
        runs: &runs,
        elapsed_ms: &elapsed,
        row_id: &row_id,
    };
    let symbols: Vec<u32> = parts.iter().map(|(s, _)| *s).collect();
    let out: RuleOutput = match carried {
        Some(carried) => rule.resume(&rows, &symbols, carried).unwrap(),
        None => rule.apply(&rows).unwrap(),
    };
    for (name, count) in &out.counts {
        *counts.entry(name.clone()).or_default() += count;
    }
    let sources: Vec<usize> = match &out.source {
        Some(source) => source.iter().map(|s| *s as usize).collect(),
        None => (0..n).collect(),
    };
    let text: Vec<ArrayRef> = out
        .columns
        .iter()
        .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
        .collect();
    for (i, source) in sources.iter().enumerate() {
        let values = text
            .iter()
            .map(|c| {
                let c = c.as_any().downcast_ref::<StringArray>().unwrap();
                c.is_valid(i).then(|| c.value(i).to_owned())
            })
            .collect();
        let (symbol, row) = origin[*source];
        outputs[symbol].push((row, values));
    }
    // Revised rows of earlier calls take their new values.
    if let Some(revisions) = &out.revisions {
        revise(rule, revisions, outputs);
    }
}

/// Gives the rows `revisions` names their new values.
fn revise(rule: &dyn EnrichRule, revisions: &Revisions, outputs: &mut Outputs) {
    let names = rule.output_names();
    for (name, column) in &revisions.columns {
        let index = names.iter().position(|n| n == name).unwrap();
        let column = arrow::compute::cast(column, &DataType::Utf8).unwrap();
        let column = column.as_any().downcast_ref::<StringArray>().unwrap();
        for (i, row_id) in revisions.row_ids.iter().enumerate() {
            let (symbol, row) = ((row_id / 1000) as usize, (row_id % 1000) as usize);
            let mut rows = outputs[symbol].iter_mut().filter(|(r, _)| *r == row);
            let (_, values) = rows.next().expect("a revised row was emitted");
            assert!(rows.next().is_none(), "a revised row has one output row");
            values[index] = column.is_valid(i).then(|| column.value(i).to_owned());
        }
    }
}

proptest! {
    #[test]
    fn resumed_calls_give_what_one_call_gives(
        date in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), proptest::option::weighted(0.9, 0i64..10)), 0..40),
            1..6,
        ),
        points in proptest::collection::vec(0usize..40, 0..6),
    ) {
        let mut points = points;
        points.sort_unstable();
        points.push(usize::MAX);
        for rule in rules() {
            let whole: Vec<_> = (0..date.len() as u32).map(|s| (s, 0..date[s as usize].len())).collect();
            let mut expected: Outputs = vec![Vec::new(); date.len()];
            let mut expected_counts = BTreeMap::new();
            call(rule.as_ref(), &date, &whole, None, &mut expected, &mut expected_counts);

            // Call k holds each symbol's rows from the previous point to point k.
            let mut carried = Carried::default();
            let mut resumed: Outputs = vec![Vec::new(); date.len()];
            let mut counts = BTreeMap::new();
            let mut from = 0;
            for &to in &points {
                let parts: Vec<_> = (0..date.len() as u32)
                    .map(|s| (s, from.min(date[s as usize].len())..to.min(date[s as usize].len())))
                    .filter(|(_, range)| !range.is_empty())
                    .collect();
                if !parts.is_empty() {
                    call(rule.as_ref(), &date, &parts, Some(&mut carried), &mut resumed, &mut counts);
                }
                from = to;
            }
            // The rows still open at the end take their last values.
            if let Some(revisions) = rule.unsettled(&carried) {
                revise(rule.as_ref(), &revisions, &mut resumed);
            }
            for (name, count) in rule.finish(&mut carried) {
                *counts.entry(name).or_default() += count;
            }
            prop_assert_eq!(&resumed, &expected, "{}", rule.name());
            // Counts of 0 are not always reported.
            counts.retain(|_, c| *c > 0);
            expected_counts.retain(|_, c| *c > 0);
            prop_assert_eq!(&counts, &expected_counts, "{}", rule.name());
        }
    }
}

#[test]
fn a_rule_without_resume_says_it_cannot_stream() {
    #[derive(Debug)]
    struct Whole;
    impl EnrichRule for Whole {
        fn name(&self) -> String {
            "Whole".into()
        }
        fn inputs(&self) -> Vec<String> {
            Vec::new()
        }
        fn output_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn outputs(
            &self,
            _: &arrow::datatypes::Schema,
        ) -> Result<Vec<arrow::datatypes::Field>, vizflow_operators::enrich::EnrichError> {
            Ok(Vec::new())
        }
        fn apply(
            &self,
            _: &Rows<'_>,
        ) -> Result<RuleOutput, vizflow_operators::enrich::EnrichError> {
            Ok(RuleOutput::default())
        }
    }
    let rows = Rows {
        columns: &[],
        runs: &[0],
        elapsed_ms: &[],
        row_id: &[],
    };
    let error = Whole
        .resume(&rows, &[], &mut Carried::default())
        .unwrap_err();
    assert_eq!(error.fault(), vizflow_operators::Fault::Config);
    assert!(
        error
            .to_string()
            .starts_with("Whole cannot run under [stream]"),
        "{error}"
    );
}
