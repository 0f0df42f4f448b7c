//! The `enrich` kernel with several rules at once, against SEMANTICS.md and the rules'
//! documented decisions, by topic:
//! - `oracle`: a plain sequential oracle (per symbol, rows sorted by `(elapsed_ms,
//!   row_id)`, rules applied one after the other, each over the rows the previous one
//!   left) on random rows in random input order and batching: ties in time, nulls in
//!   symbol, side, quantity and price, other and lower-case sides, zero and negative
//!   quantities, NaN prices, integer and string symbols. Every output row is compared
//!   whole (input columns and added columns) in the documented output order (input order,
//!   an input row's rows together in the order the rules emitted them), and every count;
//! - `example`: the rules on a small hand-computed case;
//! - `dates`: running values and lots start afresh for every date;
//! - `errors`: the text of a running value's integer overflow.
//!
//! The rules, in order: `position` (TagRunning, Int64, over the original rows),
//! `seen_sell` (TagRunning, Boolean, three-valued logic), FIFOMatch, `big_exit`
//! (TagCondition), `closed_qty` (TagRunning over FIFO's `matched_qty`, so over the
//! expanded rows), `splitter` (a custom TagRule that drops rows, splits others in two and
//! replaces `matched_qty` in place), `notional_run` (TagRunning, Float64, over the
//! splitter's rows and `matched_qty`) and `half_qty` (TagRunning whose Int64 initial value
//! is widened to Float64 by the update).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::*;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
use proptest::prelude::*;
use vizflow_operators::enrich::{Emit, EnrichRule, EnrichSpec, Event, TagRule, custom, enrich};
use vizflow_operators::expr::{Expr, Scalar};
use vizflow_operators::fifo::{FifoMatch, FifoSpec};
use vizflow_operators::tag_condition::TagCondition;
use vizflow_operators::tag_running::TagRunning;
use vizflow_testing::fifo::FifoRow;

const POSITION: &str = "prev + CASE WHEN side = 'B' THEN qty ELSE -qty END";

/// One input row; its `row_id` is its index in the generated "file".
#[derive(Clone, Debug)]
struct Row {
    symbol: Option<i64>,
    side: Option<&'static str>,
    qty: Option<i64>,
    elapsed_ms: i64,
    price: Option<f64>,
}

/// Drops rows with a null side and rows whose `matched_qty` is 0, splits rows whose
/// `matched_qty` is a multiple of 4 into a quarter (`part` 0) and the rest (`part` 1),
/// replacing `matched_qty`. `seq` numbers the rows it saw per symbol (dropped ones
/// included), `event_*` echo the event, `flag` says the position or the price is null.
#[derive(Debug)]
struct Splitter;

impl TagRule for Splitter {
    type State = i64;
    type Input<'a> = (Option<&'a str>, Option<i64>, Option<i64>, Option<f64>);
    type Output = (i64, u64, Option<i64>, u64, i64, bool);

    fn name(&self) -> String {
        "splitter".into()
    }
    fn inputs(&self) -> Vec<String> {
        ["side", "matched_qty", "position", "price"]
            .map(String::from)
            .to_vec()
    }
    fn outputs(&self) -> Vec<String> {
        [
            "seq",
            "part",
            "matched_qty",
            "event_row_id",
            "event_ms",
            "flag",
        ]
        .map(String::from)
        .to_vec()
    }
    fn process(
        &self,
        (side, matched_qty, position, price): Self::Input<'_>,
        event: Event,
        seen: &mut i64,
        emit: &mut Emit<'_, Self::Output>,
    ) {
        *seen += 1;
        if side.is_none() || matched_qty == Some(0) {
            return;
        }
        let flag = position.is_none() || price.is_none();
        let row = |part, qty| (*seen, part, qty, event.row_id, event.elapsed_ms, flag);
        match matched_qty {
            Some(q) if q % 4 == 0 => {
                emit.push(row(0, Some(q / 4)));
                emit.push(row(1, Some(q - q / 4)));
            }
            q => emit.push(row(0, q)),
        }
    }
}

fn running(name: &str, update: &str, initial: Scalar) -> Arc<dyn EnrichRule> {
    Arc::new(TagRunning::new(name, Expr::parse(update).unwrap(), initial))
}

