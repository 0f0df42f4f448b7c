//! The expression engine (`vizflow_operators::expr`), by topic:
//! - `oracle`: every feature against a plain row-by-row evaluation, on rows with nulls,
//!   NaN, signed zeros and zero divisors;
//! - `errors`: the exact text of each kind of error;
//! - `arithmetic_matches_row_oracle`: random arithmetic over two Float64 columns;
//! - `metric`: aggregate metrics.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
    LargeStringArray, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use vizflow_operators::expr::{
    AggregateCall, AggregateFunction, Expr, ExprError, MetricExpr, closest,
};

/// A value as the oracle sees it; floats are equal when both are NaN.
#[derive(Clone, Debug)]
enum V {
    I(i64),
    F(f64),
    S(String),
    B(bool),
}

impl PartialEq for V {
    fn eq(&self, other: &V) -> bool {
        match (self, other) {
            (V::I(a), V::I(b)) => a == b,
            (V::F(a), V::F(b)) => a == b || a.is_nan() && b.is_nan(),
            (V::S(a), V::S(b)) => a == b,
            (V::B(a), V::B(b)) => a == b,
            _ => false,
        }
    }
}

fn values(array: &dyn Array) -> Vec<Option<V>> {
    (0..array.len())
        .map(|row| {
            array.is_valid(row).then(|| match array.data_type() {
                DataType::Int64 => V::I(array.as_primitive::<Int64Type>().value(row)),
                DataType::Float64 => V::F(array.as_primitive::<Float64Type>().value(row)),
                DataType::Utf8 => V::S(array.as_string::<i32>().value(row).to_string()),
                DataType::Boolean => V::B(array.as_boolean().value(row)),
                other => panic!("no oracle for {other}"),
            })
        })
        .collect()
}

/// One input row: `x`, `y` Float64; `i` Int64; `j` Int32; `s` Utf8; `d` the same strings as
/// `l`, as a Dictionary(Int32, Utf8) and a LargeUtf8 column; `b` Boolean.
#[derive(Clone, Copy)]
struct Row {
    x: Option<f64>,
    y: Option<f64>,
    i: Option<i64>,
    j: Option<i32>,
    s: Option<&'static str>,
    d: Option<&'static str>,
    b: Option<bool>,
}

#[rustfmt::skip]
const ROWS: [Row; 9] = [
    Row { x: Some(1.5), y: Some(2.0), i: Some(3), j: Some(1), s: Some("B"), d: Some("S"), b: Some(true) },
    Row { x: Some(-2.5), y: Some(0.0), i: Some(-7), j: Some(2), s: Some("S"), d: Some("B"), b: Some(false) },
    Row { x: None, y: Some(1.0), i: None, j: Some(0), s: None, d: Some("B"), b: None },
    Row { x: Some(f64::NAN), y: None, i: Some(0), j: None, s: Some("B"), d: None, b: Some(true) },
    Row { x: Some(0.0), y: Some(-0.0), i: Some(5), j: Some(-3), s: Some("X"), d: Some("X"), b: Some(false) },
    Row { x: Some(-0.0), y: Some(f64::NAN), i: Some(40), j: Some(4), s: Some("S"), d: Some("S"), b: None },
    Row { x: Some(2.5), y: Some(2.5), i: Some(-1), j: Some(0), s: Some("B"), d: None, b: Some(true) },
    Row { x: Some(1e300), y: Some(1e300), i: Some(2), j: Some(6), s: Some(""), d: Some("B"), b: Some(false) },
    Row { x: Some(f64::NAN), y: Some(-f64::NAN), i: Some(9), j: Some(9), s: Some("a"), d: Some("S"), b: Some(true) },
];

