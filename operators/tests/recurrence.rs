//! Running values (`Expr::recurrence`), step by step against the vectorised evaluator, by topic:
//! - `oracle`: every operator, function, `CASE` form and cast, with an Int64, Float64 or
//!   Boolean `prev`, on seeded random rows and `prev` values (nulls, NaN, signed zeros,
//!   infinities, integer extremes): every step gives what `Expr::evaluate` gives on the batch
//!   with `prev` as a column, errors included;
//! - `random_expressions`: the same for random expression trees (proptest);
//! - `errors`: the exact text of compile, prepare and step errors.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::util::display::array_value_to_string;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow_operators::expr::{Expr, ExprError, Recurrence, Scalar};

/// Equal as values: floats bit for bit (so `-0.0 != 0.0`), except that every NaN is equal.
fn same(a: Scalar, b: Scalar) -> bool {
    match (a, b) {
        (Scalar::Float(a), Scalar::Float(b)) => {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        }
        _ => a == b,
    }
}

fn scalar_at(array: &dyn Array, row: usize) -> Scalar {
    if array.is_null(row) {
        return Scalar::Null;
    }
    match array.data_type() {
        DataType::Int64 => Scalar::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Scalar::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Scalar::Bool(array.as_boolean().value(row)),
        other => panic!("no scalar for {other}"),
    }
}

fn array_of(values: &[Scalar], data_type: &DataType) -> ArrayRef {
    match data_type {
        DataType::Int64 => Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
            Scalar::Int(x) => Some(*x),
            _ => None,
        }))),
        DataType::Float64 => Arc::new(Float64Array::from_iter(values.iter().map(|v| match v {
            Scalar::Float(x) => Some(*x),
            _ => None,
        }))),
        _ => Arc::new(BooleanArray::from_iter(values.iter().map(|v| match v {
            Scalar::Bool(x) => Some(*x),
            _ => None,
        }))),
    }
}

