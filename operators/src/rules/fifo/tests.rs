//! FIFO matching against hand-worked cases: the kernel alone on plain columns, and
//! through the enrich kernel (event order, symbols, nulls, counts and error texts).

use super::*;
use arrow::array::{Float64Array, Int64Array, StringArray, UInt64Array};
use arrow::datatypes::UInt64Type;

use crate::columns::{ELAPSED_MS, ROW_ID};

/// An input row: symbol, side, qty, elapsed_ms, row_id.
type In<'a> = (&'a str, Option<&'a str>, Option<i64>, i64, u64);
/// An output row: source row_id and the five FIFO columns.
type Out = (
    u64,
    Option<u64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
);

fn batch(rows: &[In], prices: &[Option<f64>]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "ukey",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| Some(r.0)))) as ArrayRef,
        ),
        (
            "side",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))) as _,
        ),
        (
            "qty",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))) as _,
        ),
        ("price", Arc::new(Float64Array::from(prices.to_vec())) as _),
        (
            ELAPSED_MS,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))) as _,
        ),
        (
            ROW_ID,
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.4))) as _,
        ),
    ])
    .unwrap()
}

fn spec() -> FifoSpec {
    FifoSpec::new("side", "qty").with_price("price")
}

/// Runs `fifo_match` with prices `100 + row_id` unless given.
fn run_with_prices(rows: &[In], prices: &[Option<f64>]) -> (Vec<Out>, FifoCounts) {
    let (out, counts) = fifo_match(&[batch(rows, prices)], &spec(), "ukey").unwrap();
    let mut result = Vec::new();
    for batch in &out {
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let (ids, entry, qty) = (col(ROW_ID), col(MATCHED_ENTRY_ID), col(MATCHED_QTY));
        let (holding, price, closed) = (
            col(HOLDING_PERIOD),
            col(MATCHED_ENTRY_PRICE),
            col(IS_CLOSED),
        );
        let entry = entry.as_primitive::<UInt64Type>().iter();
        let qty = qty.as_primitive::<Int64Type>().iter();
        let holding = holding.as_primitive::<Float64Type>().iter();
        let price = price.as_primitive::<Float64Type>().iter();
        let closed = closed.as_boolean().iter();
        let ids = ids.as_primitive::<UInt64Type>().values().to_vec();
        let fifo = entry.zip(qty).zip(holding).zip(price).zip(closed);
        for (id, ((((e, q), h), p), c)) in ids.into_iter().zip(fifo) {
            result.push((id, e, q, h, p, c));
        }
    }
    assert_eq!(counts.output_rows as usize, result.len());
    // The output may come in event order or in input order (each row's output rows
    // together either way); the expectations below are in input order.
    let input_position = |id: u64| rows.iter().position(|r| r.4 == id).unwrap();
    result.sort_by_key(|r| input_position(r.0));
    (result, counts)
}

fn run(rows: &[In]) -> (Vec<Out>, FifoCounts) {
    let prices: Vec<_> = rows.iter().map(|r| Some(100.0 + r.4 as f64)).collect();
    run_with_prices(rows, &prices)
}

const NULLS: Option<u64> = None;

#[test]
fn simple_match() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(100), 0, 0),
        ("A", Some("S"), Some(100), 5_000, 1),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(100), None, None, Some(true)),
            (1, Some(0), Some(100), Some(5.0), Some(100.0), Some(true)),
        ]
    );
    assert_eq!(
        (counts.entry_rows, counts.exit_rows, counts.unclosed_entries),
        (1, 1, 0)
    );
}

#[test]
fn partial_exits_close_a_lot_in_steps() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(100), 0, 0),
        ("A", Some("S"), Some(60), 1_000, 1),
        ("A", Some("S"), Some(40), 3_500, 2),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(100), None, None, Some(true)),
            (1, Some(0), Some(60), Some(1.0), Some(100.0), Some(true)),
            (2, Some(0), Some(40), Some(3.5), Some(100.0), Some(true)),
        ]
    );
    assert_eq!(counts.unclosed_entries, 0);
}