fn batch() -> RecordBatch {
    let x: Float64Array = ROWS.iter().map(|r| r.x).collect();
    let y: Float64Array = ROWS.iter().map(|r| r.y).collect();
    let i: Int64Array = ROWS.iter().map(|r| r.i).collect();
    let j: Int32Array = ROWS.iter().map(|r| r.j).collect();
    let s: StringArray = ROWS.iter().map(|r| r.s).collect();
    let d: DictionaryArray<Int32Type> = ROWS.iter().map(|r| r.d).collect();
    let l: LargeStringArray = ROWS.iter().map(|r| r.d).collect();
    let b: BooleanArray = ROWS.iter().map(|r| r.b).collect();
    RecordBatch::try_from_iter([
        ("x", Arc::new(x) as ArrayRef),
        ("y", Arc::new(y.clone())),
        ("i", Arc::new(i)),
        ("j", Arc::new(j)),
        ("s", Arc::new(s)),
        ("d", Arc::new(d)),
        ("l", Arc::new(l)),
        ("b", Arc::new(b)),
        ("my col", Arc::new(y)),
    ])
    .unwrap()
}

/// Floats ordered as the engine documents: one NaN above every number, and -0.0 = 0.0.
fn order(a: f64, b: f64) -> Ordering {
    let canonical = |x: f64| if x.is_nan() { f64::NAN } else { x + 0.0 };
    canonical(a).total_cmp(&canonical(b))
}

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

/// `least`/`greatest`: skip nulls, keep the first of equals.
fn pick(values: &[Option<f64>], wins: Ordering) -> Option<f64> {
    values.iter().flatten().copied().reduce(|best, next| {
        if order(next, best) == wins {
            next
        } else {
            best
        }
    })
}

fn f(x: f64) -> Option<V> {
    Some(V::F(x))
}
fn i(x: i64) -> Option<V> {
    Some(V::I(x))
}
fn b(x: bool) -> Option<V> {
    Some(V::B(x))
}
fn s(x: &str) -> Option<V> {
    Some(V::S(x.to_string()))
}
fn nonzero(x: f64) -> Option<f64> {
    (x != 0.0).then_some(x)
}

type Oracle = fn(&Row) -> Option<V>;

