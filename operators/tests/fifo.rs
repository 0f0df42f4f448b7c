//! The FIFO kernel against SEMANTICS.md ("FIFO matching"): a plain sequential oracle (a
//! `VecDeque` of lots per symbol) on random rows in random input order and batching, the
//! matching invariants, every input column carried to the output, and output batches
//! capped at `OUTPUT_BATCH_ROWS`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::*;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
use proptest::prelude::*;
use vizflow_operators::fifo::{FifoCounts, FifoSpec, OUTPUT_BATCH_ROWS, fifo_match};
use vizflow_testing::fifo::{FifoRow, fifo};

/// One input row; its `row_id` is its index in the generated "file".
#[derive(Clone, Debug)]
struct Row {
    symbol: i64,
    side: Option<&'static str>,
    qty: Option<i64>,
    elapsed_ms: i64,
    price: Option<f64>,
}

/// An output row: source `row_id`, then `matched_entry_id`, `matched_qty`,
/// `holding_period` and `matched_entry_price` (as f64 bits, so rows sort), `is_closed`.
type Out = (
    u64,
    Option<u64>,
    Option<i64>,
    Option<u64>,
    Option<u64>,
    Option<bool>,
);

/// How the side and symbol columns are encoded.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    Utf8,
    LargeUtf8,
    Dictionary,
}

fn bits(x: Option<f64>) -> Option<u64> {
    x.map(f64::to_bits)
}

/// SEMANTICS.md, "FIFO matching", row by row (the shared oracle, see
/// [`vizflow_testing::fifo`]), per symbol in event order, with each row's `row_id`, its
/// entry's and the entry's price.
fn oracle(rows: &[Row]) -> (Vec<Out>, u64) {
    let mut by_symbol: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for (row_id, row) in rows.iter().enumerate() {
        by_symbol.entry(row.symbol).or_default().push(row_id as u64);
    }
    let mut out: Vec<Out> = Vec::new();
    let mut unclosed = 0;
    for (_, mut ids) in by_symbol {
        ids.sort_by_key(|id| (rows[*id as usize].elapsed_ms, *id));
        let symbol: Vec<FifoRow> = ids
            .iter()
            .map(|id| {
                let row = &rows[*id as usize];
                FifoRow {
                    side: row.side,
                    qty: row.qty,
                    elapsed_ms: row.elapsed_ms,
                }
            })
            .collect();
        let (matched, counts) = fifo(&symbol);
        for m in matched {
            let entry = m.matched_entry.map(|e| ids[e]);
            let entry_price = entry.and_then(|e| bits(rows[e as usize].price));
            let holding = bits(m.holding_period);
            out.push((
                ids[m.input],
                entry,
                m.matched_qty,
                holding,
                entry_price,
                m.is_closed,
            ));
        }
        unclosed += counts.unclosed_entries;
    }
    (out, unclosed)
}

fn strings(values: Vec<Option<String>>, encoding: Encoding) -> ArrayRef {
    match encoding {
        Encoding::Utf8 => Arc::new(StringArray::from(values)),
        Encoding::LargeUtf8 => Arc::new(LargeStringArray::from(values)),
        Encoding::Dictionary => Arc::new(
            values
                .iter()
                .map(Option::as_deref)
                .collect::<DictionaryArray<Int32Type>>(),
        ),
    }
}

/// The rows `order` of `rows` as one batch, with a payload column `tag` = `t{row_id}`.
fn batch(rows: &[Row], order: &[usize], encoding: Encoding, int_symbols: bool) -> RecordBatch {
    let pick = |f: &dyn Fn(&Row) -> Option<String>| order.iter().map(|i| f(&rows[*i])).collect();
    let symbol: ArrayRef = if int_symbols {
        Arc::new(Int64Array::from_iter_values(
            order.iter().map(|i| rows[*i].symbol),
        ))
    } else {
        strings(pick(&|r| Some(format!("S{}", r.symbol))), encoding)
    };
    RecordBatch::try_from_iter([
        ("ukey", symbol),
        (
            "side",
            strings(pick(&|r| r.side.map(str::to_owned)), encoding),
        ),
        (
            "qty",
            Arc::new(Int64Array::from_iter(order.iter().map(|i| rows[*i].qty))) as _,
        ),
        (
            "price",
            Arc::new(Float64Array::from_iter(
                order.iter().map(|i| rows[*i].price),
            )) as _,
        ),
        (
            "elapsed_ms",
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|i| rows[*i].elapsed_ms),
            )) as _,
        ),
        (
            "row_id",
            Arc::new(UInt64Array::from_iter_values(
                order.iter().map(|i| *i as u64),
            )) as _,
        ),
        (
            "tag",
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|i| format!("t{i}")),
            )) as _,
        ),
    ])
    .unwrap()
}