#[test]
fn an_exit_splits_over_two_lots() {
    // The example of SEMANTICS.md: four rows from three.
    let (out, counts) = run(&[
        ("A", Some("B"), Some(50), 0, 0),
        ("A", Some("B"), Some(50), 1_000, 1),
        ("A", Some("S"), Some(80), 61_000, 2),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(50), None, None, Some(true)),
            (1, None, Some(30), None, None, Some(false)),
            (2, Some(0), Some(50), Some(61.0), Some(100.0), Some(true)),
            (2, Some(1), Some(30), Some(60.0), Some(101.0), Some(true)),
        ]
    );
    assert_eq!((counts.unclosed_entries, counts.output_rows), (1, 4));
}

#[test]
fn the_kernel_alone_on_plain_columns() {
    // Symbol one: rows 0..3 (the example of SEMANTICS.md); symbol two: row 3.
    let side = [Side::Entry, Side::Entry, Side::Exit, Side::Exit];
    let qty = Int64Array::from(vec![50, 50, 80, 80]);
    let price = Float64Array::from(vec![Some(9.5), None, None, None]);
    let columns = FifoColumns {
        side: &side,
        qty: &qty,
        elapsed_ms: &[0, 1_000, 61_000, 61_000],
        row_id: &[10, 11, 12, 13],
        price: Some(&price),
    };
    let mut out = FifoOutput::default();
    fifo_symbol(&columns, 0..3, &mut out);
    // A second symbol in the same output never touches the first one's open lot.
    fifo_symbol(&columns, 3..4, &mut out);
    assert_eq!(
        (out.counts.unmatched_exit_rows, out.counts.unclosed_entries),
        (1, 1)
    );
    assert_eq!(out.counts.output_rows, 5);
    assert_eq!(out.source, [0, 1, 2, 2, 3]);
    let [entry_id, qty, holding, price, closed] = out.into_arrays();
    let entry_id: Vec<_> = entry_id.as_primitive::<UInt64Type>().iter().collect();
    assert_eq!(entry_id, [None, None, Some(10), Some(11), None]);
    let qty: Vec<_> = qty.as_primitive::<Int64Type>().iter().collect();
    assert_eq!(qty, [Some(50), Some(30), Some(50), Some(30), Some(80)]);
    let holding: Vec<_> = holding.as_primitive::<Float64Type>().iter().collect();
    assert_eq!(holding, [None, None, Some(61.0), Some(60.0), None]);
    let price: Vec<_> = price.as_primitive::<Float64Type>().iter().collect();
    assert_eq!(price, [None, None, Some(9.5), None, None]);
    let closed: Vec<_> = closed.as_boolean().iter().collect();
    assert_eq!(
        closed,
        [Some(true), Some(false), Some(true), Some(true), Some(false)]
    );
}

#[test]
fn unclosed_entries_report_what_was_closed() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(100), 0, 0),
        ("A", Some("S"), Some(30), 1_000, 1),
        ("A", Some("B"), Some(50), 2_000, 2),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(30), None, None, Some(false)),
            (1, Some(0), Some(30), Some(1.0), Some(100.0), Some(true)),
            (2, None, Some(0), None, None, Some(false)),
        ]
    );
    assert_eq!(counts.unclosed_entries, 2);
}

#[test]
fn an_exit_before_any_entry_never_takes_a_later_lot() {
    let (out, counts) = run(&[
        ("A", Some("S"), Some(50), 0, 0),
        ("A", Some("B"), Some(50), 1_000, 1),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(50), None, None, Some(false)),
            (1, None, Some(0), None, None, Some(false)),
        ]
    );
    assert_eq!(
        (counts.unmatched_exit_rows, counts.unmatched_exit_qty),
        (1, 50)
    );
    assert_eq!(counts.unclosed_entries, 1);
}

#[test]
fn an_exit_larger_than_all_open_lots_leaves_a_remainder() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(30), 0, 0),
        ("A", Some("B"), Some(20), 0, 1),
        ("A", Some("S"), Some(100), 2_000, 2),
        ("A", Some("S"), Some(5), 3_000, 3),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(30), None, None, Some(true)),
            (1, None, Some(20), None, None, Some(true)),
            (2, Some(0), Some(30), Some(2.0), Some(100.0), Some(true)),
            (2, Some(1), Some(20), Some(2.0), Some(101.0), Some(true)),
            (2, None, Some(50), None, None, Some(false)),
            (3, None, Some(5), None, None, Some(false)),
        ]
    );
    assert_eq!(
        (counts.unmatched_exit_rows, counts.unmatched_exit_qty),
        (2, 55)
    );
    assert_eq!(counts.unclosed_entries, 0);
}