/// Checks that stepping `text` over `batch` (which has no `prev`), with `prev` taking the
/// values `prevs` of `var_type`, gives what `Expr::evaluate` gives on the batch with `prev` as
/// a column. Where that evaluation fails, each row must agree with the evaluation of that row
/// alone: the same value, or an error with the same text.
///
/// An expression `check` refuses must be refused with the same error.
fn compare_with_evaluate(
    text: &str,
    var_type: &DataType,
    batch: &RecordBatch,
    prevs: &[Scalar],
) -> Result<Outcome, String> {
    let expr = Expr::parse(text).map_err(|e| e.to_string())?;
    let with_prev = {
        let mut columns = batch.columns().to_vec();
        let mut fields = batch.schema().fields().to_vec();
        columns.push(array_of(prevs, var_type));
        fields.push(Arc::new(Field::new("prev", var_type.clone(), true)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    };
    let Some(recurrence) = compile_as_check_does(&expr, var_type, batch, &with_prev)? else {
        return Ok(Outcome::Refused);
    };
    let evaluated = expr.evaluate(&with_prev);
    let prepared = match recurrence.prepare(batch) {
        Ok(prepared) => prepared,
        // A hoisted part failed on some row, so the whole evaluation fails too.
        Err(_) if evaluated.is_err() => return Ok(Outcome::PrepareFailed),
        Err(error) => {
            return Err(format!(
                "{text}: prepare fails ({error}), evaluate does not"
            ));
        }
    };
    let (mut good_rows, mut failed_rows) = (0, 0);
    for (row, prev) in prevs.iter().enumerate() {
        let step = prepared.step(row, *prev);
        let expected = match &evaluated {
            Ok(array) => Ok(scalar_at(array.as_ref(), row)),
            Err(_) => {
                let row_alone = expr.evaluate(&with_prev.slice(row, 1));
                row_alone.map(|array| scalar_at(array.as_ref(), 0))
            }
        };
        let agree = match (&step, &expected) {
            (Ok(step), Ok(expected)) => same(*step, *expected),
            (Err(step), Err(expected)) => step.to_string() == expected.to_string(),
            _ => false,
        };
        if !agree {
            return Err(format!(
                "{text} with a {var_type} prev, row {row} ({}), prev = {prev:?}\n  \
                 step:     {step:?}\n  evaluate: {expected:?}",
                describe_row(batch, row)
            ));
        }
        failed_rows += usize::from(step.is_err());
        good_rows += usize::from(step.is_ok());
    }
    if evaluated.is_err() && failed_rows == 0 {
        return Err(format!("{text}: evaluate fails but no step does"));
    }
    Ok(Outcome::Compared {
        good_rows,
        failed_rows,
    })
}

/// Compiles `expr` for a `prev` of `var_type` and the schema of `batch`, which must fail
/// where `check` fails on `with_prev` (`batch` with `prev`), with the same error; `None` when
/// both refuse it, or the type `check` gives cannot be a running value.
fn compile_as_check_does(
    expr: &Expr,
    var_type: &DataType,
    batch: &RecordBatch,
    with_prev: &RecordBatch,
) -> Result<Option<Recurrence>, String> {
    let text = expr.text();
    let compiled = expr.recurrence("prev", var_type, &batch.schema());
    let recurrence = match (expr.check(&with_prev.schema()), compiled) {
        (Ok(data_type), Ok(recurrence)) if recurrence.data_type() == &data_type => recurrence,
        (Err(checked), Err(compiled)) if checked.to_string() == compiled.to_string() => {
            return Ok(None);
        }
        (Ok(checked), Err(ExprError::RecurrenceResultType { data_type, .. }))
            if checked == data_type =>
        {
            return Ok(None);
        }
        (checked, compiled) => {
            return Err(format!(
                "{text} with a {var_type} prev: check gives {checked:?}, recurrence {compiled:?}"
            ));
        }
    };
    let columns: Vec<String> = expr.columns().into_iter().filter(|c| c != "prev").collect();
    if recurrence.columns() != columns
        || recurrence.uses_var() != (columns.len() < expr.columns().len())
    {
        return Err(format!("{text}: columns {:?}", recurrence.columns()));
    }
    Ok(Some(recurrence))
}

/// What [`compare_with_evaluate`] could compare.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Both refuse the expression with the same error, see [`compile_as_check_does`].
    Refused,
    /// A part without the variable fails, so the whole batch fails.
    PrepareFailed,
    /// Rows whose step succeeded and rows whose step failed, as the evaluation did.
    Compared {
        good_rows: usize,
        failed_rows: usize,
    },
}

/// Random rows: `x`, `y` Float64; `i`, `k` Int64; `j` Int32; `b` Boolean; `s` Utf8. A tame
/// batch has small integers only; a wild one also has integers that overflow. A sliced batch
/// is a slice of a larger one, so its arrays start at an offset.
struct Rows {
    rng: ChaCha8Rng,
    wild: bool,
    sliced: bool,
}

const FLOATS: [f64; 18] = [
    0.0,
    -0.0,
    f64::NAN,
    -f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e300,
    -1e300,
    0.5,
    -2.5,
    1.5,
    2.5,
    3.0,
    1e-4,
    9.3e18,
    -9.3e18,
    -9223372036854775808.0,
    9223372036854775808.0,
];

const WILD_INTS: [i64; 7] = [
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    i64::MIN + 1,
    3037000500,
    -3037000500,
    1 << 62,
];

impl Rows {
    fn new(seed: u64) -> Rows {
        Rows {
            rng: ChaCha8Rng::seed_from_u64(seed),
            wild: seed % 2 == 1,
            sliced: seed.is_multiple_of(3),
        }
    }

    /// A batch of up to 12 rows, and a value of `prev` for each row.
    fn batch_and_prevs(&mut self, var_type: &DataType) -> (RecordBatch, Vec<Scalar>) {
        let count = self.rng.random_range(0..=12);
        let batch = match self.sliced {
            true => self.batch(count + 3).slice(2, count),
            false => self.batch(count),
        };
        let prevs = (0..count).map(|_| self.prev(var_type)).collect();
        (batch, prevs)
    }

    fn present(&mut self) -> bool {
        self.rng.random_range(0..7) != 0
    }

    fn float(&mut self) -> Option<f64> {
        self.present().then(|| match self.rng.random_range(0..4) {
            0 => FLOATS[self.rng.random_range(0..FLOATS.len())],
            1 => f64::from(self.rng.random_range(-6..=6i32)) / 2.0,
            2 => f64::from(self.rng.random_range(-3..=3i32)),
            _ => self.rng.random_range(-100.0..100.0),
        })
    }

    fn int(&mut self) -> Option<i64> {
        let wild = self.wild && self.rng.random_range(0..4) == 0;
        self.present().then(|| match wild {
            true => WILD_INTS[self.rng.random_range(0..WILD_INTS.len())],
            false => self.rng.random_range(-4..=4),
        })
    }

    fn bool(&mut self) -> Option<bool> {
        self.present().then(|| self.rng.random_bool(0.5))
    }

    fn prev(&mut self, var_type: &DataType) -> Scalar {
        let value = match var_type {
            DataType::Int64 => self.int().map(Scalar::Int),
            DataType::Float64 => self.float().map(Scalar::Float),
            _ => self.bool().map(Scalar::Bool),
        };
        value.unwrap_or(Scalar::Null)
    }

    fn batch(&mut self, rows: usize) -> RecordBatch {
        let x: Float64Array = (0..rows).map(|_| self.float()).collect();
        let y: Float64Array = (0..rows).map(|_| self.float()).collect();
        let i: Int64Array = (0..rows).map(|_| self.int()).collect();
        let k: Int64Array = (0..rows).map(|_| self.int()).collect();
        let j: Int32Array = (0..rows)
            .map(|_| self.present().then(|| self.rng.random_range(-3..=3)))
            .collect();
        let b: BooleanArray = (0..rows).map(|_| self.bool()).collect();
        let s: StringArray = (0..rows)
            .map(|_| {
                self.present()
                    .then(|| ["B", "S", "X", ""][self.rng.random_range(0..4)])
            })
            .collect();
        RecordBatch::try_from_iter([
            ("x", Arc::new(x) as ArrayRef),
            ("y", Arc::new(y)),
            ("i", Arc::new(i)),
            ("k", Arc::new(k)),
            ("j", Arc::new(j)),
            ("b", Arc::new(b)),
            ("s", Arc::new(s)),
        ])
        .unwrap()
    }
}

/// `x = 1.5, i = NULL, ...`
fn describe_row(batch: &RecordBatch, row: usize) -> String {
    let schema = batch.schema();
    let values = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let value = match column.is_null(row) {
                true => "NULL".to_string(),
                false => array_value_to_string(column, row).unwrap(),
            };
            format!("{} = {value}", field.name())
        });
    values.collect::<Vec<_>>().join(", ")
}