fn spec() -> EnrichSpec {
    let fifo = FifoMatch::new(FifoSpec::new("side", "qty").with_price("price")).unwrap();
    let big_exit = Expr::parse("matched_qty >= 100 AND side = 'S'").unwrap();
    EnrichSpec {
        symbol: "ukey".into(),
        rules: vec![
            running("position", POSITION, Scalar::Int(0)),
            running("seen_sell", "prev OR side = 'S'", Scalar::Bool(false)),
            Arc::new(fifo),
            Arc::new(TagCondition::new("big_exit", big_exit)),
            running(
                "closed_qty",
                "prev + coalesce(matched_qty, 0)",
                Scalar::Int(0),
            ),
            custom(Splitter),
            running(
                "notional_run",
                "prev + coalesce(matched_qty * price, 0.0)",
                Scalar::Float(0.0),
            ),
            running("half_qty", "prev + 0.5 * coalesce(qty, 0)", Scalar::Int(0)),
        ],
        keep: None,
        open_in_place: None,
    }
}

/// The columns the rules add and their types, in output order (`matched_qty` keeps
/// FIFO's place though the splitter replaces it).
fn added_columns() -> [(&'static str, DataType); 16] {
    [
        ("position", DataType::Int64),
        ("seen_sell", DataType::Boolean),
        ("matched_entry_id", DataType::UInt64),
        ("matched_qty", DataType::Int64),
        ("holding_period", DataType::Float64),
        ("matched_entry_price", DataType::Float64),
        ("is_closed", DataType::Boolean),
        ("big_exit", DataType::Boolean),
        ("closed_qty", DataType::Int64),
        ("seq", DataType::Int64),
        ("part", DataType::UInt64),
        ("event_row_id", DataType::UInt64),
        ("event_ms", DataType::Int64),
        ("flag", DataType::Boolean),
        ("notional_run", DataType::Float64),
        ("half_qty", DataType::Float64),
    ]
}

const INPUT_COLUMNS: [&str; 7] = [
    "ukey",
    "side",
    "qty",
    "price",
    "elapsed_ms",
    "row_id",
    "tag",
];

/// A float compared bit for bit, except that every NaN is equal.
#[derive(Clone, Copy)]
struct F(f64);

impl PartialEq for F {
    fn eq(&self, other: &F) -> bool {
        self.0.to_bits() == other.0.to_bits() || (self.0.is_nan() && other.0.is_nan())
    }
}

impl fmt::Debug for F {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One value of an output row.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(F),
    Bool(bool),
    Str(String),
}

fn cell<T>(value: Option<T>, make: impl Fn(T) -> Cell) -> Cell {
    value.map_or(Cell::Null, make)
}

/// The values of a column, whatever its type.
fn cells(column: &ArrayRef) -> Vec<Cell> {
    match column.data_type() {
        DataType::Int64 => column
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| cell(v, Cell::Int))
            .collect(),
        DataType::UInt64 => column
            .as_primitive::<UInt64Type>()
            .iter()
            .map(|v| cell(v, Cell::UInt))
            .collect(),
        DataType::Float64 => column
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| cell(v, |x| Cell::Float(F(x))))
            .collect(),
        DataType::Boolean => column
            .as_boolean()
            .iter()
            .map(|v| cell(v, Cell::Bool))
            .collect(),
        _ => {
            let strings = arrow::compute::cast(column, &DataType::Utf8).unwrap();
            strings
                .as_string::<i32>()
                .iter()
                .map(|v| cell(v, |s| Cell::Str(s.to_owned())))
                .collect()
        }
    }
}

/// The output rows, each as its values in schema order, checking the schema: the input
/// columns with their types, then the added ones.
fn output_rows(batches: &[RecordBatch], input: &RecordBatch) -> Vec<Vec<Cell>> {
    let mut expected_fields: Vec<(String, DataType)> = INPUT_COLUMNS
        .iter()
        .map(|c| {
            (
                c.to_string(),
                input
                    .schema()
                    .field_with_name(c)
                    .unwrap()
                    .data_type()
                    .clone(),
            )
        })
        .collect();
    expected_fields.extend(added_columns().map(|(n, t)| (n.to_owned(), t)));
    let mut rows = Vec::new();
    for batch in batches {
        let fields: Vec<(String, DataType)> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(fields, expected_fields);
        let columns: Vec<Vec<Cell>> = batch.columns().iter().map(cells).collect();
        for i in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c[i].clone()).collect());
        }
    }
    rows
}