#[test]
fn zero_quantities_open_nothing_and_take_nothing() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(0), 0, 0),
        ("A", Some("S"), Some(0), 1_000, 1),
        ("A", Some("B"), Some(10), 2_000, 2),
        ("A", Some("S"), Some(0), 3_000, 3),
        ("A", Some("S"), Some(10), 4_000, 4),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(0), None, None, Some(true)),
            (1, None, Some(0), None, None, Some(false)),
            (2, None, Some(10), None, None, Some(true)),
            (3, None, Some(0), None, None, Some(false)),
            (4, Some(2), Some(10), Some(2.0), Some(102.0), Some(true)),
        ]
    );
    assert_eq!(counts.zero_qty_rows, 3);
    assert_eq!(
        (counts.unmatched_exit_rows, counts.unclosed_entries),
        (0, 0)
    );
}

#[test]
fn other_sides_pass_through_with_null_fifo_columns() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(10), 0, 0),
        ("A", Some("X"), Some(10), 1_000, 1),
        ("A", Some("b"), Some(10), 1_000, 2),
        ("A", Some("S"), Some(10), 2_000, 3),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(10), None, None, Some(true)),
            (1, NULLS, None, None, None, None),
            (2, NULLS, None, None, None, None),
            (3, Some(0), Some(10), Some(2.0), Some(100.0), Some(true)),
        ]
    );
    assert_eq!(counts.other_side_rows, 2);
}

#[test]
fn ties_in_time_are_resolved_by_row_id_whatever_the_input_order() {
    // Given out of order; event order is row 3 (B 7 at 500 ms), then at 1,000 ms
    // row 0 (B 10), row 1 (S 10) and row 2 (S 10). Input order would match nothing.
    // The output keeps the input order.
    let (out, _) = run(&[
        ("A", Some("S"), Some(10), 1_000, 2),
        ("A", Some("S"), Some(10), 1_000, 1),
        ("A", Some("B"), Some(10), 1_000, 0),
        ("A", Some("B"), Some(7), 500, 3),
    ]);
    assert_eq!(
        out,
        [
            (2, Some(0), Some(7), Some(0.0), Some(100.0), Some(true)),
            (2, None, Some(3), None, None, Some(false)),
            (1, Some(3), Some(7), Some(0.5), Some(103.0), Some(true)),
            (1, Some(0), Some(3), Some(0.0), Some(100.0), Some(true)),
            (0, None, Some(10), None, None, Some(true)),
            (3, None, Some(7), None, None, Some(true)),
        ]
    );
}

#[test]
fn several_symbols_interleaved_are_matched_separately() {
    let (out, counts) = run(&[
        ("A", Some("B"), Some(10), 0, 0),
        ("Z", Some("S"), Some(5), 0, 1),
        ("A", Some("S"), Some(4), 1_000, 2),
        ("Z", Some("B"), Some(5), 1_000, 3),
        ("A", Some("S"), Some(10), 2_000, 4),
    ]);
    assert_eq!(
        out,
        [
            (0, None, Some(10), None, None, Some(true)),
            (1, None, Some(5), None, None, Some(false)),
            (2, Some(0), Some(4), Some(1.0), Some(100.0), Some(true)),
            (3, None, Some(0), None, None, Some(false)),
            (4, Some(0), Some(6), Some(2.0), Some(100.0), Some(true)),
            (4, None, Some(4), None, None, Some(false)),
        ]
    );
    assert_eq!(
        (counts.unmatched_exit_rows, counts.unclosed_entries),
        (2, 1)
    );
}

#[test]
fn null_side_qty_and_price() {
    let rows = [
        ("A", None, Some(10), 0, 0),
        ("A", Some("B"), None, 0, 1),
        ("A", Some("B"), Some(-5), 0, 2),
        ("A", Some("B"), Some(10), 0, 3),
        ("A", Some("S"), None, 1_000, 4),
        ("A", Some("S"), Some(4), 1_000, 5),
        ("A", Some("X"), None, 1_000, 6),
    ];
    let prices = [
        Some(1.0),
        Some(1.0),
        Some(1.0),
        None,
        Some(1.0),
        Some(1.0),
        None,
    ];
    let (out, counts) = run_with_prices(&rows, &prices);
    assert_eq!(
        out,
        [
            (0, NULLS, None, None, None, None),
            (1, NULLS, None, None, None, None),
            (2, NULLS, None, None, None, None),
            (3, None, Some(4), None, None, Some(false)),
            (4, NULLS, None, None, None, None),
            (5, Some(3), Some(4), Some(1.0), None, Some(true)),
            (6, NULLS, None, None, None, None),
        ]
    );
    assert_eq!((counts.invalid_qty_rows, counts.other_side_rows), (3, 2));
}