/// How many rows were compared with a successful and with a failed step, and how many
/// batches failed as a whole in a part without the variable.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    good_rows: usize,
    failed_rows: usize,
    failed_batches: usize,
}

/// Compares `text` on `batches` random batches of up to 12 rows (half of them wild).
fn compare_on_random_rows(text: &str, var_type: &DataType, batches: u64) -> Result<Tally, String> {
    let mut tally = Tally::default();
    for seed in 0..batches {
        let (batch, prevs) = Rows::new(seed).batch_and_prevs(var_type);
        match compare_with_evaluate(text, var_type, &batch, &prevs) {
            Ok(Outcome::Compared {
                good_rows,
                failed_rows,
            }) => {
                tally.good_rows += good_rows;
                tally.failed_rows += failed_rows;
            }
            Ok(Outcome::PrepareFailed) => tally.failed_batches += 1,
            Ok(Outcome::Refused) => return Err(format!("{text} with a {var_type} prev: refused")),
            Err(message) => return Err(format!("{message}\n  (seed {seed})")),
        }
    }
    Ok(tally)
}

mod oracle {
    use super::*;

    const INT: &[DataType] = &[DataType::Int64];
    const NUMBER: &[DataType] = &[DataType::Int64, DataType::Float64];
    const BOOL: &[DataType] = &[DataType::Boolean];
    const ANY: &[DataType] = &[DataType::Int64, DataType::Float64, DataType::Boolean];