fn spec() -> FifoSpec {
    FifoSpec::new("side", "qty").with_price("price")
}

/// The output rows of `fifo_match`, checking that every input column was carried over
/// from the source row.
fn outputs(batches: &[RecordBatch], rows: &[Row]) -> Vec<Out> {
    let mut out = Vec::new();
    for batch in batches {
        assert!(batch.num_rows() <= OUTPUT_BATCH_ROWS);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let ids = column("row_id");
        let ids = ids.as_primitive::<UInt64Type>();
        let cast = |name: &str, to: &DataType| arrow::compute::cast(&column(name), to).unwrap();
        let (qty, price, elapsed) = (column("qty"), column("price"), column("elapsed_ms"));
        let (side, tag) = (cast("side", &DataType::Utf8), column("tag"));
        let (side, tag) = (side.as_string::<i32>(), tag.as_string::<i32>());
        let entry = column("matched_entry_id");
        let matched = column("matched_qty");
        let holding = column("holding_period");
        let entry_price = column("matched_entry_price");
        let closed = column("is_closed");
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            let row = &rows[id as usize];
            assert_eq!(tag.value(i), format!("t{id}"));
            assert_eq!(side.is_valid(i).then(|| side.value(i)), row.side);
            assert_eq!(
                qty.as_primitive::<Int64Type>().iter().nth(i).unwrap(),
                row.qty
            );
            assert_eq!(
                price.as_primitive::<Float64Type>().iter().nth(i).unwrap(),
                row.price
            );
            assert_eq!(elapsed.as_primitive::<Int64Type>().value(i), row.elapsed_ms);
            let value = |a: &ArrayRef| a.is_valid(i).then_some(i);
            out.push((
                id,
                value(&entry).map(|i| entry.as_primitive::<UInt64Type>().value(i)),
                value(&matched).map(|i| matched.as_primitive::<Int64Type>().value(i)),
                value(&holding).map(|i| holding.as_primitive::<Float64Type>().value(i).to_bits()),
                value(&entry_price)
                    .map(|i| entry_price.as_primitive::<Float64Type>().value(i).to_bits()),
                value(&closed).map(|i| closed.as_boolean().value(i)),
            ));
        }
    }
    out
}

/// Every entry's `matched_qty` is the sum of the exit portions that point at it, and no
/// input row is lost.
fn check_invariants(rows: &[Row], out: &[Out]) {
    let mut taken: HashMap<u64, i64> = HashMap::new();
    for row in out {
        if let (Some(entry), Some(qty)) = (row.1, row.2) {
            *taken.entry(entry).or_default() += qty;
        }
    }
    for row in out {
        let input = &rows[row.0 as usize];
        if let (Some("B"), Some(matched)) = (input.side, row.2) {
            let taken = taken.get(&row.0).copied().unwrap_or(0);
            assert_eq!(matched, taken, "entry {}", row.0);
            assert_eq!(row.5, Some(Some(matched) == input.qty), "entry {}", row.0);
        }
    }
    let sources: HashSet<u64> = out.iter().map(|row| row.0).collect();
    assert_eq!(sources.len(), rows.len());
}