#[rustfmt::skip]
fn cases() -> Vec<(&'static str, DataType, Oracle)> {
    use DataType::{Boolean, Float64, Int64, Utf8};
    vec![
        // arithmetic
        ("x + y", Float64, |r| f(r.x? + r.y?)),
        ("x - i", Float64, |r| f(r.x? - r.i? as f64)),
        ("i * 2", Int64, |r| i(r.i? * 2)),
        ("i + j", Int64, |r| i(r.i? + i64::from(r.j?))),
        ("-x", Float64, |r| f(-r.x?)),
        ("-i", Int64, |r| i(-r.i?)),
        ("+x", Float64, |r| f(r.x?)),
        ("x / y", Float64, |r| f(r.x? / nonzero(r.y?)?)),
        ("i / j", Float64, |r| f(r.i? as f64 / nonzero(f64::from(r.j?))?)),
        ("i / 0", Float64, |_| None),
        ("7 / 2", Float64, |_| f(3.5)),
        ("i % j", Int64, |r| i(r.i? % Some(i64::from(r.j?)).filter(|j| *j != 0)?)),
        ("x % y", Float64, |r| f(r.x? % nonzero(r.y?)?)),
        ("(x + 1) * 2 - y / 4", Float64, |r| f((r.x? + 1.0) * 2.0 - r.y? / 4.0)),
        ("1e-4 * i", Float64, |r| f(1e-4 * r.i? as f64)),
        ("\"my col\" * 0.5", Float64, |r| f(r.y? * 0.5)),
        // comparisons
        ("x < y", Boolean, |r| b(order(r.x?, r.y?).is_lt())),
        ("x = y", Boolean, |r| b(order(r.x?, r.y?).is_eq())),
        ("x >= i", Boolean, |r| b(order(r.x?, r.i? as f64).is_ge())),
        ("i <> 3", Boolean, |r| b(r.i? != 3)),
        ("i != j", Boolean, |r| b(r.i? != i64::from(r.j?))),
        ("j <= 1.5", Boolean, |r| b(f64::from(r.j?) <= 1.5)),
        ("s = 'B'", Boolean, |r| b(r.s? == "B")),
        ("d = 'B'", Boolean, |r| b(r.d? == "B")),
        ("'B' = l", Boolean, |r| b(r.d? == "B")),
        ("s = d", Boolean, |r| b(r.s? == r.d?)),
        ("l > s", Boolean, |r| b(r.d? > r.s?)),
        ("s < 'C'", Boolean, |r| b(r.s? < "C")),
        ("b = TRUE", Boolean, |r| b(r.b?)),
        ("b", Boolean, |r| b(r.b?)),
        // logic
        ("x > 0 AND b", Boolean, |r| and(r.x.map(|x| order(x, 0.0).is_gt()), r.b).map(V::B)),
        ("x > 0 OR b", Boolean, |r| or(r.x.map(|x| order(x, 0.0).is_gt()), r.b).map(V::B)),
        ("NOT b", Boolean, |r| b(!r.b?)),
        ("b AND NULL", Boolean, |r| and(r.b, None).map(V::B)),
        ("x IS NULL", Boolean, |r| b(r.x.is_none())),
        ("d IS NOT NULL", Boolean, |r| b(r.d.is_some())),
        ("x BETWEEN 0 AND 2", Boolean, |r| b(order(r.x?, 0.0).is_ge() && order(r.x?, 2.0).is_le())),
        ("i NOT BETWEEN 0 AND 3", Boolean, |r| b(!(0..=3).contains(&r.i?))),
        ("s IN ('B', 'S')", Boolean, |r| b(matches!(r.s?, "B" | "S"))),
        ("i NOT IN (3, 0)", Boolean, |r| b(!matches!(r.i?, 3 | 0))),
        ("i IN (3, NULL)", Boolean, |r| or(r.i.map(|i| i == 3), None).map(V::B)),
        // CASE
        ("CASE WHEN s = 'B' THEN i ELSE -i END", Int64, |r| i(if r.s == Some("B") { r.i? } else { -r.i? })),
        ("CASE WHEN x > 0 THEN 'pos' WHEN x < 0 THEN 'neg' END", Utf8, |r| match order(r.x?, 0.0) {
            Ordering::Greater => s("pos"),
            Ordering::Less => s("neg"),
            Ordering::Equal => None,
        }),
        ("CASE d WHEN 'B' THEN 1 WHEN 'S' THEN -1 ELSE 0 END", Int64, |r| i(match r.d {
            Some("B") => 1,
            Some("S") => -1,
            _ => 0,
        })),
        ("CASE WHEN b THEN i ELSE x END", Float64, |r| if r.b == Some(true) { f(r.i? as f64) } else { f(r.x?) }),
        ("CASE WHEN TRUE THEN 'always' END", Utf8, |_| s("always")),
        // functions
        ("abs(x)", Float64, |r| f(r.x?.abs())),
        ("ABS(i)", Int64, |r| i(r.i?.abs())),
        ("sqrt(x)", Float64, |r| f(r.x?.sqrt())),
        ("ln(x)", Float64, |r| f(r.x?.ln())),
        ("log10(i)", Float64, |r| f((r.i? as f64).log10())),
        ("exp(x)", Float64, |r| f(r.x?.exp())),
        ("floor(x)", Float64, |r| f(r.x?.floor())),
        ("ceil(x)", Float64, |r| f(r.x?.ceil())),
        ("round(x)", Float64, |r| f(r.x?.round())),
        ("round(i)", Int64, |r| i(r.i?)),
        ("least(x, y, 0.5)", Float64, |r| f(pick(&[r.x, r.y, Some(0.5)], Ordering::Less)?)),
        ("greatest(x, y)", Float64, |r| f(pick(&[r.x, r.y], Ordering::Greater)?)),
        ("greatest(i, j)", Int64, |r| i(r.i.into_iter().chain(r.j.map(i64::from)).max()?)),
        ("least(s, d)", Utf8, |r| s(r.s.into_iter().chain(r.d).min()?)),
        ("coalesce(x, y, 0)", Float64, |r| f(r.x.or(r.y).unwrap_or(0.0))),
        ("coalesce(s, d, 'none')", Utf8, |r| s(r.s.or(r.d).unwrap_or("none"))),
        // casts
        ("CAST(i AS DOUBLE)", Float64, |r| f(r.i? as f64)),
        ("CAST(j AS BIGINT)", Int64, |r| i(i64::from(r.j?))),
        ("CAST(b AS INTEGER)", Int64, |r| i(i64::from(r.b?))),
        ("TRY_CAST(x AS BIGINT)", Int64, |r| {
            let x = r.x?;
            (x.is_finite() && x.abs() < 9e18).then_some(V::I(x as i64))
        }),
        ("CAST(i AS VARCHAR)", Utf8, |r| s(&r.i?.to_string())),
        ("CAST(s = 'B' AS VARCHAR)", Utf8, |r| s(&(r.s? == "B").to_string())),
        // literals only, repeated on every row
        ("1 + 2", Int64, |_| i(3)),
        ("2.5", Float64, |_| f(2.5)),
        ("'a'", Utf8, |_| s("a")),
        ("NULL + 1", Int64, |_| None),
        ("-(2) * 3", Int64, |_| i(-6)),
    ]
}