    #[rustfmt::skip]
    const CASES: &[(&str, &[DataType])] = &[
        // the rule's own examples
        ("prev + CASE WHEN s = 'B' THEN i ELSE -i END", NUMBER),
        ("coalesce(prev, 0) + CASE WHEN s = 'B' THEN i ELSE -i END", NUMBER),
        ("greatest(prev, x)", NUMBER),
        ("prev * 0.9 + i", NUMBER),
        // arithmetic
        ("prev + i", NUMBER), ("prev - x", NUMBER), ("i - prev", NUMBER), ("prev * k", NUMBER),
        ("prev * x", NUMBER), ("prev + j", NUMBER), ("j * prev", NUMBER),
        ("prev / i", NUMBER), ("prev / x", NUMBER), ("x / prev", NUMBER), ("i / prev", NUMBER),
        ("prev % k", NUMBER), ("prev % x", NUMBER), ("x % prev", NUMBER), ("i % prev", NUMBER),
        ("-prev", NUMBER), ("+prev", NUMBER), ("-(prev * i)", NUMBER), ("prev + 0.5", NUMBER),
        ("prev + NULL", NUMBER), ("NULL - prev", NUMBER), ("prev / 0", NUMBER),
        ("prev % 0", NUMBER), ("prev % 0.0", NUMBER), ("prev / -0.0", NUMBER),
        ("prev * 9223372036854775807", NUMBER), ("prev - 9223372036854775807 - 2", NUMBER),
        ("prev + (i * k)", NUMBER), ("(prev + i) * (prev - k)", NUMBER),
        ("prev * prev", NUMBER), ("prev / prev", NUMBER), ("prev % prev", NUMBER),
        ("prev - prev", NUMBER), ("1e300 * prev * 1e10", NUMBER), ("prev + 1e-4 * i", NUMBER),
        ("prev % -1", INT), ("prev + 99999999999999999999", INT),
        // comparisons
        ("prev = i", NUMBER), ("prev <> x", NUMBER), ("prev != 0", NUMBER), ("prev < x", NUMBER),
        ("prev <= i", NUMBER), ("prev > y", NUMBER), ("prev >= 0.0", NUMBER), ("x = prev", NUMBER),
        ("prev = prev", NUMBER), ("prev < prev + 1", NUMBER), ("prev = -0.0", NUMBER),
        ("prev BETWEEN i AND k", NUMBER), ("prev NOT BETWEEN x AND y", NUMBER),
        ("i BETWEEN prev AND x", NUMBER), ("prev IN (0, 1, i)", NUMBER),
        ("prev NOT IN (x, y, NULL)", NUMBER), ("prev IN (NULL)", NUMBER),
        ("prev = b", BOOL), ("prev < b", BOOL), ("prev >= TRUE", BOOL), ("prev <> (x > 0)", BOOL),
        ("prev IN (TRUE, b)", BOOL), ("prev = NULL", ANY),
        // logic
        ("prev AND b", BOOL), ("prev OR b", BOOL), ("NOT prev", BOOL), ("prev AND NULL", BOOL),
        ("prev OR NULL", BOOL), ("NOT (prev OR x > 0)", BOOL), ("prev AND x > y OR NOT b", BOOL),
        ("b AND prev", BOOL), ("(x > 0) OR prev", BOOL), ("NULL AND prev", BOOL),
        ("prev > 0 AND b", NUMBER), ("prev > i OR x < y", NUMBER), ("NOT (prev = 0)", NUMBER),
        ("s = 'B' AND prev > i", NUMBER),
        ("prev IS NULL", ANY), ("prev IS NOT NULL", ANY), ("(prev + 1) IS NULL", NUMBER),
        ("NOT prev IS NULL", BOOL),
        // CASE
        ("CASE WHEN prev > 0 THEN prev ELSE -prev END", NUMBER),
        ("CASE WHEN s = 'B' THEN prev + i ELSE prev - i END", NUMBER),
        ("CASE WHEN prev > x THEN 1 WHEN prev < x THEN -1 END", NUMBER),
        ("CASE WHEN b THEN prev END", ANY),
        ("CASE WHEN prev IS NULL THEN 0 WHEN s = 'B' THEN i ELSE -i END", NUMBER),
        ("CASE WHEN prev IS NULL THEN x WHEN b THEN i END", ANY),
        ("CASE WHEN prev IS NULL THEN 0 ELSE prev END", NUMBER),
        ("CASE prev WHEN 0 THEN x WHEN i THEN y ELSE prev END", NUMBER),
        ("CASE prev WHEN 0 THEN s = 'B' ELSE b END", NUMBER),
        ("CASE i WHEN 3 THEN prev ELSE x END", NUMBER),
        ("CASE WHEN b THEN i ELSE prev END", NUMBER),
        ("CASE WHEN NULL THEN prev ELSE 0 END", NUMBER),
        ("CASE WHEN prev > 0 THEN NULL END", NUMBER),
        ("CASE WHEN prev > 0 THEN prev ELSE prev * 9223372036854775807 END", INT),
        ("CASE WHEN b THEN prev * 2 WHEN x > 0 THEN i * k ELSE k END", NUMBER),
        ("CASE WHEN prev THEN x ELSE y END", BOOL),
        ("CASE WHEN prev THEN NULL ELSE b END", BOOL),
        ("CASE WHEN b THEN prev WHEN x > 0 THEN NOT prev END", BOOL),
        ("CASE prev WHEN b THEN 1 WHEN TRUE THEN 2.5 END", BOOL),
        // functions
        ("abs(prev)", NUMBER), ("abs(prev - i)", NUMBER), ("sqrt(prev)", NUMBER),
        ("ln(prev)", NUMBER), ("log10(prev)", NUMBER), ("exp(prev)", NUMBER),
        ("floor(prev)", NUMBER), ("ceil(prev)", NUMBER), ("round(prev)", NUMBER),
        ("round(prev / 3)", NUMBER), ("floor(prev + x)", NUMBER), ("CEIL(prev * 0.5)", NUMBER),
        ("least(prev, i)", NUMBER), ("greatest(prev, x)", NUMBER),
        ("least(prev, x, y, 0.5)", NUMBER), ("greatest(prev, NULL, i)", NUMBER),
        ("greatest(prev)", NUMBER), ("least(prev)", NUMBER), ("greatest(x, prev, i)", NUMBER),
        ("least(-0.0, prev)", NUMBER), ("greatest(0.0, prev, -0.0)", NUMBER),
        ("coalesce(prev, i)", NUMBER), ("coalesce(prev, x, 0)", NUMBER),
        ("coalesce(NULL, prev)", ANY), ("coalesce(prev)", ANY), ("coalesce(i, prev * 2)", NUMBER),
        ("least(prev, b)", BOOL), ("greatest(prev, b, NULL)", BOOL),
        ("coalesce(prev, b, FALSE)", BOOL),
        // casts
        ("CAST(prev AS DOUBLE)", ANY), ("CAST(prev AS BIGINT)", ANY),
        ("TRY_CAST(prev AS BIGINT)", ANY), ("CAST(prev AS INTEGER) + i", ANY),
        ("CAST(prev AS BOOLEAN)", ANY), ("TRY_CAST(prev AS BOOLEAN)", ANY),
        ("TRY_CAST(prev * x AS BIGINT)", NUMBER), ("CAST(prev / 2 AS BIGINT)", NUMBER),
        ("CAST(prev AS FLOAT) * x", ANY), ("CAST(prev AS DOUBLE) * x", BOOL),
        ("TRY_CAST(prev AS INTEGER) + i", BOOL), ("CAST(prev IS NULL AS BIGINT)", ANY),
        ("prev + CAST(s = 'B' AS BIGINT)", NUMBER),
        // no variable at all
        ("i + k", ANY), ("x * 2", ANY), ("1 + 2", ANY), ("b", ANY),
    ];

