//! The kernel: runs an [`EnrichSpec`]'s rules over one date's rows (a worker's share of
//! them) and hands back the output lazily. It orders the rows by event, checks and plans
//! the rules ([`RulePlan`]), then either runs them over the whole date or leaves them to
//! run a chunk of symbols at a time as the output is consumed ([`EnrichOutput`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::event_order::{event_order, first_row_id};
use super::frame::Frame;
use super::output::EnrichOutput;
use super::plan::RulePlan;
use super::{EnrichError, EnrichSpec};
use crate::batch::{SelectedRows, selected_len, symbol_ids};

/// Runs `spec`'s rules over one date's rows (all symbols of the given batches, which
/// must share one schema and hold `elapsed_ms` (Int64), `row_id` (UInt64) and the
/// symbol column). Returns the output batches (see the module docs for their rows and
/// order) and the rules' counts, summed by name.
pub fn enrich(
    batches: &[RecordBatch],
    spec: &EnrichSpec,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, u64>), EnrichError> {
    enrich_owned(batches.to_vec(), spec)
}

/// [`enrich`] taking the batches, so that columns no later step needs are freed as
/// soon as the rules are done with them.
pub fn enrich_owned(
    batches: Vec<RecordBatch>,
    spec: &EnrichSpec,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, u64>), EnrichError> {
    let mut output = enrich_lazy(batches, spec)?;
    let batches = output.by_ref().collect::<Result<_, _>>()?;
    Ok((batches, output.counts().clone()))
}

/// [`enrich_owned`] with the output built lazily as the returned iterator is consumed:
/// one input batch at a time (input order), or one chunk of symbols at a time (event
/// order, when the rules run chunk by chunk too). The rules' counts are complete once
/// the iterator is exhausted ([`EnrichOutput::counts`]).
pub fn enrich_lazy(
    batches: Vec<RecordBatch>,
    spec: &EnrichSpec,
) -> Result<EnrichOutput, EnrichError> {
    enrich_selected(batches.into_iter().map(|b| (b, None)).collect(), spec)
}

/// [`enrich_lazy`] over batches of which only selected rows count (as the exchange by
/// symbol hands them over, see [`crate::batch::Batch::take_selected`]): the rows are
/// read through the selections, not copied out first.
pub fn enrich_selected(
    parts: Vec<SelectedRows>,
    spec: &EnrichSpec,
) -> Result<EnrichOutput, EnrichError> {
    enrich_in_chunks(parts, spec, CHUNK_ROWS)
}

/// [`enrich_selected`], with chunks of `chunk_rows` rows when the rules run chunk by
/// chunk.
pub(super) fn enrich_in_chunks(
    parts: Vec<SelectedRows>,
    spec: &EnrichSpec,
    chunk_rows: usize,
) -> Result<EnrichOutput, EnrichError> {
    let parts: Vec<SelectedRows> = parts.into_iter().filter(|p| selected_len(p) > 0).collect();
    if parts.is_empty() {
        let empty = Frame::new(Vec::new(), event_order(&[], &[], 0)?);
        let schema = Arc::new(Schema::empty());
        return EnrichOutput::of_frame(empty, schema, false, BTreeMap::new());
    }
    let input_schema = common_schema(&parts)?;
    let rows: usize = parts.iter().map(selected_len).sum();
    if rows >= u32::MAX as usize {
        return Err(EnrichError::TooManyRows {
            rows,
            max: u32::MAX - 1,
        });
    }

    // Parts in row_id order (each part's rows are a subset of a contiguous run of the
    // date's rows), so that each symbol's rows are nearly in event order already.
    let mut parts = parts;
    parts.sort_by_cached_key(first_row_id);
    let (symbols, symbol_count) = symbol_ids(&parts, &spec.symbol, "enrich")?;
    let events = event_order(&parts, &symbols, symbol_count)?;
    drop(symbols);
    let mut frame = Frame::new(parts, events);

    let plan = RulePlan::new(spec, &input_schema)?;
    if plan.event_order && !plan.early.is_empty() {
        // The rules run a chunk of symbols at a time, as the output is consumed, over
        // input columns put in event order now.
        frame.order_inputs(&plan.early)?;
        return Ok(EnrichOutput::chunked(frame, plan, chunk_rows));
    }
    let mut counts = BTreeMap::new();
    plan.run(&mut frame, &mut counts)?;
    EnrichOutput::of_frame(frame, plan.schema, plan.event_order, counts)
}

/// The symbols' rows that the rules run over at a time when the output is in event
/// order: enough for the per-chunk work to be negligible, few enough that what the
/// rules add for a chunk is a small part of the date's memory.
const CHUNK_ROWS: usize = 1 << 18;

/// Whether two schemas have the same column names and types, in order.
pub(super) fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && (a.fields().iter())
            .zip(b.fields())
            .all(|(f, g)| f.name() == g.name() && f.data_type() == g.data_type())
}