fn row_strategy() -> impl Strategy<Value = Row> {
    let side = prop_oneof![
        4 => Just(Some("B")),
        4 => Just(Some("S")),
        1 => Just(Some("X")),
        1 => Just(None),
    ];
    let qty = prop_oneof![8 => (0i64..500).prop_map(Some), 1 => Just(Some(0)), 1 => Just(None), 1 => Just(Some(-3))];
    let price = prop_oneof![4 => (1u32..1000).prop_map(|p| Some(p as f64 / 8.0)), 1 => Just(None)];
    // Few distinct times, so ties are common.
    (0i64..4, side, qty, 0i64..12, price).prop_map(|(symbol, side, qty, t, price)| Row {
        symbol,
        side,
        qty,
        elapsed_ms: t * 250,
        price,
    })
}

fn case_strategy() -> impl Strategy<Value = (Vec<Row>, Vec<usize>, Vec<usize>, Encoding, bool)> {
    prop::collection::vec(row_strategy(), 0..120).prop_flat_map(|rows| {
        let n = rows.len();
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let cuts = prop::collection::vec(0..=n, 0..4);
        let encoding = prop_oneof![
            Just(Encoding::Utf8),
            Just(Encoding::LargeUtf8),
            Just(Encoding::Dictionary)
        ];
        (Just(rows), order, cuts, encoding, any::<bool>())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fifo_matches_the_oracle_in_any_input_order_and_batching(
        (rows, order, mut cuts, encoding, int_symbols) in case_strategy()
    ) {
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        let batches: Vec<RecordBatch> = cuts
            .windows(2)
            .map(|w| batch(&rows, &order[w[0]..w[1]], encoding, int_symbols))
            .collect();
        let (out, counts) = fifo_match(&batches, &spec(), "ukey").unwrap();
        let mut got = outputs(&out, &rows);
        check_invariants(&rows, &got);
        // Every input row is in the output (in event or input order), its output rows
        // adjacent: after merging adjacent repeats, each row appears exactly once.
        let mut sources: Vec<usize> = got.iter().map(|row| row.0 as usize).collect();
        sources.dedup();
        sources.sort_unstable();
        prop_assert_eq!(sources, (0..rows.len()).collect::<Vec<_>>());
        let (mut expected, unclosed) = oracle(&rows);
        prop_assert_eq!(counts.output_rows as usize, got.len());
        prop_assert_eq!(counts.unclosed_entries, unclosed);
        got.sort_unstable();
        expected.sort_unstable();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn fifo_output_batches_hold_at_most_output_batch_rows() {
    // 40,000 entries of 1 and one exit of 40,000: 80,000 rows from 40,001.
    let n = 40_000;
    let mut rows: Vec<Row> = (0..n)
        .map(|i| Row {
            symbol: 7,
            side: Some("B"),
            qty: Some(1),
            elapsed_ms: i,
            price: Some(1.0),
        })
        .collect();
    rows.push(Row {
        symbol: 7,
        side: Some("S"),
        qty: Some(n),
        elapsed_ms: n,
        price: None,
    });
    let order: Vec<usize> = (0..rows.len()).collect();
    let input = batch(&rows, &order, Encoding::Dictionary, false);
    let (out, counts) = fifo_match(&[input], &spec(), "ukey").unwrap();
    let sizes: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
    assert_eq!(
        sizes,
        [OUTPUT_BATCH_ROWS, 2 * n as usize - OUTPUT_BATCH_ROWS]
    );
    let got = outputs(&out, &rows);
    check_invariants(&rows, &got);
    let mut expected = oracle(&rows).0;
    expected.sort_unstable();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
    // The exit's rows take the lots oldest first.
    let last = &got[n as usize..];
    assert!(
        last.iter()
            .enumerate()
            .all(|(i, row)| row.1 == Some(i as u64))
    );
    let expected_counts = FifoCounts {
        entry_rows: n as u64,
        exit_rows: 1,
        output_rows: 80_000,
        ..FifoCounts::default()
    };
    assert_eq!(counts, expected_counts);
}

#[test]
fn fifo_no_rows_give_no_batches() {
    let empty = batch(&[], &[], Encoding::Utf8, false);
    let (out, counts) = fifo_match(&[empty], &spec(), "ukey").unwrap();
    assert!(out.is_empty());
    assert_eq!(counts, FifoCounts::default());
}