#[test]
fn a_null_symbol_is_a_symbol_of_its_own() {
    let batch = batch(
        &[
            ("A", Some("B"), Some(10), 0, 0),
            ("A", Some("S"), Some(10), 1_000, 1),
        ],
        &[None, None],
    );
    let symbols: ArrayRef = Arc::new(StringArray::from(vec![None, Some("A")]));
    let batch = crate::batch::with_columns(&batch, vec![("ukey".to_owned(), symbols)]);
    let (_, counts) = fifo_match(&[batch], &spec(), "ukey").unwrap();
    assert_eq!(
        (counts.unclosed_entries, counts.unmatched_exit_rows),
        (1, 1)
    );
}

#[test]
fn integer_sides_and_narrow_quantities() {
    let good = batch(
        &[("A", None, None, 0, 0), ("A", None, None, 1_000, 1)],
        &[None; 2],
    );
    let sides: ArrayRef = Arc::new(arrow::array::Int8Array::from(vec![1, -1]));
    let qty: ArrayRef = Arc::new(arrow::array::UInt32Array::from(vec![5, 3]));
    let batch = crate::batch::with_columns(
        &good,
        vec![("side".to_owned(), sides), ("qty".to_owned(), qty)],
    );
    let spec = FifoSpec {
        entry_side: "1".into(),
        exit_side: "-1".into(),
        ..spec()
    };
    let (out, counts) = fifo_match(&[batch], &spec, "ukey").unwrap();
    let matched = out[0].column_by_name(MATCHED_QTY).unwrap();
    assert_eq!(matched.as_primitive::<Int64Type>().values(), &[3, 3]);
    assert_eq!(
        (counts.entry_rows, counts.exit_rows, counts.unclosed_entries),
        (1, 1, 1)
    );
}

#[test]
fn error_texts() {
    let rows = [("A", Some("B"), Some(10), 0, 0)];
    let good = batch(&rows, &[None]);
    let error = |batches: &[RecordBatch], spec: &FifoSpec| {
        fifo_match(batches, spec, "ukey").unwrap_err().to_string()
    };
    let floats: ArrayRef = Arc::new(Float64Array::from(vec![10.0]));
    let float_qty = crate::batch::with_columns(&good, vec![("qty".to_owned(), floats)]);
    assert_eq!(
        error(&[float_qty], &spec()),
        "FIFOMatch: quantity column 'qty' has type Float64; FIFO matches integer \
         quantities, so cast it first with [[cast]] column = \"qty\" and to = \"int64\""
    );
    let no_side = FifoSpec {
        side: "orderSide".into(),
        ..spec()
    };
    assert_eq!(
        error(std::slice::from_ref(&good), &no_side),
        "FIFOMatch: unknown column 'orderSide'; available columns: ukey, side, qty, price, \
         elapsed_ms, row_id"
    );
    let same = FifoSpec {
        exit_side: "B".into(),
        ..spec()
    };
    assert_eq!(
        error(std::slice::from_ref(&good), &same),
        "FIFOMatch: the entry side and the exit side are both 'B'; they must differ"
    );
    let late: ArrayRef = Arc::new(Int64Array::from(vec![1 << 27]));
    let late = crate::batch::with_columns(&good, vec![(ELAPSED_MS.to_owned(), late)]);
    assert_eq!(
        error(&[late], &spec()),
        "enrich: event time out of range (elapsed_ms 134217728, row_id 0); \
         elapsed_ms must be in 0..2^27 and row_id below 2^36"
    );
    let fewer = good.project(&[0, 1, 2, 4, 5]).unwrap();
    assert_eq!(
        error(&[good.clone(), fewer], &FifoSpec::new("side", "qty")),
        "enrich: batch 1 of the date has columns (ukey: Utf8, side: Utf8, qty: Int64, \
         elapsed_ms: Int64, row_id: UInt64) but batch 0 has (ukey: Utf8, side: Utf8, \
         qty: Int64, price: Float64, elapsed_ms: Int64, row_id: UInt64); all batches of \
         a date must share one schema"
    );
}