    #[test]
    fn every_step_equals_the_vectorised_evaluation() {
        let mut failures = Vec::new();
        let mut total = Tally::default();
        for (text, var_types) in CASES {
            for var_type in *var_types {
                match compare_on_random_rows(text, var_type, 60) {
                    // Every case must be compared on rows where it succeeds, not only fail.
                    Ok(tally) if tally.good_rows < 50 => {
                        failures.push(format!("{text} with a {var_type} prev: {tally:?}"));
                    }
                    Ok(tally) => {
                        total.good_rows += tally.good_rows;
                        total.failed_rows += tally.failed_rows;
                        total.failed_batches += tally.failed_batches;
                    }
                    Err(message) => failures.push(message),
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(
            total.failed_rows > 500 && total.failed_batches > 100,
            "{total:?}"
        );
    }

    #[test]
    fn a_position_runs_over_a_batch() {
        let schema = Schema::new(vec![
            Field::new("orderSide", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("B"),
                    Some("S"),
                    None,
                    Some("B"),
                ])),
                Arc::new(Int64Array::from(vec![Some(100), Some(30), Some(5), None])),
            ],
        )
        .unwrap();
        let position = Expr::parse("prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END")
            .unwrap()
            .recurrence("prev", &DataType::Int64, &schema)
            .unwrap();
        let prepared = position.prepare(&batch).unwrap();
        let mut prev = Scalar::Int(0);
        let mut positions = Vec::new();
        for row in 0..batch.num_rows() {
            prev = prepared.step(row, prev).unwrap();
            positions.push(prev);
        }
        use Scalar::{Int, Null};
        assert_eq!(positions, [Int(100), Int(70), Int(65), Null]);
    }

    #[test]
    fn the_result_type_follows_the_variable_type() {
        let schema = Schema::new(vec![Field::new("qty", DataType::Int64, true)]);
        let data_type = |text: &str, var_type: DataType| {
            let expr = Expr::parse(text).unwrap();
            expr.recurrence("prev", &var_type, &schema)
                .unwrap()
                .data_type()
                .clone()
        };
        assert_eq!(data_type("prev + qty", DataType::Int64), DataType::Int64);
        assert_eq!(data_type("prev + 0.5", DataType::Int64), DataType::Float64);
        assert_eq!(
            data_type("prev + 0.5", DataType::Float64),
            DataType::Float64
        );
        assert_eq!(data_type("prev / 2", DataType::Int64), DataType::Float64);
        assert_eq!(
            data_type("prev OR qty > 0", DataType::Boolean),
            DataType::Boolean
        );
    }
}

mod random_expressions {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// A number expression and a boolean expression of the same depth; each level builds both
    /// from three pairs of the level below.
    fn expressions(prev_is_bool: bool) -> impl Strategy<Value = (String, String)> {
        let mut numbers = vec![
            "x", "y", "i", "k", "j", "0", "1", "2.5", "-0.0", "NULL", "1e300",
        ];
        numbers.push("9223372036854775807");
        let mut booleans = vec!["b", "TRUE", "FALSE", "NULL", "(s = 'B')"];
        let prev = if prev_is_bool {
            &mut booleans
        } else {
            &mut numbers
        };
        prev.extend(["prev"; 8]);
        let leaf = (select(numbers), select(booleans))
            .prop_map(|(number, boolean)| (number.to_string(), boolean.to_string()));
        leaf.prop_recursive(5, 128, 3, |inner| {
            (inner.clone(), inner.clone(), inner, 0..27usize, 0..21usize).prop_map(
                |((n1, b1), (n2, b2), (n3, b3), number_form, boolean_form)| {
                    (
                        number(number_form, [&n1, &n2, &n3], [&b1, &b2]),
                        boolean(boolean_form, [&n1, &n2, &n3], [&b1, &b2, &b3]),
                    )
                },
            )
        })
    }