#[test]
fn oracle() {
    let batch = batch();
    let mut failures = Vec::new();
    for (text, data_type, oracle) in cases() {
        let expr = Expr::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let actual = expr.evaluate(&batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            expr.check(&batch.schema()).unwrap(),
            data_type,
            "check() of {text}"
        );
        assert_eq!(actual.data_type(), &data_type, "type of {text}");
        let expected: Vec<Option<V>> = ROWS.iter().map(oracle).collect();
        if values(actual.as_ref()) != expected {
            failures.push(format!(
                "{text}\n  actual:   {:?}\n  expected: {expected:?}",
                values(&actual)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bare_columns_keep_their_type_and_null_stays_null() {
    let batch = batch();
    let schema = batch.schema();
    let check = |text: &str| Expr::parse(text).unwrap().check(&schema).unwrap();
    assert_eq!(check("j"), DataType::Int32);
    assert_eq!(
        check("d"),
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
    assert_eq!(check("NULL"), DataType::Null);
    let j = Expr::parse("j").unwrap().evaluate(&batch).unwrap();
    assert!(Arc::ptr_eq(&j, batch.column_by_name("j").unwrap()));
    assert_eq!(
        Expr::parse("NULL")
            .unwrap()
            .evaluate(&batch)
            .unwrap()
            .logical_null_count(),
        ROWS.len()
    );
}

#[test]
fn empty_batch() {
    let empty = batch().slice(0, 0);
    let result = Expr::parse("CASE WHEN x > 0 THEN 1 END + least(i, 2)")
        .unwrap()
        .evaluate(&empty);
    assert_eq!(result.unwrap().len(), 0);
    assert_eq!(Expr::parse("1").unwrap().evaluate(&empty).unwrap().len(), 0);
}

#[test]
fn columns_in_order_of_first_appearance() {
    let expr = Expr::parse(
        "CASE WHEN orderSide = 'B' THEN qty ELSE -qty END * \"fill Price\" + coalesce(qty, x)",
    )
    .unwrap();
    assert_eq!(expr.columns(), ["orderSide", "qty", "fill Price", "x"]);
    assert_eq!(
        expr.text(),
        "CASE WHEN orderSide = 'B' THEN qty ELSE -qty END * \"fill Price\" + coalesce(qty, x)"
    );
}

#[test]
fn closest_suggests_only_likely_typos() {
    let columns = ["AskPrice1", "BidPrice1", "qty", "fillPrice"];
    assert_eq!(closest("ask_price1", columns), Some("AskPrice1"));
    assert_eq!(closest("BIDPRICE1", columns), Some("BidPrice1"));
    assert_eq!(closest("qyt", columns), Some("qty"));
    assert_eq!(closest("fill_price", columns), Some("fillPrice"));
    assert_eq!(closest("volume", columns), None);
    assert_eq!(
        closest("q", columns),
        Some("qty"),
        "2 edits are always allowed"
    );
    assert_eq!(closest("zz", columns), None);
    assert_eq!(closest("x", Vec::<&str>::new()), None);
}

mod errors {
    use super::*;

    fn parse_error(text: &str) -> String {
        Expr::parse(text).unwrap_err().to_string()
    }

    fn evaluate_error(text: &str) -> String {
        Expr::parse(text)
            .unwrap()
            .evaluate(&batch())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_column_with_suggestion() {
        let schema = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("AskPrice1", DataType::Float64, true),
            arrow::datatypes::Field::new("BidPrice1", DataType::Float64, true),
            arrow::datatypes::Field::new("qty", DataType::Int64, true),
        ]);
        let error = Expr::parse("(ask_price1 + BidPrice1) / 2")
            .unwrap()
            .check(&schema)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown column 'ask_price1' in expression '(ask_price1 + BidPrice1) / 2'; \
             did you mean 'AskPrice1'? available columns: AskPrice1, BidPrice1, qty"
        );
        assert!(
            matches!(error, ExprError::UnknownColumn { suggestion: Some(s), .. } if s == "AskPrice1")
        );
        let error = Expr::parse("volume * 2")
            .unwrap()
            .check(&schema)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown column 'volume' in expression 'volume * 2'; available columns: AskPrice1, BidPrice1, qty"
        );
    }

    #[test]
    fn parse_errors_carry_the_position() {
        assert_eq!(
            parse_error("(x + "),
            "cannot parse expression '(x + ': Expected: an expression, found: EOF"
        );
        assert_eq!(
            parse_error("x + * y"),
            "cannot parse expression 'x + * y': Expected: an expression, found: * at Line: 1, Column: 5"
        );
        assert_eq!(
            parse_error("x y"),
            "cannot parse expression 'x y': unexpected 'y' after the expression at Line: 1, Column: 3"
        );
        assert_eq!(
            parse_error("s = 'B"),
            "cannot parse expression 's = 'B': Unterminated string literal at Line: 1, Column: 5"
        );
    }

    #[test]
    fn unsupported_constructs() {
        assert_eq!(
            parse_error("x + (SELECT 1)"),
            "unsupported subquery `(SELECT 1)` in expression 'x + (SELECT 1)'"
        );
        assert_eq!(
            parse_error("s LIKE 'B%'"),
            "unsupported like `s LIKE 'B%'` in expression 's LIKE 'B%''"
        );
        assert_eq!(
            parse_error("t.x"),
            "unsupported compound identifier `t.x` in expression 't.x'"
        );
        assert_eq!(
            parse_error("s || 'x'"),
            "unsupported operator '||' `s || 'x'` in expression 's || 'x''"
        );
        assert_eq!(
            parse_error("abs(x) OVER (PARTITION BY s)"),
            "unsupported window function `abs(x) OVER (PARTITION BY s)` in expression 'abs(x) OVER (PARTITION BY s)'"
        );
        assert_eq!(
            parse_error("CAST(x AS DATE)"),
            "unsupported cast to DATE `CAST(x AS DATE)` in expression 'CAST(x AS DATE)'"
        );
        assert_eq!(
            parse_error("sum(x) / 2"),
            "unsupported aggregate function `sum(x)` in expression 'sum(x) / 2'"
        );
    }

    #[test]
    fn unknown_function_lists_the_supported_ones() {
        assert_eq!(
            parse_error("sqr(x)"),
            "unknown function 'sqr' in expression 'sqr(x)'; did you mean 'sqrt'? supported functions: \
             abs, sqrt, ln, log10, exp, floor, ceil, round, least, greatest, coalesce, CAST, TRY_CAST"
        );
        assert_eq!(
            parse_error("median(x)"),
            "unknown function 'median' in expression 'median(x)'; supported functions: \
             abs, sqrt, ln, log10, exp, floor, ceil, round, least, greatest, coalesce, CAST, TRY_CAST"
        );
        assert_eq!(
            parse_error("abs(x, y)"),
            "function 'abs' takes 1 argument, got 2 in expression 'abs(x, y)'"
        );
        assert_eq!(
            parse_error("coalesce()"),
            "function 'coalesce' takes 1 or more arguments, got 0 in expression 'coalesce()'"
        );
    }

    #[test]
    fn type_errors_name_the_operator_and_types() {
        assert_eq!(
            evaluate_error("s + x"),
            "cannot apply '+' to Utf8 and Float64 in expression 's + x'"
        );
        assert_eq!(
            evaluate_error("d * 2"),
            "cannot apply '*' to Dictionary(Int32, Utf8) and Int64 in expression 'd * 2'"
        );
        assert_eq!(
            evaluate_error("x = 'B'"),
            "cannot apply '=' to Float64 and Utf8 in expression 'x = 'B''"
        );
        assert_eq!(
            evaluate_error("NOT x"),
            "cannot apply 'NOT' to Float64 in expression 'NOT x'"
        );
        assert_eq!(
            evaluate_error("b AND i"),
            "cannot apply 'AND' to Boolean and Int64 in expression 'b AND i'"
        );
        assert_eq!(
            evaluate_error("sqrt(s)"),
            "cannot apply 'sqrt' to Utf8 in expression 'sqrt(s)'"
        );
        assert_eq!(
            evaluate_error("CASE WHEN b THEN 1 WHEN x > 0 THEN 2.5 ELSE 'no' END"),
            "cannot apply 'CASE' to Int64, Float64 and Utf8 in expression 'CASE WHEN b THEN 1 WHEN x > 0 THEN 2.5 ELSE 'no' END'"
        );
        assert_eq!(
            evaluate_error("CASE WHEN x THEN 1 END"),
            "cannot apply 'CASE WHEN' to Float64 in expression 'CASE WHEN x THEN 1 END'"
        );
        assert_eq!(
            evaluate_error("coalesce(s, 0)"),
            "cannot apply 'coalesce' to Utf8 and Int64 in expression 'coalesce(s, 0)'"
        );
    }

    #[test]
    fn kernel_errors_name_the_expression() {
        assert_eq!(
            evaluate_error("i * 9223372036854775807"),
            "cannot evaluate expression 'i * 9223372036854775807': \
             Arithmetic overflow: Overflow happened on: 3 * 9223372036854775807"
        );
        assert_eq!(
            evaluate_error("abs(-9223372036854775807 - 1)"),
            "cannot evaluate expression 'abs(-9223372036854775807 - 1)': \
             Arithmetic overflow: Overflow happened on: abs(-9223372036854775808)"
        );
        assert_eq!(
            evaluate_error("CAST(s AS BIGINT)"),
            "cannot evaluate expression 'CAST(s AS BIGINT)': Cast error: Cannot cast string 'B' to value of Int64 type"
        );
    }
}

mod metric {
    use super::*;

    fn call(function: AggregateFunction, column: &str) -> AggregateCall {
        AggregateCall {
            function,
            column: Some(column.to_string()),
        }
    }

    fn error(text: &str) -> String {
        MetricExpr::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn vwap_with_a_zero_denominator_is_null() {
        let vwap = MetricExpr::parse("sum(notional) / sum(matched_qty)").unwrap();
        assert_eq!(vwap.text(), "sum(notional) / sum(matched_qty)");
        assert_eq!(
            vwap.calls(),
            [
                call(AggregateFunction::Sum, "notional"),
                call(AggregateFunction::Sum, "matched_qty")
            ]
        );
        let notional: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1005.0),
            Some(0.0),
            None,
            Some(-3.0),
        ]));
        let matched_qty: ArrayRef =
            Arc::new(Int64Array::from(vec![Some(100), Some(0), Some(5), Some(0)]));
        let result = vwap.evaluate(&[notional, matched_qty]).unwrap();
        assert_eq!(values(&result), [f(10.05), None, None, None]);
    }

    #[test]
    fn a_single_call_is_returned_unchanged() {
        for (text, expected) in [
            (
                "count()",
                AggregateCall {
                    function: AggregateFunction::CountRows,
                    column: None,
                },
            ),
            (
                "COUNT(*)",
                AggregateCall {
                    function: AggregateFunction::CountRows,
                    column: None,
                },
            ),
            ("Count(x)", call(AggregateFunction::Count, "x")),
            (
                "mean(return_60)",
                call(AggregateFunction::Mean, "return_60"),
            ),
            ("AVG(x)", call(AggregateFunction::Mean, "x")),
            (
                "min(\"fill Price\")",
                call(AggregateFunction::Min, "fill Price"),
            ),
            ("MAX(x)", call(AggregateFunction::Max, "x")),
            ("sum(qty)", call(AggregateFunction::Sum, "qty")),
        ] {
            let metric = MetricExpr::parse(text).unwrap();
            assert_eq!(metric.calls(), [expected], "{text}");
            let counts: ArrayRef = Arc::new(Int64Array::from(vec![3, 0, 7]));
            let result = metric.evaluate(std::slice::from_ref(&counts)).unwrap();
            assert!(Arc::ptr_eq(&result, &counts), "{text}");
        }
    }

    #[test]
    fn call_names_are_canonical() {
        let metric =
            MetricExpr::parse("SUM(x) * 2 + Avg(\"my col\") - count() + COUNT(*) / sum(x)")
                .unwrap();
        let names: Vec<String> = metric.calls().iter().map(AggregateCall::name).collect();
        assert_eq!(names, ["sum(x)", "mean(\"my col\")", "count()"]);
        let sums: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 4.0]));
        let means: ArrayRef = Arc::new(Float64Array::from(vec![0.5, 0.25]));
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![2, 8]));
        let result = metric.evaluate(&[sums, means, counts]).unwrap();
        assert_eq!(
            values(&result),
            [
                f(1.0 * 2.0 + 0.5 - 2.0 + 2.0 / 1.0),
                f(4.0 * 2.0 + 0.25 - 8.0 + 8.0 / 4.0)
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            error("sum(qty * fillPrice) / sum(qty)"),
            "the argument of sum(qty * fillPrice) in metric 'sum(qty * fillPrice) / sum(qty)' is an \
             expression, not a column; define a derived column first, e.g. `derive: x = qty * fillPrice`, \
             and aggregate that column"
        );
        assert_eq!(
            error("qty / sum(x)"),
            "column 'qty' is used outside an aggregate in metric 'qty / sum(x)'; aggregate it, e.g. sum(qty) or mean(qty)"
        );
        assert_eq!(
            error("sum(count())"),
            "nested aggregate sum(count()) in metric 'sum(count())'; an aggregate's argument must be a column"
        );
        assert_eq!(
            error("1 + 2"),
            "metric '1 + 2' has no aggregate call; use e.g. count() or sum(qty)"
        );
        assert_eq!(
            error("sum(a, b)"),
            "function 'sum' takes 1 column argument, got 2 in expression 'sum(a, b)'"
        );
        assert_eq!(
            error("sum(*)"),
            "unsupported '*' argument `sum(*)` in expression 'sum(*)'"
        );
        assert_eq!(
            error("count(DISTINCT x)"),
            "unsupported function call `count(DISTINCT x)` in expression 'count(DISTINCT x)'"
        );
        let metric = MetricExpr::parse("sum(a) / count()").unwrap();
        let one: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        assert_eq!(
            metric
                .evaluate(std::slice::from_ref(&one))
                .unwrap_err()
                .to_string(),
            "metric 'sum(a) / count()' has 2 aggregate calls but was given 1 arrays"
        );
    }
}