/// One resumed call of the rule over one symbol's rows: (side, qty, row_id), a second
/// apart.
fn resume(rule: &FifoMatch, carried: &mut Carried, rows: &[(&str, i64, u64)]) {
    let sides: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
    let qty: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1)));
    let prices: ArrayRef = Arc::new(Float64Array::from(vec![1.0; rows.len()]));
    let elapsed: Vec<i64> = rows.iter().map(|r| 1_000 * r.2 as i64).collect();
    let row_id: Vec<u64> = rows.iter().map(|r| r.2).collect();
    let rows = Rows {
        columns: &[sides, qty, prices],
        runs: &[0, rows.len()],
        elapsed_ms: &elapsed,
        row_id: &row_id,
    };
    rule.resume(&rows, &[0], carried).unwrap();
}

/// (row_id, matched_qty) of each change, and whether any closes its row.
fn changes(revisions: Option<Revisions>) -> Vec<(u64, i64)> {
    let Some(revisions) = revisions else {
        return Vec::new();
    };
    assert!(revisions.settled.iter().all(|s| !s));
    let matched = revisions
        .columns
        .iter()
        .find(|(n, _)| n == MATCHED_QTY)
        .unwrap();
    let matched = matched.1.as_primitive::<Int64Type>().values();
    revisions
        .row_ids
        .iter()
        .copied()
        .zip(matched.iter().copied())
        .collect()
}

#[test]
fn unsettled_changed_gives_the_open_entries_changed_since_they_went_out() {
    let rule = FifoMatch::new(spec()).unwrap();
    let mut carried = Carried::default();
    // Entry 0 goes out matched 4 of 10 (its call's output says so); entry 2 unmatched.
    resume(
        &rule,
        &mut carried,
        &[("B", 10, 0), ("S", 4, 1), ("B", 5, 2)],
    );
    assert_eq!(changes(rule.unsettled_changed(&mut carried)), []);
    // Entry 0 matched further by an exit of a later call: changed, once.
    resume(&rule, &mut carried, &[("S", 3, 3)]);
    assert_eq!(changes(rule.unsettled_changed(&mut carried)), [(0, 7)]);
    assert_eq!(changes(rule.unsettled_changed(&mut carried)), []);
    // Entry 0 closes (a settling change of the call, not this), entry 2 matched by 1.
    resume(&rule, &mut carried, &[("S", 4, 4)]);
    assert_eq!(changes(rule.unsettled_changed(&mut carried)), [(2, 1)]);
    // `unsettled` still gives every open entry with a match, changed or not.
    assert_eq!(changes(rule.unsettled(&carried)), [(2, 1)]);
}

proptest::proptest! {
    /// A `Utf8` side column's sides, read from its offsets and bytes (with a table when
    /// both sides are one byte), are those of each value by `FifoSpec::side_of`, null
    /// being neither; for sides of one byte and of several, values of other lengths
    /// (the empty one last too), and a slice of the column.
    #[test]
    fn utf8_sides_are_each_values_side(
        values in proptest::collection::vec(
            proptest::option::weighted(0.9, proptest::sample::select(vec!["B", "S", "", "BS", "b", "BUY", "SELL", "\0"])),
            0..40,
        ),
        sides in proptest::sample::select(vec![("B", "S"), ("BUY", "SELL"), ("B", "SELL"), ("\0", "S")]),
        offset in 0usize..5,
    ) {
        let spec = FifoSpec { entry_side: sides.0.into(), exit_side: sides.1.into(), ..FifoSpec::new("side", "qty") };
        let column = StringArray::from(values.clone());
        let offset = offset.min(values.len());
        let column: ArrayRef = Arc::new(column.slice(offset, values.len() - offset));
        let mut got = Vec::new();
        push_sides(&column, &spec, &mut got).unwrap();
        let expected: Vec<Side> = values[offset..]
            .iter()
            .map(|v| v.map_or(Side::Other, |v| spec.side_of(v)))
            .collect();
        proptest::prop_assert_eq!(got, expected);
    }
}