    fn number(form: usize, [n1, n2, n3]: [&str; 3], [b1, b2]: [&str; 2]) -> String {
        match form {
            0 => n1.to_string(),
            1 => format!("({n1} + {n2})"),
            2 => format!("({n1} - {n2})"),
            3 => format!("({n1} * {n2})"),
            4 => format!("({n1} / {n2})"),
            5 => format!("({n1} % {n2})"),
            6 => format!("-({n1})"),
            7 => format!("abs({n1})"),
            8 => format!("sqrt({n1})"),
            9 => format!("ln({n1})"),
            10 => format!("floor({n1})"),
            11 => format!("ceil({n1})"),
            12 => format!("round({n1})"),
            13 => format!("exp({n1})"),
            14 => format!("log10({n1})"),
            15 => format!("least({n1}, {n2}, {n3})"),
            16 => format!("greatest({n1}, {n2})"),
            17 => format!("coalesce({n1}, {n2}, {n3})"),
            18 => format!("CASE WHEN {b1} THEN {n1} ELSE {n2} END"),
            19 => format!("CASE WHEN {b1} THEN {n1} WHEN {b2} THEN {n2} END"),
            20 => format!("CASE {n1} WHEN {n2} THEN {n3} ELSE {n1} END"),
            21 => format!("CAST({n1} AS BIGINT)"),
            22 => format!("TRY_CAST({n1} AS BIGINT)"),
            23 => format!("CAST({n1} AS DOUBLE)"),
            24 => format!("CAST({b1} AS BIGINT)"),
            25 => format!("TRY_CAST({b1} AS DOUBLE)"),
            _ => format!("({n1} * 0.5 + {n2})"),
        }
    }

    fn boolean(form: usize, [n1, n2, n3]: [&str; 3], [b1, b2, b3]: [&str; 3]) -> String {
        match form {
            0 => b1.to_string(),
            1 => format!("({b1} AND {b2})"),
            2 => format!("({b1} OR {b2})"),
            3 => format!("(NOT {b1})"),
            4 => format!("({n1} = {n2})"),
            5 => format!("({n1} <> {n2})"),
            6 => format!("({n1} < {n2})"),
            7 => format!("({n1} <= {n2})"),
            8 => format!("({n1} > {n2})"),
            9 => format!("({n1} >= {n2})"),
            10 => format!("({b1} = {b2})"),
            11 => format!("({b1} < {b2})"),
            12 => format!("({n1} IS NULL)"),
            13 => format!("({b1} IS NOT NULL)"),
            14 => format!("({n1} BETWEEN {n2} AND {n3})"),
            15 => format!("({n1} NOT IN ({n2}, {n3}))"),
            16 => format!("CASE WHEN {b1} THEN {b2} ELSE {b3} END"),
            17 => format!("CAST({n1} AS BOOLEAN)"),
            18 => format!("TRY_CAST({n1} AS BOOLEAN)"),
            19 => format!("least({b1}, {b2})"),
            _ => format!("coalesce({b1}, {b2})"),
        }
    }