/// How the symbol and side columns are encoded.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    Int,
    Utf8,
    LargeUtf8,
    Dictionary,
}

fn strings(values: Vec<Option<String>>, encoding: Encoding) -> ArrayRef {
    match encoding {
        Encoding::LargeUtf8 => Arc::new(LargeStringArray::from(values)),
        Encoding::Dictionary => Arc::new(
            values
                .iter()
                .map(Option::as_deref)
                .collect::<DictionaryArray<Int32Type>>(),
        ),
        Encoding::Int | Encoding::Utf8 => Arc::new(StringArray::from(values)),
    }
}

fn symbol_cell(symbol: Option<i64>, encoding: Encoding) -> Cell {
    match (symbol, encoding) {
        (None, _) => Cell::Null,
        (Some(s), Encoding::Int) => Cell::Int(s),
        (Some(s), _) => Cell::Str(format!("S{s}")),
    }
}

/// The rows `order` of `rows` as one batch, with a payload column `tag` = `t{row_id}`.
fn batch(rows: &[Row], order: &[usize], encoding: Encoding) -> RecordBatch {
    let pick = |f: &dyn Fn(&Row) -> Option<String>| order.iter().map(|i| f(&rows[*i])).collect();
    let symbol: ArrayRef = match encoding {
        Encoding::Int => Arc::new(Int64Array::from_iter(order.iter().map(|i| rows[*i].symbol))),
        _ => strings(pick(&|r| r.symbol.map(|s| format!("S{s}"))), encoding),
    };
    let side = strings(pick(&|r| r.side.map(str::to_owned)), encoding);
    RecordBatch::try_from_iter([
        ("ukey", symbol),
        ("side", side),
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

// ---------------------------------------------------------------------------------------
// The sequential oracle.

/// One output row as the oracle builds it: the input row it comes from and the values
/// the rules added.
#[derive(Clone, Debug, Default)]
struct Out {
    source: usize,
    position: Option<i64>,
    seen_sell: Option<bool>,
    matched_entry_id: Option<u64>,
    matched_qty: Option<i64>,
    holding_period: Option<f64>,
    matched_entry_price: Option<f64>,
    is_closed: Option<bool>,
    big_exit: Option<bool>,
    closed_qty: Option<i64>,
    seq: i64,
    part: u64,
    flag: bool,
    notional_run: Option<f64>,
    half_qty: Option<f64>,
}

impl Out {
    fn cells(&self, rows: &[Row], encoding: Encoding) -> Vec<Cell> {
        let row = &rows[self.source];
        let float = |x: Option<f64>| cell(x, |x| Cell::Float(F(x)));
        vec![
            symbol_cell(row.symbol, encoding),
            cell(row.side, |s| Cell::Str(s.to_owned())),
            cell(row.qty, Cell::Int),
            float(row.price),
            Cell::Int(row.elapsed_ms),
            Cell::UInt(self.source as u64),
            Cell::Str(format!("t{}", self.source)),
            cell(self.position, Cell::Int),
            cell(self.seen_sell, Cell::Bool),
            cell(self.matched_entry_id, Cell::UInt),
            cell(self.matched_qty, Cell::Int),
            float(self.holding_period),
            float(self.matched_entry_price),
            cell(self.is_closed, Cell::Bool),
            cell(self.big_exit, Cell::Bool),
            cell(self.closed_qty, Cell::Int),
            Cell::Int(self.seq),
            Cell::UInt(self.part),
            Cell::UInt(self.source as u64),
            Cell::Int(row.elapsed_ms),
            Cell::Bool(self.flag),
            float(self.notional_run),
            float(self.half_qty),
        ]
    }
}

/// SQL's three-valued AND and OR.
fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// A running value: each row's value is `update(prev, row)`, `prev` starting at
/// `initial` for the symbol's first row.
fn scan<T: Copy>(
    rows: &mut [Out],
    initial: T,
    update: impl Fn(T, &Out) -> T,
    set: impl Fn(&mut Out, T),
) {
    let mut prev = initial;
    for row in rows {
        prev = update(prev, row);
        set(row, prev);
    }
}

fn count(counts: &mut BTreeMap<String, u64>, name: &str, amount: u64) {
    *counts.entry(name.to_owned()).or_default() += amount;
}

/// SEMANTICS.md "FIFO matching" with the documented decisions of `rules/fifo` (the shared
/// oracle, see [`vizflow_testing::fifo`]), over one symbol's rows in event order, each
/// output row carrying its source row's values so far. Returns the expanded rows in
/// event order.
fn fifo(symbol: Vec<Out>, rows: &[Row], counts: &mut BTreeMap<String, u64>) -> Vec<Out> {
    let inputs: Vec<FifoRow> = symbol
        .iter()
        .map(|current| {
            let row = &rows[current.source];
            FifoRow {
                side: row.side,
                qty: row.qty,
                elapsed_ms: row.elapsed_ms,
            }
        })
        .collect();
    let (matched, fifo_counts) = vizflow_testing::fifo::fifo(&inputs);
    for (name, amount) in fifo_counts.named() {
        count(counts, name, amount);
    }
    matched
        .into_iter()
        .map(|m| {
            let entry = m.matched_entry.map(|e| symbol[e].source);
            Out {
                matched_entry_id: entry.map(|e| e as u64),
                matched_qty: m.matched_qty,
                holding_period: m.holding_period,
                matched_entry_price: entry.and_then(|e| rows[e].price),
                is_closed: m.is_closed,
                ..symbol[m.input].clone()
            }
        })
        .collect()
}

/// The splitter, row by row (see [`Splitter`]).
fn split(symbol: Vec<Out>, rows: &[Row], counts: &mut BTreeMap<String, u64>) -> Vec<Out> {
    let mut out = Vec::new();
    for (seen, current) in symbol.into_iter().enumerate() {
        let row = &rows[current.source];
        let seq = seen as i64 + 1;
        if row.side.is_none() || current.matched_qty == Some(0) {
            count(counts, "rule.splitter.dropped_rows", 1);
            continue;
        }
        let flag = current.position.is_none() || row.price.is_none();
        let emitted = Out {
            seq,
            flag,
            ..current
        };
        match current.matched_qty {
            Some(q) if q % 4 == 0 => {
                count(counts, "rule.splitter.added_rows", 1);
                out.push(Out {
                    matched_qty: Some(q / 4),
                    ..emitted.clone()
                });
                out.push(Out {
                    part: 1,
                    matched_qty: Some(q - q / 4),
                    ..emitted
                });
            }
            _ => out.push(emitted),
        }
    }
    out
}

fn null_rows(
    counts: &mut BTreeMap<String, u64>,
    name: &str,
    rows: &[Out],
    value: impl Fn(&Out) -> bool,
) {
    let nulls = rows.iter().filter(|r| !value(r)).count() as u64;
    count(counts, &format!("tag_running.{name}.null_rows"), nulls);
}

/// Every rule of [`spec`] over one symbol's rows of a date, in order.
fn oracle_symbol(ids: &[usize], rows: &[Row], counts: &mut BTreeMap<String, u64>) -> Vec<Out> {
    let mut current: Vec<Out> = ids
        .iter()
        .map(|id| Out {
            source: *id,
            ..Out::default()
        })
        .collect();
    // position: prev + CASE WHEN side = 'B' THEN qty ELSE -qty END (a null side takes
    // the ELSE branch; a null operand makes the value, and every later one, null).
    let delta = |r: &Out| {
        let row = &rows[r.source];
        if row.side == Some("B") {
            row.qty
        } else {
            row.qty.map(|q| -q)
        }
    };
    scan(
        &mut current,
        Some(0i64),
        |prev, r| prev.zip(delta(r)).map(|(p, d)| p + d),
        |r, v| r.position = v,
    );
    null_rows(counts, "position", &current, |r| r.position.is_some());
    scan(
        &mut current,
        Some(false),
        |prev, r| or(prev, rows[r.source].side.map(|s| s == "S")),
        |r, v| r.seen_sell = v,
    );
    null_rows(counts, "seen_sell", &current, |r| r.seen_sell.is_some());
    let mut current = fifo(current, rows, counts);
    for r in &mut current {
        let sell = rows[r.source].side.map(|s| s == "S");
        r.big_exit = and(r.matched_qty.map(|q| q >= 100), sell);
    }
    scan(
        &mut current,
        0i64,
        |prev, r| prev + r.matched_qty.unwrap_or(0),
        |r, v| r.closed_qty = Some(v),
    );
    null_rows(counts, "closed_qty", &current, |_| true);
    let mut current = split(current, rows, counts);
    // NaN * q is NaN, not null, so coalesce keeps it.
    scan(
        &mut current,
        0.0f64,
        |prev, r| {
            let notional = r
                .matched_qty
                .zip(rows[r.source].price)
                .map(|(q, p)| q as f64 * p);
            prev + notional.unwrap_or(0.0)
        },
        |r, v| r.notional_run = Some(v),
    );
    null_rows(counts, "notional_run", &current, |_| true);
    // Typed by the update: 0.5 * an integer is a float, so the initial 0 becomes 0.0.
    scan(
        &mut current,
        0.0f64,
        |prev, r| prev + 0.5 * rows[r.source].qty.unwrap_or(0) as f64,
        |r, v| r.half_qty = Some(v),
    );
    null_rows(counts, "half_qty", &current, |_| true);
    current
}

/// The output rows per input row (in emission order) and the counts of one date.
fn oracle(rows: &[Row]) -> (Vec<Vec<Out>>, BTreeMap<String, u64>) {
    let mut by_symbol: BTreeMap<Option<i64>, Vec<usize>> = BTreeMap::new();
    for (id, row) in rows.iter().enumerate() {
        by_symbol.entry(row.symbol).or_default().push(id);
    }
    // FIFO reports every counter, zero or not.
    let mut counts: BTreeMap<String, u64> = [
        "entry_rows",
        "exit_rows",
        "other_side_rows",
        "invalid_qty_rows",
        "zero_qty_rows",
        "unclosed_entries",
        "unmatched_exit_rows",
        "unmatched_exit_qty",
        "output_rows",
    ]
    .into_iter()
    .map(|name| (format!("fifo.{name}"), 0))
    .collect();
    let mut per_row: Vec<Vec<Out>> = vec![Vec::new(); rows.len()];
    for (_, mut ids) in by_symbol {
        ids.sort_by_key(|id| (rows[*id].elapsed_ms, *id));
        for out in oracle_symbol(&ids, rows, &mut counts) {
            per_row[out.source].push(out);
        }
    }
    if rows.is_empty() {
        counts.clear();
    }
    // The splitter reports only when it changed the rows.
    let (dropped, added) = ("rule.splitter.dropped_rows", "rule.splitter.added_rows");
    if !rows.is_empty()
        && counts.get(dropped).copied().unwrap_or(0) + counts.get(added).copied().unwrap_or(0) > 0
    {
        counts.entry(dropped.to_owned()).or_default();
        counts.entry(added.to_owned()).or_default();
    }
    (per_row, counts)
}

/// The oracle's rows in the documented output order: input order, each input row's
/// rows together in emission order.
fn expected_rows(rows: &[Row], order: &[usize], encoding: Encoding) -> Outcome {
    let (per_row, counts) = oracle(rows);
    let cells = order
        .iter()
        .flat_map(|id| per_row[*id].iter().map(|out| out.cells(rows, encoding)))
        .collect();
    (cells, counts)
}

/// Output rows (each its values in schema order) and counts.
type Outcome = (Vec<Vec<Cell>>, BTreeMap<String, u64>);

/// Runs the kernel on `rows` given in `order`, cut into batches at `cuts`.
fn run(
    rows: &[Row],
    order: &[usize],
    cuts: &[usize],
    encoding: Encoding,
) -> Result<Outcome, String> {
    let mut cuts = cuts.to_vec();
    cuts.extend([0, rows.len()]);
    cuts.sort_unstable();
    let batches: Vec<RecordBatch> = cuts
        .windows(2)
        .map(|w| batch(rows, &order[w[0]..w[1]], encoding))
        .collect();
    let (out, counts) = enrich(&batches, &spec()).map_err(|e| e.to_string())?;
    Ok((
        output_rows(&in_input_order(&out, order), &batches[0]),
        counts,
    ))
}

/// The output rows put in input order (`order`, as given to [`batch`]), each input row's
/// output rows kept together in the order the rules emitted them. The kernel may emit
/// its rows in event order or in input order.
fn in_input_order(batches: &[RecordBatch], order: &[usize]) -> Vec<RecordBatch> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let all = arrow::compute::concat_batches(&first.schema(), batches).unwrap();
    let ids = all
        .column_by_name("row_id")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let mut rank = vec![0usize; order.len()];
    for (position, row) in order.iter().enumerate() {
        rank[*row] = position;
    }
    let mut indices: Vec<u32> = (0..all.num_rows() as u32).collect();
    indices.sort_by_key(|i| rank[ids.value(*i as usize) as usize]);
    let indices = UInt32Array::from(indices);
    vec![arrow::compute::take_record_batch(&all, &indices).unwrap()]
}

/// The first differing row, for a readable failure.
fn assert_same_rows(got: &[Vec<Cell>], expected: &[Vec<Cell>]) {
    if let Some(i) = (0..got.len().min(expected.len())).find(|i| got[*i] != expected[*i]) {
        panic!(
            "row {i} differs\n     got: {:?}\nexpected: {:?}",
            got[i], expected[i]
        );
    }
    assert_eq!(got.len(), expected.len(), "number of output rows");
}

// ---------------------------------------------------------------------------------------
// oracle

fn row_strategy() -> impl Strategy<Value = Row> {
    let symbol = prop_oneof![12 => (0i64..3).prop_map(Some), 1 => Just(None)];
    let side = prop_oneof![
        5 => Just(Some("B")),
        5 => Just(Some("S")),
        1 => Just(Some("X")),
        1 => Just(Some("b")),
        1 => Just(None),
    ];
    let qty = prop_oneof![
        10 => (1i64..300).prop_map(Some),
        1 => Just(Some(0)),
        1 => Just(None),
        1 => Just(Some(-4)),
    ];
    let price = prop_oneof![
        10 => (1u32..2000).prop_map(|p| Some(p as f64 / 100.0)),
        1 => Just(None),
        1 => Just(Some(f64::NAN)),
    ];
    // Few distinct times, so ties are common.
    (symbol, side, qty, 0i64..10, price).prop_map(|(symbol, side, qty, t, price)| Row {
        symbol,
        side,
        qty,
        elapsed_ms: t * 250,
        price,
    })
}

type Case = (Vec<Row>, Vec<usize>, Vec<usize>, Encoding);

fn case_strategy() -> impl Strategy<Value = Case> {
    prop::collection::vec(row_strategy(), 0..150).prop_flat_map(|rows| {
        let n = rows.len();
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let cuts = prop::collection::vec(0..=n, 0..5);
        let encoding = prop_oneof![
            Just(Encoding::Int),
            Just(Encoding::Utf8),
            Just(Encoding::LargeUtf8),
            Just(Encoding::Dictionary),
        ];
        (Just(rows), order, cuts, encoding)
    })
}

proptest! {
    // A fixed seed: the same cases on every run (a failure prints its shrunk case).
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0e41_c401),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_rule_matches_the_oracle_in_any_input_order_and_batching(
        (rows, order, cuts, encoding) in case_strategy()
    ) {
        let (got, counts) = run(&rows, &order, &cuts, encoding).unwrap();
        let (expected, expected_counts) = expected_rows(&rows, &order, encoding);
        assert_same_rows(&got, &expected);
        prop_assert_eq!(counts, expected_counts);
    }
}

// ---------------------------------------------------------------------------------------
// example

fn row(
    symbol: i64,
    side: Option<&'static str>,
    qty: i64,
    elapsed_ms: i64,
    price: Option<f64>,
) -> Row {
    Row {
        symbol: Some(symbol),
        side,
        qty: Some(qty),
        elapsed_ms,
        price,
    }
}

/// The values of one output column, by name.
fn column(batches: &[RecordBatch], name: &str) -> Vec<Cell> {
    batches
        .iter()
        .flat_map(|b| cells(b.column_by_name(name).unwrap()))
        .collect()
}

#[test]
fn every_rule_on_a_hand_computed_example() {
    // Event order: rows 0 (0 ms), 1 (1 s), 3 and 4 (2 s), 2 (61 s); given as 2, 0, 1, 3, 4.
    let rows = [
        row(1, Some("B"), 160, 0, Some(10.0)),
        row(1, Some("B"), 50, 1_000, Some(11.0)),
        row(1, Some("S"), 170, 61_000, Some(12.0)),
        row(1, Some("X"), 7, 2_000, None),
        row(1, None, 5, 2_000, Some(9.0)),
    ];
    let input = batch(&rows, &[2, 0, 1, 3, 4], Encoding::Utf8);
    let (out, counts) = enrich(std::slice::from_ref(&input), &spec()).unwrap();
    let out = in_input_order(&out, &[2, 0, 1, 3, 4]);
    let ints = |values: &[i64]| values.iter().map(|v| Cell::Int(*v)).collect::<Vec<_>>();
    let uints = |values: &[u64]| values.iter().map(|v| Cell::UInt(*v)).collect::<Vec<_>>();
    let floats = |values: &[f64]| {
        values
            .iter()
            .map(|v| Cell::Float(F(*v)))
            .collect::<Vec<_>>()
    };
    // Exit row 2 takes 160 from lot 0 and 10 from lot 1; the splitter then splits every
    // multiple of 4 (160 -> 40 + 120) and drops row 4 (null side). Output in input order.
    assert_eq!(column(&out, "row_id"), uints(&[2, 2, 2, 0, 0, 1, 3]));
    assert_eq!(
        column(&out, "matched_entry_id"),
        [
            Cell::UInt(0),
            Cell::UInt(0),
            Cell::UInt(1),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null
        ]
    );
    assert_eq!(
        column(&out, "matched_qty"),
        [ints(&[40, 120, 10, 40, 120, 10]), vec![Cell::Null]].concat()
    );
    assert_eq!(column(&out, "part"), uints(&[0, 1, 0, 0, 1, 0, 0]));
    assert_eq!(column(&out, "seq"), ints(&[5, 5, 6, 1, 1, 2, 3]));
    // Positions over the original rows: 160, 210, 203 (X: -7), 198 (null side: -5), 28.
    assert_eq!(
        column(&out, "position"),
        ints(&[28, 28, 28, 160, 160, 210, 203])
    );
    // closed_qty over FIFO's rows in event order: 160, 170 (row 1's 10), 170, 170, 330, 340.
    assert_eq!(
        column(&out, "closed_qty"),
        ints(&[330, 330, 340, 160, 160, 170, 170])
    );
    assert_eq!(
        column(&out, "big_exit"),
        [true, true, false, false, false, false, false].map(Cell::Bool)
    );
    // seen_sell: false until row 4's null side makes it null, then row 2 makes it true.
    assert_eq!(
        column(&out, "seen_sell"),
        [true, true, true, false, false, false, false].map(Cell::Bool)
    );
    assert_eq!(
        column(&out, "holding_period"),
        [floats(&[61.0, 61.0, 60.0]), vec![Cell::Null; 4]].concat()
    );
    assert_eq!(
        column(&out, "flag"),
        [false, false, false, false, false, false, true].map(Cell::Bool)
    );
    // Over the splitter's rows in event order: 400, 1600, 1710, 1710, 2190, 3630, 3750.
    assert_eq!(
        column(&out, "notional_run"),
        floats(&[2190.0, 3630.0, 3750.0, 400.0, 1600.0, 1710.0, 1710.0])
    );
    assert_eq!(
        column(&out, "half_qty"),
        floats(&[273.5, 358.5, 443.5, 80.0, 160.0, 185.0, 188.5])
    );
    let expected_counts: BTreeMap<String, u64> = [
        ("fifo.entry_rows", 2),
        ("fifo.exit_rows", 1),
        ("fifo.other_side_rows", 2),
        ("fifo.invalid_qty_rows", 0),
        ("fifo.zero_qty_rows", 0),
        ("fifo.unclosed_entries", 1),
        ("fifo.unmatched_exit_rows", 0),
        ("fifo.unmatched_exit_qty", 0),
        ("fifo.output_rows", 6),
        ("rule.splitter.dropped_rows", 1),
        ("rule.splitter.added_rows", 2),
        ("tag_running.position.null_rows", 0),
        ("tag_running.seen_sell.null_rows", 1),
        ("tag_running.closed_qty.null_rows", 0),
        ("tag_running.notional_run.null_rows", 0),
        ("tag_running.half_qty.null_rows", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected_counts);
    // The oracle agrees with the hand computation.
    let order = [2, 0, 1, 3, 4];
    let (expected, oracle_counts) = expected_rows(&rows, &order, Encoding::Utf8);
    assert_same_rows(&output_rows(&out, &input), &expected);
    assert_eq!(oracle_counts, expected_counts);
}

// ---------------------------------------------------------------------------------------
// dates

#[test]
fn running_values_and_lots_start_afresh_for_every_date_and_symbol() {
    // The kernel sees one date at a time (the operator calls it per date). Symbol 1 ends
    // the first date at position 4 with 4 of row 2's lot open, symbol 2 at -5; the second
    // date must see neither. (No row is dropped or split, so every row shows.)
    let first = [
        row(1, Some("B"), 10, 0, Some(1.0)),
        row(2, Some("S"), 5, 0, Some(1.0)),
        row(1, Some("B"), 5, 1_000, Some(2.0)),
        row(1, Some("S"), 11, 2_000, Some(2.0)),
    ];
    let second = [
        row(1, Some("S"), 3, 0, Some(3.0)),
        row(2, Some("B"), 7, 500, Some(3.0)),
        row(2, Some("S"), 2, 600, Some(3.0)),
        row(1, Some("B"), 6, 1_000, Some(4.0)),
        row(1, Some("S"), 1, 2_000, Some(4.0)),
    ];
    let mut outputs = Vec::new();
    for rows in [&first[..], &second[..]] {
        let order: Vec<usize> = (0..rows.len()).collect();
        let (got, counts) = run(rows, &order, &[1], Encoding::Int).unwrap();
        let (expected, expected_counts) = expected_rows(rows, &order, Encoding::Int);
        assert_same_rows(&got, &expected);
        assert_eq!(counts, expected_counts);
        let input = batch(rows, &order, Encoding::Int);
        outputs.push(in_input_order(
            &enrich(&[input], &spec()).unwrap().0,
            &order,
        ));
    }
    let ints = |values: &[i64]| values.iter().map(|v| Cell::Int(*v)).collect::<Vec<_>>();
    assert_eq!(column(&outputs[0], "position"), ints(&[10, -5, 15, 4, 4]));
    let second_out = &outputs[1];
    // From the initial 0 again: -3 (not 4 - 3) and 7 (not -5 + 7).
    assert_eq!(column(second_out, "position"), ints(&[-3, 7, 5, 3, 2]));
    // The first sell finds no lot (the first date's are gone): one unmatched row of 3.
    assert_eq!(
        column(second_out, "matched_entry_id"),
        [
            Cell::Null,
            Cell::Null,
            Cell::UInt(1),
            Cell::Null,
            Cell::UInt(3)
        ]
    );
    assert_eq!(column(second_out, "is_closed")[0], Cell::Bool(false));
    assert_eq!(column(second_out, "closed_qty"), ints(&[3, 2, 4, 4, 5]));
    // The custom rule's state restarts too.
    assert_eq!(column(second_out, "seq"), ints(&[1, 1, 2, 2, 3]));
    assert_eq!(
        column(second_out, "half_qty"),
        [1.5, 3.5, 4.5, 4.5, 5.0].map(|x| Cell::Float(F(x)))
    );
}

// ---------------------------------------------------------------------------------------
// errors

#[test]
fn an_integer_overflow_fails_the_date_naming_the_rule_row_and_prev() {
    // Symbol 1 in event order: row 2 (B max) then row 0 (B 1): max + 1 overflows at
    // row_id 0. Symbol 2 (row 1) is fine.
    let rows = [
        row(1, Some("B"), 1, 1_000, Some(1.0)),
        row(2, Some("B"), 1, 0, Some(1.0)),
        row(1, Some("B"), i64::MAX, 0, Some(1.0)),
    ];
    let error = run(&rows, &[1, 2, 0], &[], Encoding::Utf8).unwrap_err();
    assert_eq!(
        error,
        "TagRunning(position): row_id 0 (prev = 9223372036854775807): cannot evaluate \
         expression 'prev + CASE WHEN side = 'B' THEN qty ELSE -qty END': Arithmetic \
         overflow: Overflow happened on: 9223372036854775807 + 1"
    );
}

#[test]
fn an_integer_overflow_in_the_vectorised_part_names_the_row() {
    // -qty overflows for qty = i64::MIN (every CASE branch is evaluated, so even on a buy).
    let rows = [
        row(1, Some("B"), 1, 0, Some(1.0)),
        row(1, Some("B"), i64::MIN, 1_000, Some(1.0)),
    ];
    let error = run(&rows, &[0, 1], &[], Encoding::Utf8).unwrap_err();
    assert!(error.starts_with("TagRunning(position): "), "{error}");
    assert!(error.contains("row_id 1"), "{error}");
}