/// The batches' common schema (nullable if any batch's column is), or an error naming
/// the first batch that differs.
pub(super) fn common_schema(parts: &[SelectedRows]) -> Result<SchemaRef, EnrichError> {
    let first = parts[0].0.schema();
    let mut fields: Vec<Field> = first.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (b, (batch, _)) in parts.iter().enumerate().skip(1) {
        let schema = batch.schema();
        if !same_columns(&schema, &first) {
            return Err(EnrichError::SchemaMismatch {
                batch: b,
                schema,
                first,
            });
        }
        for (field, other) in fields.iter_mut().zip(schema.fields()) {
            if other.is_nullable() && !field.is_nullable() {
                *field = field.clone().with_nullable(true);
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray, UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Int64Type};

    use crate::batch::take_rows;
    use crate::columns::{ELAPSED_MS, ROW_ID};
    use crate::enrich::{Emit, Event, TagRule, custom};

    /// Rows of two symbols, given out of event order: (symbol, elapsed_ms, qty).
    fn batch() -> RecordBatch {
        let rows = [
            ("A", 3_000, 5),
            ("B", 1_000, 7),
            ("A", 1_000, 2),
            ("A", 1_000, 4),
            ("B", 0, 1),
        ];
        RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                ELAPSED_MS,
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as _,
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))) as _,
            ),
            (ROW_ID, Arc::new(UInt64Array::from_iter_values(0..5)) as _),
        ])
        .unwrap()
    }

    /// Emits `qty` copies of each row with odd quantity (numbered 1..), none of even
    /// ones, and the running sum of quantities per symbol.
    #[derive(Debug)]
    struct Expand;

    impl TagRule for Expand {
        type State = i64;
        type Input<'a> = i64;
        type Output = (i64, Option<i64>);
        fn name(&self) -> String {
            "expand".into()
        }
        fn inputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn outputs(&self) -> Vec<String> {
            vec!["copy".into(), "running".into()]
        }
        fn process(&self, qty: i64, _: Event, sum: &mut i64, emit: &mut Emit<'_, Self::Output>) {
            *sum += qty;
            if qty % 2 == 1 {
                for copy in 1..=qty.min(2) {
                    emit.push((copy, Some(*sum)));
                }
            }
        }
    }

    fn column(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
        let mut values = Vec::new();
        for batch in batches {
            let column = batch.column_by_name(name).unwrap();
            let column = arrow::compute::cast(column, &DataType::Int64).unwrap();
            values.extend(column.as_primitive::<Int64Type>().iter());
        }
        values
    }

    #[test]
    fn reading_through_selections_equals_copying_the_rows_out() {
        // One shared batch split by two selections (as the exchange shares it), plus a
        // batch without one; nulls in selected and unselected rows; a Utf8 column
        // (scattered), a dictionary column (gathered) and a float column.
        let n = 40u32;
        let shared = RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["A", "B", "C"][i as usize % 3]),
                )) as ArrayRef,
            ),
            (
                ELAPSED_MS,
                Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| i64::from(i * 7919 % 50) * 100),
                )) as _,
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then_some(i64::from(i))),
                )) as _,
            ),
            (
                "px",
                Arc::new(arrow::array::Float64Array::from_iter(
                    (0..n).map(|i| (i % 4 != 1).then_some(f64::from(i) / 3.0)),
                )) as _,
            ),
            (
                "tag",
                Arc::new(
                    (0..n)
                        .map(|i| (i % 7 != 3).then_some(["x", "y"][i as usize % 2]))
                        .collect::<arrow::array::DictionaryArray<arrow::datatypes::Int32Type>>(),
                ) as _,
            ),
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values((0..n).map(u64::from))) as _,
            ),
        ])
        .unwrap();
        let even = UInt32Array::from_iter_values((0..n).filter(|i| i % 2 == 0));
        let odd = UInt32Array::from_iter_values((0..n).filter(|i| i % 3 != 0 && i % 2 == 1));
        let rest = UInt32Array::from_iter_values((0..n).filter(|i| i % 3 == 0 && i % 2 == 1));
        let alone = take_rows(&shared, &rest);
        // Input order (many kept input columns), event order with a scattered
        // float and with a gathered dictionary column, and input order again.
        let keeps = [
            None,
            Some(["px", "copy", "running"]),
            Some(["tag", "copy", "running"]),
            Some(["ukey", "px", "tag"]),
        ];
        for keep in keeps {
            let keep = keep.map(|names| names.map(str::to_owned).to_vec());
            let spec = EnrichSpec {
                symbol: "ukey".into(),
                rules: vec![custom(Expand)],
                keep,
                open_in_place: None,
            };
            let parts = vec![
                (shared.clone(), Some(even.clone())),
                (shared.clone(), Some(odd.clone())),
                (alone.clone(), None),
            ];
            let copied: Vec<RecordBatch> = [&even, &odd]
                .into_iter()
                .map(|rows| take_rows(&shared, rows))
                .chain([alone.clone()])
                .collect();
            let mut output = enrich_selected(parts, &spec).unwrap();
            let through: Vec<RecordBatch> = output.by_ref().collect::<Result<_, _>>().unwrap();
            let through_counts = output.counts().clone();
            let (expected, expected_counts) = enrich(&copied, &spec).unwrap();
            let concat = |batches: &[RecordBatch]| {
                arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
            };
            assert_eq!(concat(&through), concat(&expected));
            assert_eq!(through_counts, expected_counts);
        }
    }

    /// Replaces `qty` with its half (rounded down).
    #[derive(Debug)]
    struct Halve;

    impl TagRule for Halve {
        type State = ();
        type Input<'a> = Option<i64>;
        type Output = Option<i64>;
        fn name(&self) -> String {
            "halve".into()
        }
        fn inputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn outputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn process(
            &self,
            qty: Option<i64>,
            _: Event,
            _: &mut (),
            emit: &mut Emit<'_, Self::Output>,
        ) {
            emit.push(qty.map(|q| q / 2));
        }
    }

    #[test]
    fn event_order_output_keeps_input_columns_when_a_rule_replaces_one_another_reads() {
        // Expand reads the input `qty`, Halve replaces it: the input batches must stay
        // until the output is built, which keeps `ukey` (read by no rule) in event order.
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand), custom(Halve)],
            keep: Some(vec![
                "ukey".into(),
                "copy".into(),
                "running".into(),
                "qty".into(),
            ]),
            open_in_place: None,
        };
        let (out, _) = enrich(&[batch()], &spec).unwrap();
        let ukeys: Vec<String> = out
            .iter()
            .flat_map(|b| b.column_by_name("ukey").unwrap().as_string::<i32>().iter())
            .map(|v| v.unwrap().to_owned())
            .collect();
        let mut sorted = ukeys.clone();
        sorted.sort();
        // Rows 0 (A, qty 5), 1 (B, 7) and 4 (B, 1) survive, rows 0 and 1 twice.
        assert_eq!(sorted, ["A", "A", "B", "B", "B"]);
        let mut halves = column(&out, "qty");
        halves.sort();
        assert_eq!(halves, [Some(0), Some(2), Some(2), Some(3), Some(3)]);
    }

    #[test]
    fn custom_rules_expand_and_drop_rows_in_event_order() {
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand)],
            keep: None,
            open_in_place: None,
        };
        let (out, counts) = enrich(&[batch()], &spec).unwrap();
        // Input order; per symbol in event order A: rows 2 (qty 2), 3 (4), 0 (5) and
        // B: rows 4 (1), 1 (7). Even quantities are dropped, odd ones copied up to twice.
        assert_eq!(
            column(&out, ROW_ID),
            [Some(0), Some(0), Some(1), Some(1), Some(4)]
        );
        assert_eq!(
            column(&out, "copy"),
            [Some(1), Some(2), Some(1), Some(2), Some(1)]
        );
        assert_eq!(
            column(&out, "running"),
            [Some(11), Some(11), Some(8), Some(8), Some(1)]
        );
        assert_eq!(
            column(&out, "qty"),
            [Some(5), Some(5), Some(7), Some(7), Some(1)]
        );
        assert_eq!(counts["rule.expand.dropped_rows"], 2);
        assert_eq!(counts["rule.expand.added_rows"], 2);
    }

    #[test]
    fn kept_columns_only() {
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand)],
            keep: Some(vec!["running".into(), "ukey".into()]),
            open_in_place: None,
        };
        let (out, _) = enrich(&[batch()], &spec).unwrap();
        let names: Vec<String> = out[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["ukey", "running"]);
    }

    #[test]
    fn rule_errors_name_the_rule_and_column() {
        #[derive(Debug)]
        struct Wrong;
        impl TagRule for Wrong {
            type State = ();
            type Input<'a> = Option<&'a str>;
            type Output = bool;
            fn name(&self) -> String {
                "wrong".into()
            }
            fn inputs(&self) -> Vec<String> {
                vec!["qty".into()]
            }
            fn outputs(&self) -> Vec<String> {
                vec!["flag".into()]
            }
            fn process(&self, _: Option<&str>, _: Event, _: &mut (), emit: &mut Emit<'_, bool>) {
                emit.push(true);
            }
        }
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Wrong)],
            keep: None,
            open_in_place: None,
        };
        let error = enrich(&[batch()], &spec).unwrap_err();
        assert_eq!(error.fault(), crate::Fault::Config);
        assert_eq!(
            error.to_string(),
            "TagRule(wrong): input column 'qty' has type Int64, which cannot be read as \
             &str (any string column)"
        );
    }
}