mod arithmetic_matches_row_oracle {
    use super::*;
    use proptest::prelude::*;

    /// Arithmetic over columns `a` and `b`; literals are (text, value) pairs.
    #[derive(Clone, Debug)]
    enum Arith {
        A,
        B,
        Literal(&'static str, f64),
        Negate(Box<Arith>),
        Binary(char, Box<Arith>, Box<Arith>),
    }

    impl Arith {
        fn text(&self) -> String {
            match self {
                Arith::A => "a".into(),
                Arith::B => "b".into(),
                Arith::Literal(text, _) => (*text).into(),
                Arith::Negate(arg) => format!("(-{})", arg.text()),
                Arith::Binary(op, left, right) => {
                    format!("({} {op} {})", left.text(), right.text())
                }
            }
        }

        /// The row-wise oracle: plain f64 arithmetic, division by zero is null.
        fn eval(&self, a: Option<f64>, b: Option<f64>) -> Option<f64> {
            match self {
                Arith::A => a,
                Arith::B => b,
                Arith::Literal(_, value) => Some(*value),
                Arith::Negate(arg) => Some(-arg.eval(a, b)?),
                Arith::Binary(op, left, right) => {
                    let (left, right) = (left.eval(a, b)?, right.eval(a, b)?);
                    match op {
                        '+' => Some(left + right),
                        '-' => Some(left - right),
                        '*' => Some(left * right),
                        _ => (right != 0.0).then(|| left / right),
                    }
                }
            }
        }
    }