    /// An expression (of either kind), the variable's type, and a seed for the rows.
    fn cases() -> impl Strategy<Value = (String, DataType, u64)> {
        select(vec![DataType::Int64, DataType::Float64, DataType::Boolean]).prop_flat_map(
            |var_type| {
                let prev_is_bool = var_type == DataType::Boolean;
                (
                    expressions(prev_is_bool),
                    any::<bool>(),
                    Just(var_type),
                    0..1000u64,
                )
                    .prop_map(
                        |((number, boolean), pick_number, var_type, seed)| {
                            let text = if pick_number { number } else { boolean };
                            (text, var_type, seed)
                        },
                    )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_step_equals_the_vectorised_evaluation((text, var_type, seed) in cases()) {
            let (batch, prevs) = Rows::new(seed).batch_and_prevs(&var_type);
            if let Err(message) = compare_with_evaluate(&text, &var_type, &batch, &prevs) {
                prop_assert!(false, "{}", message);
            }
        }
    }
}

mod errors {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("orderSide", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("lots", DataType::Int32, true),
            Field::new("fillPrice", DataType::Float64, true),
        ])
    }

    fn compile_error(text: &str, var_type: DataType) -> String {
        Expr::parse(text)
            .unwrap()
            .recurrence("prev", &var_type, &schema())
            .unwrap_err()
            .to_string()
    }

    /// The error of the first step, with `qty` = 3 and `fillPrice` = 1e300.
    fn step_error(text: &str, var_type: DataType, prev: Scalar) -> String {
        let batch = RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(StringArray::from(vec!["B"])),
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(Float64Array::from(vec![1e300])),
            ],
        )
        .unwrap();
        Expr::parse(text)
            .unwrap()
            .recurrence("prev", &var_type, &schema())
            .unwrap()
            .prepare(&batch)
            .unwrap()
            .step(0, prev)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_columns_and_type_errors_are_those_of_check() {
        assert_eq!(
            compile_error("prev + qyt", DataType::Int64),
            "unknown column 'qyt' in expression 'prev + qyt'; did you mean 'qty'? \
             available columns: orderSide, qty, lots, fillPrice, prev"
        );
        assert_eq!(
            compile_error("prev + orderSide", DataType::Float64),
            "cannot apply '+' to Float64 and Utf8 in expression 'prev + orderSide'"
        );
        assert_eq!(
            compile_error("prev AND qty > 0", DataType::Int64),
            "cannot apply 'AND' to Int64 and Boolean in expression 'prev AND qty > 0'"
        );
    }

    #[test]
    fn a_running_value_is_int64_float64_or_boolean() {
        assert_eq!(
            compile_error("CASE WHEN prev > 0 THEN 'up' END", DataType::Int64),
            "expression 'CASE WHEN prev > 0 THEN 'up' END' gives Utf8, but a running value \
             must be Int64, Float64 or Boolean; convert it, e.g. CAST(... AS BIGINT)"
        );
        assert_eq!(
            compile_error("lots", DataType::Int64),
            "expression 'lots' gives Int32, but a running value must be Int64, Float64 or \
             Boolean; convert it, e.g. CAST(... AS BIGINT)"
        );
        assert_eq!(
            compile_error("prev + 1", DataType::Int32),
            "the running variable 'prev' of expression 'prev + 1' is Int32; \
             it must be Int64, Float64 or Boolean"
        );
    }

    #[test]
    fn strings_only_where_the_variable_is_not_involved() {
        assert_eq!(
            compile_error(
                "CASE WHEN prev > 0 THEN 'up' ELSE 'down' END = 'up'",
                DataType::Int64
            ),
            "cannot apply 'CASE' to Utf8 and Utf8 in expression \
             'CASE WHEN prev > 0 THEN 'up' ELSE 'down' END = 'up'': \
             strings may only be used in parts of the expression that do not involve 'prev'"
        );
        assert_eq!(
            compile_error("CAST(prev AS VARCHAR) = '1'", DataType::Float64),
            "cannot apply 'CAST AS Utf8' to Float64 in expression 'CAST(prev AS VARCHAR) = '1'': \
             strings may only be used in parts of the expression that do not involve 'prev'"
        );
        assert_eq!(
            compile_error(
                "coalesce(orderSide, CASE WHEN prev THEN 'B' END) = 'B'",
                DataType::Boolean
            ),
            "cannot apply 'CASE' to Utf8 and Null in expression \
             'coalesce(orderSide, CASE WHEN prev THEN 'B' END) = 'B'': \
             strings may only be used in parts of the expression that do not involve 'prev'"
        );
        assert_eq!(
            compile_error(
                "least(orderSide, CAST(prev AS VARCHAR)) IS NULL",
                DataType::Int64
            ),
            "cannot apply 'CAST AS Utf8' to Int64 in expression \
             'least(orderSide, CAST(prev AS VARCHAR)) IS NULL': \
             strings may only be used in parts of the expression that do not involve 'prev'"
        );
        let fine = "prev + CASE orderSide WHEN 'B' THEN qty ELSE -qty END";
        assert!(
            Expr::parse(fine)
                .unwrap()
                .recurrence("prev", &DataType::Int64, &schema())
                .is_ok()
        );
    }