    const LITERALS: [(&str, f64); 5] = [
        ("0", 0.0),
        ("2", 2.0),
        ("0.5", 0.5),
        ("1e-4", 1e-4),
        ("3.0", 3.0),
    ];

    fn arith() -> impl Strategy<Value = Arith> {
        let leaf = prop_oneof![
            Just(Arith::A),
            Just(Arith::B),
            proptest::sample::select(&LITERALS[..])
                .prop_map(|(text, value)| Arith::Literal(text, value)),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|arg| Arith::Negate(Box::new(arg))),
                (
                    proptest::sample::select(&['+', '-', '*', '/'][..]),
                    inner.clone(),
                    inner
                )
                    .prop_map(|(op, left, right)| Arith::Binary(
                        op,
                        Box::new(left),
                        Box::new(right)
                    )),
            ]
        })
    }

    fn float() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(prop_oneof![
            4 => -1e6..1e6f64,
            1 => Just(0.0),
            1 => Just(-0.0),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(1e300),
        ])
    }

    proptest! {
        #[test]
        fn evaluate_equals_the_oracle(
            expr in arith(),
            (a, b) in (0..24usize).prop_flat_map(|rows| {
                (proptest::collection::vec(float(), rows), proptest::collection::vec(float(), rows))
            }),
        ) {
            let batch = RecordBatch::try_from_iter([
                ("a", Arc::new(Float64Array::from(a.clone())) as ArrayRef),
                ("b", Arc::new(Float64Array::from(b.clone()))),
            ]).unwrap();
            let text = expr.text();
            let result = Expr::parse(&text).unwrap().evaluate(&batch).unwrap();
            // An expression of integer literals only is Int64; compare as f64.
            let result = cast(&result, &DataType::Float64).unwrap();
            let expected: Vec<Option<V>> =
                a.iter().zip(&b).map(|(a, b)| expr.eval(*a, *b).map(V::F)).collect();
            prop_assert_eq!(values(&result), expected, "{}", text);
        }
    }
}