    #[test]
    fn the_variable_must_not_be_a_column() {
        let error = Expr::parse("qty + 1")
            .unwrap()
            .recurrence("qty", &DataType::Int64, &schema())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the running variable 'qty' of expression 'qty + 1' is also a column of the input; \
             rename the variable or the column"
        );
    }

    #[test]
    fn overflow_and_failing_casts_name_the_expression_and_values() {
        assert_eq!(
            step_error("prev * 2", DataType::Int64, Scalar::Int(i64::MAX)),
            "cannot evaluate expression 'prev * 2': \
             Arithmetic overflow: Overflow happened on: 9223372036854775807 * 2"
        );
        assert_eq!(
            step_error("prev + qty", DataType::Int64, Scalar::Int(i64::MAX)),
            "cannot evaluate expression 'prev + qty': \
             Arithmetic overflow: Overflow happened on: 9223372036854775807 + 3"
        );
        assert_eq!(
            step_error("-prev", DataType::Int64, Scalar::Int(i64::MIN)),
            "cannot evaluate expression '-prev': \
             Arithmetic overflow: Overflow happened on: - -9223372036854775808"
        );
        assert_eq!(
            step_error("abs(prev)", DataType::Int64, Scalar::Int(i64::MIN)),
            "cannot evaluate expression 'abs(prev)': \
             Arithmetic overflow: Overflow happened on: abs(-9223372036854775808)"
        );
        assert_eq!(
            step_error(
                "CAST(prev * fillPrice AS BIGINT)",
                DataType::Float64,
                Scalar::Float(2.0)
            ),
            "cannot evaluate expression 'CAST(prev * fillPrice AS BIGINT)': \
             Cast error: Can't cast value 2e300 to type Int64"
        );
        assert_eq!(
            step_error(
                "CASE WHEN prev > 0 THEN prev ELSE prev * 9223372036854775807 END",
                DataType::Int64,
                Scalar::Int(5)
            ),
            "cannot evaluate expression \
             'CASE WHEN prev > 0 THEN prev ELSE prev * 9223372036854775807 END': \
             Arithmetic overflow: Overflow happened on: 5 * 9223372036854775807",
            "every branch is evaluated, as in the vectorised evaluator"
        );
    }

    #[test]
    fn prepare_checks_the_batch_against_the_schema_compiled_for() {
        let recurrence = Expr::parse("prev + qty * 9223372036854775807")
            .unwrap()
            .recurrence("prev", &DataType::Int64, &schema())
            .unwrap();
        let batch = |qty: ArrayRef| RecordBatch::try_from_iter([("qty", qty)]).unwrap();
        let error = |batch: RecordBatch| recurrence.prepare(&batch).unwrap_err().to_string();
        assert_eq!(
            error(batch(Arc::new(Int64Array::from(vec![1, 3])))),
            "cannot evaluate expression 'prev + qty * 9223372036854775807': \
             Arithmetic overflow: Overflow happened on: 3 * 9223372036854775807"
        );
        assert_eq!(
            error(batch(Arc::new(Float64Array::from(vec![1.0])))),
            "cannot evaluate expression 'prev + qty * 9223372036854775807': Schema error: \
             column 'qty' is Float64 in this batch but Int64 in the schema the recurrence was \
             compiled for"
        );
        let no_qty = RecordBatch::try_from_iter([(
            "quantity",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            error(no_qty),
            "unknown column 'qty' in expression 'prev + qty * 9223372036854775807'; \
             available columns: quantity"
        );
    }

    #[test]
    #[should_panic(expected = "the running variable of 'prev + 1' is Int64, not Float(1.0)")]
    fn a_variable_of_another_type_is_a_bug_in_the_caller() {
        let batch =
            RecordBatch::try_from_iter([("qty", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let prepared = Expr::parse("prev + 1")
            .unwrap()
            .recurrence("prev", &DataType::Int64, &batch.schema())
            .unwrap()
            .prepare(&batch)
            .unwrap();
        let _ = prepared.step(0, Scalar::Float(1.0));
    }
}
