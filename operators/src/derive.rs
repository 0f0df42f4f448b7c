//! `derive`: casts, derived columns and projection, batch by batch.
//!
//! * A **cast** to `int64` loads any numeric column as float and takes the nearest
//!   integer when it is within `tolerance` (default 1e-6) of it, so `300.00000001`
//!   becomes `300`. A value further from an integer (or NaN, or out of range) is a cast
//!   failure: by default the date fails with an error naming the row and value; with
//!   `on_error = "null"` the value becomes null and is counted as `cast.failed.{col}`.
//! * A **derived column** is a SQL expression over the columns (see [`crate::expr`]),
//!   evaluated vectorised; later expressions may use earlier derived columns.
//! * **Projection** keeps only the columns later stages need.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use arrow::error::ArrowError;
use timely::dataflow::Stream;

use crate::batch::{Batch, map_stage, with_columns};
use crate::columns::ROW_ID;
use crate::expr::{Expr, ExprError};
use crate::report::Diagnostics;
use crate::time::Time;

/// What to do with a value that cannot be cast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CastFailure {
    /// Fail the date with an error naming the row and value.
    #[default]
    Error,
    /// Make the value null and count it.
    Null,
}

/// A cast of a column to `Int64` within a tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct IntegerCast {
    /// The column (replaced in place).
    pub column: String,
    /// The largest accepted distance to the nearest integer.
    pub tolerance: f64,
    /// What to do with values that are not integers.
    pub on_error: CastFailure,
}

/// Everything the `derive` stage does to a batch, in order: conversion of the input
/// columns to their expected types, casts, derived columns, projection.
#[derive(Clone, Debug, Default)]
pub struct DeriveSpec {
    /// Input columns and the types they are expected to have (those the pipeline was
    /// bound to: `vizflow run` binds to the narrowest types that hold every date's, see
    /// `vizflow::config::widest_schema`). A column of another type (an Int32 date where
    /// the run has Int64, or Arrow's Null type for a column without values) is converted
    /// first, so that every later stage sees one type per column. Conversion never
    /// changes a value: one the expected type cannot hold exactly fails the date. A
    /// numeric column that is cast is left to the cast, which reads every numeric type.
    pub input_types: Vec<(String, DataType)>,
    /// Integer casts.
    pub casts: Vec<IntegerCast>,
    /// `(name, expression)` pairs, evaluated in order.
    pub columns: Vec<(String, Expr)>,
    /// When set, the columns to keep (in this order; missing ones are skipped).
    pub keep: Option<Vec<String>>,
}

/// Casts `values` to integers within `tolerance`. Returns the integers, the number of
/// failures made null, or an error naming the first failing row (within `values`) and
/// value.
pub fn cast_to_integer(
    values: &dyn Array,
    cast: &IntegerCast,
) -> Result<(Int64Array, u64), DeriveError> {
    cast_rows(values, cast).map_err(|failure| failure.at(cast, |row| row as u64))
}

/// Why a batch failed the `derive` stage: a cast, a conversion to the bound input
/// types, or a derived column's expression.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    /// A value that is not within the cast's tolerance of an integer (or NaN, or out of
    /// range).
    #[error(
        "cast: column '{column}' row {row} value {value} is not within {tolerance} of an \
         integer; fix the data or set on_error = \"null\" for this cast"
    )]
    CastValue {
        /// The cast column.
        column: String,
        /// The row: of the file when the batch has a `row_id` column, else of the batch.
        row: u64,
        /// The value.
        value: f64,
        /// The cast's tolerance.
        tolerance: f64,
    },
    /// A cast column that cannot be read as numbers.
    #[error("cast: column '{column}' of type {data_type} cannot be cast to int64: {source}")]
    CastType {
        /// The cast column.
        column: String,
        /// Its type.
        data_type: DataType,
        /// Arrow's complaint about the cast to Float64.
        source: ArrowError,
    },
    /// The batch has no column to cast.
    #[error("cast: column '{column}' is missing")]
    CastColumnMissing {
        /// The cast column.
        column: String,
    },
    /// An input column of another type than the run was bound to, which cannot be read
    /// as the bound type.
    #[error(
        "column '{column}' has type {data_type} here and {target} on other dates, and \
         cannot be read as {target}: {source}; make the type consistent across dates"
    )]
    ConvertType {
        /// The input column.
        column: String,
        /// Its type in this batch.
        data_type: DataType,
        /// The type the run was bound to.
        target: DataType,
        /// Arrow's complaint about the cast.
        source: ArrowError,
    },
    /// An input column converted to the bound type that cannot be compared with the
    /// original to check that no value changed.
    #[error(
        "column '{column}' has type {data_type} here and {target} on other dates, and \
         cannot be compared after reading it as {target}: {source}"
    )]
    ConvertCompare {
        /// The input column.
        column: String,
        /// Its type in this batch.
        data_type: DataType,
        /// The type the run was bound to.
        target: DataType,
        /// Arrow's complaint about the cast back or the comparison.
        source: ArrowError,
    },
    /// A value of an input column that the bound type cannot hold exactly (a fraction
    /// read as an integer, an integer too large, a float a narrower float rounds).
    #[error(
        "column '{column}' has type {data_type} here and {target} on other dates; row {row} \
         value {value} cannot be read as {target} without changing it; {}",
        convert_fix(column, data_type, target)
    )]
    ConvertValue {
        /// The input column.
        column: String,
        /// Its type in this batch.
        data_type: DataType,
        /// The type the run was bound to.
        target: DataType,
        /// The row: of the file when the batch has a `row_id` column, else of the batch.
        row: u64,
        /// The value, as Arrow displays it.
        value: String,
    },
    /// A derived column's expression failed.
    #[error("derive '{column}': {source}")]
    Expr {
        /// The derived column.
        column: String,
        /// The expression's error (boxed: it is large, and errors are rare).
        source: Box<ExprError>,
    },
    /// An Arrow kernel failed where it cannot (a bug): an integer cast to Int64, a
    /// projection on the batch's own columns.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

impl DeriveError {
    /// Whose fault the error is: a value that fails a cast or a conversion is the
    /// data's, as is a missing column (the date's file lacks it); a cast of a column
    /// that is not numeric is the configuration's; an expression's error is its own
    /// ([`ExprError::fault`]).
    pub fn fault(&self) -> crate::Fault {
        match self {
            DeriveError::CastValue { .. }
            | DeriveError::CastColumnMissing { .. }
            | DeriveError::ConvertType { .. }
            | DeriveError::ConvertCompare { .. }
            | DeriveError::ConvertValue { .. } => crate::Fault::Data,
            DeriveError::CastType { .. } => crate::Fault::Config,
            DeriveError::Expr { source, .. } => source.fault(),
            DeriveError::Arrow(_) => crate::Fault::Bug,
        }
    }
}

/// What to do about a value the bound type cannot hold: a numeric column can also be
/// cast.
fn convert_fix(column: &str, data_type: &DataType, target: &DataType) -> String {
    match data_type.is_numeric() && target.is_numeric() {
        true => format!(
            "make the type consistent across dates, or cast the column with [[cast]] \
             column = \"{column}\""
        ),
        false => "make the type consistent across dates".to_owned(),
    }
}

/// Why a cast failed: a value that is not an integer, or a column of the wrong type.
enum CastError {
    /// The first row (within the array) whose value is not within the tolerance.
    Value { row: usize, value: f64 },
    /// The column cannot be read as numbers.
    Type(DeriveError),
}

impl CastError {
    /// The error, with the row replaced by `row(r)` (e.g. the file row).
    fn at(self, cast: &IntegerCast, row: impl Fn(usize) -> u64) -> DeriveError {
        match self {
            CastError::Value { row: r, value } => DeriveError::CastValue {
                column: cast.column.clone(),
                row: row(r),
                value,
                tolerance: cast.tolerance,
            },
            CastError::Type(error) => error,
        }
    }
}

fn cast_rows(values: &dyn Array, cast: &IntegerCast) -> Result<(Int64Array, u64), CastError> {
    if matches!(
        values.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    ) {
        let ints = arrow::compute::cast(values, &DataType::Int64)
            .map_err(|e| CastError::Type(DeriveError::Arrow(e)))?;
        return Ok((ints.as_primitive().clone(), 0));
    }
    let floats = arrow::compute::cast(values, &DataType::Float64).map_err(|source| {
        CastError::Type(DeriveError::CastType {
            column: cast.column.clone(),
            data_type: values.data_type().clone(),
            source,
        })
    })?;
    let floats = floats.as_primitive::<Float64Type>();
    let values = floats.values();
    let (out, cast_ok) = crate::bin::integers_of(values, |x| {
        let nearest = crate::bin::round_half_away(x);
        let ok = (x - nearest).abs() <= cast.tolerance && nearest.abs() < 9.2e18;
        ok.then_some(nearest as i64)
    });
    // The values that fail: present but not within the tolerance of an integer.
    let failed = match floats.nulls() {
        Some(nulls) => nulls.inner() & &!&cast_ok,
        None => !&cast_ok,
    };
    let failures = failed.count_set_bits() as u64;
    if let Some(row) = failed.set_indices().next()
        && cast.on_error == CastFailure::Error
    {
        return Err(CastError::Value {
            row,
            value: values[row],
        });
    }
    let valid = match floats.nulls() {
        Some(nulls) => nulls.inner() & &cast_ok,
        None => cast_ok,
    };
    let nulls = (valid.count_set_bits() < valid.len()).then(|| NullBuffer::new(valid));
    Ok((Int64Array::new(out.into(), nulls), failures))
}

/// Applies a [`DeriveSpec`] to a batch. Returns the batch and the cast failure counts
/// (one per cast).
pub fn derive_batch(
    batch: &RecordBatch,
    spec: &DeriveSpec,
) -> Result<(RecordBatch, Vec<u64>), DeriveError> {
    let mut out = conform(batch, &spec.input_types, &spec.casts)?;
    let mut failures = Vec::with_capacity(spec.casts.len());
    for cast in &spec.casts {
        let values =
            out.column_by_name(&cast.column)
                .ok_or_else(|| DeriveError::CastColumnMissing {
                    column: cast.column.clone(),
                })?;
        let (ints, failed) = cast_rows(values.as_ref(), cast).map_err(|failure| {
            // Name the row of the file (its `row_id`), not the row of this batch.
            let row_ids = out
                .column_by_name(ROW_ID)
                .and_then(|ids| ids.as_primitive_opt::<UInt64Type>());
            failure.at(cast, |r| row_ids.map_or(r as u64, |ids| ids.value(r)))
        })?;
        out = with_columns(
            &out,
            vec![(cast.column.clone(), Arc::new(ints) as ArrayRef)],
        );
        failures.push(failed);
    }
    for (name, expr) in &spec.columns {
        let values = expr.evaluate(&out).map_err(|source| DeriveError::Expr {
            column: name.clone(),
            source: Box::new(source),
        })?;
        out = with_columns(&out, vec![(name.clone(), values)]);
    }
    if let Some(keep) = &spec.keep {
        let schema = out.schema();
        let indices: Vec<usize> = keep
            .iter()
            .filter_map(|name| schema.index_of(name).ok())
            .collect();
        out = out.project(&indices)?;
    }
    Ok((out, failures))
}

/// `batch` with each column of `types` converted to its type where it differs, never
/// changing a value: a value the type cannot hold exactly (a fraction read as an integer,
/// an integer too large for the type, a float that a narrower float rounds) fails the
/// date, naming the column, row, value and both types. Columns listed in `cast` and of a
/// numeric type are left as they are: the cast reads every numeric type and applies its
/// own tolerance.
fn conform(
    batch: &RecordBatch,
    types: &[(String, DataType)],
    casts: &[IntegerCast],
) -> Result<RecordBatch, DeriveError> {
    let mut converted = Vec::new();
    for (name, data_type) in types {
        let Some(values) = batch.column_by_name(name) else {
            continue;
        };
        if values.data_type() == data_type
            || (values.data_type().is_numeric() && casts.iter().any(|c| c.column == *name))
        {
            continue;
        }
        let row_ids = batch
            .column_by_name(ROW_ID)
            .and_then(|ids| ids.as_primitive_opt::<UInt64Type>());
        let values = conform_column(name, values, data_type, |r| {
            row_ids.map_or(r as u64, |ids| ids.value(r))
        })?;
        converted.push((name.clone(), values));
    }
    Ok(match converted.is_empty() {
        true => batch.clone(),
        false => with_columns(batch, converted),
    })
}

/// `values` as `target`, or an error naming the first row (as `row(r)`, e.g. the file
/// row) whose value `target` cannot hold exactly. The check converts back and compares:
/// a value that does not survive the round trip (or becomes null) would have changed.
fn conform_column(
    name: &str,
    values: &ArrayRef,
    target: &DataType,
    row: impl Fn(usize) -> u64,
) -> Result<ArrayRef, DeriveError> {
    use arrow::compute::{CastOptions, cast_with_options};
    let source = values.data_type();
    // Safe: a value that does not fit becomes null, and the round trip below finds it.
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let converted =
        cast_with_options(values, target, &options).map_err(|e| DeriveError::ConvertType {
            column: name.to_owned(),
            data_type: source.clone(),
            target: target.clone(),
            source: e,
        })?;
    if source == &DataType::Null {
        return Ok(converted);
    }
    let changed = cast_with_options(&converted, source, &options)
        .and_then(|back| {
            let distinct = arrow::compute::kernels::cmp::distinct(values, &back)?;
            // NaN is NaN whatever its payload bits.
            let both_nan = |r: usize| {
                let is_nan = |a: &dyn Array| match a.data_type() {
                    DataType::Float64 => a.as_primitive::<Float64Type>().value(r).is_nan(),
                    DataType::Float32 => a
                        .as_primitive::<arrow::datatypes::Float32Type>()
                        .value(r)
                        .is_nan(),
                    _ => false,
                };
                is_nan(values.as_ref()) && is_nan(back.as_ref())
            };
            Ok(distinct.values().set_indices().find(|r| !both_nan(*r)))
        })
        .map_err(|e| DeriveError::ConvertCompare {
            column: name.to_owned(),
            data_type: source.clone(),
            target: target.clone(),
            source: e,
        })?;
    let Some(r) = changed else {
        return Ok(converted);
    };
    let options = arrow::util::display::FormatOptions::default();
    let value = arrow::util::display::ArrayFormatter::try_new(values.as_ref(), &options)
        .map(|f| f.value(r).to_string())
        .unwrap_or_default();
    Err(DeriveError::ConvertValue {
        column: name.to_owned(),
        data_type: source.clone(),
        target: target.clone(),
        row: row(r),
        value,
    })
}

/// How many values of a float column are NaN (0 for other types).
fn nan_count(values: &dyn Array) -> u64 {
    fn count<T: arrow::datatypes::ArrowPrimitiveType>(
        values: &dyn Array,
        is_nan: fn(&T::Native) -> bool,
    ) -> u64 {
        let values = values.as_primitive::<T>();
        let nans = match values.nulls().filter(|n| n.null_count() > 0) {
            // The common case, without a bit test per value.
            None => values.values().iter().filter(|v| is_nan(v)).count(),
            Some(nulls) => (0..values.len())
                .filter(|i| nulls.is_valid(*i) && is_nan(&values.values()[*i]))
                .count(),
        };
        nans as u64
    }
    match values.data_type() {
        DataType::Float64 => count::<Float64Type>(values, |v| v.is_nan()),
        DataType::Float32 => count::<arrow::datatypes::Float32Type>(values, |v| v.is_nan()),
        _ => 0,
    }
}

/// The `derive` operator.
pub trait Derive<'scope> {
    /// Applies casts, derived columns and projection to every batch.
    fn derive(self, spec: DeriveSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch>;
}

impl<'scope> Derive<'scope> for Stream<'scope, Time, Batch> {
    fn derive(self, spec: DeriveSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch> {
        let columns = spec.columns.clone();
        let revised = move |batch: RecordBatch| derive_revised(&batch, &columns);
        map_stage(self, "Derive", diagnostics, derive_fn(spec), Some(revised))
    }
}

/// The derived `columns` that can be evaluated on a narrow batch of revised values
/// ([`crate::batch::Emission::Revised`]), in order, added to it: those whose columns
/// it has (the pipeline's binding sends such batches only when every derived column
/// that a revised component reads is among them). The others are left out, and no
/// column is dropped.
pub fn derive_revised(
    batch: &RecordBatch,
    columns: &[(String, Expr)],
) -> Result<RecordBatch, DeriveError> {
    let mut out = batch.clone();
    for (name, expr) in columns {
        let schema = out.schema();
        if !expr
            .columns()
            .iter()
            .all(|c| schema.column_with_name(c).is_some())
        {
            continue;
        }
        let values = expr.evaluate(&out).map_err(|source| DeriveError::Expr {
            column: name.clone(),
            source: Box::new(source),
        })?;
        out = with_columns(&out, vec![(name.clone(), values)]);
    }
    Ok(out)
}

/// The `derive` operator's work on one batch of a date (`date_key`), counts included:
/// what the operator maps every batch with, and what a worker runs on a batch as it
/// arrives when the pipeline streams.
pub fn derive_fn(
    spec: DeriveSpec,
) -> impl FnMut(u32, RecordBatch, &Diagnostics) -> Result<RecordBatch, DeriveError> {
    let counters: Vec<String> = spec
        .casts
        .iter()
        .map(|c| format!("cast.failed.{}", c.column))
        .collect();
    // Nulls and NaNs of each input column, as read (the first derive stage only: the
    // one that knows the input columns).
    let input_counters: Vec<(String, String, String)> = spec
        .input_types
        .iter()
        .map(|(c, _)| {
            (
                c.clone(),
                format!("input.null.{c}"),
                format!("input.nan.{c}"),
            )
        })
        .collect();
    move |date_key, batch, diagnostics| {
        let mut counts = Vec::with_capacity(2 * input_counters.len());
        for (column, nulls, nans) in &input_counters {
            if let Some(values) = batch.column_by_name(column) {
                counts.push((nulls.as_str(), values.logical_null_count() as u64));
                counts.push((nans.as_str(), nan_count(values.as_ref())));
            }
        }
        diagnostics.add_all(date_key, counts);
        let (out, failures) = derive_batch(&batch, &spec)?;
        diagnostics.add_all(date_key, counters.iter().map(String::as_str).zip(failures));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    fn qty_cast(on_error: CastFailure) -> IntegerCast {
        IntegerCast {
            column: "qty".into(),
            tolerance: 1e-6,
            on_error,
        }
    }

    #[test]
    fn float_noise_casts_to_integers() {
        let values = Float64Array::from(vec![
            Some(300.00000001),
            Some(99.9999999),
            None,
            Some(-100.0),
        ]);
        let (ints, failed) = cast_to_integer(&values, &qty_cast(CastFailure::Error)).unwrap();
        assert_eq!(
            ints.iter().collect::<Vec<_>>(),
            vec![Some(300), Some(100), None, Some(-100)]
        );
        assert_eq!(failed, 0);
    }

    #[test]
    fn non_integers_fail_or_become_null() {
        let values = Float64Array::from(vec![1.0, 1.5, f64::NAN]);
        let err = cast_to_integer(&values, &qty_cast(CastFailure::Error)).unwrap_err();
        assert_eq!(err.fault(), crate::Fault::Data);
        let err = err.to_string();
        assert_eq!(
            err,
            "cast: column 'qty' row 1 value 1.5 is not within 0.000001 of an integer; \
             fix the data or set on_error = \"null\" for this cast"
        );
        let (ints, failed) = cast_to_integer(&values, &qty_cast(CastFailure::Null)).unwrap();
        assert_eq!(ints.iter().collect::<Vec<_>>(), vec![Some(1), None, None]);
        assert_eq!(failed, 2);
    }

    #[test]
    fn input_columns_take_the_first_dates_types() {
        let batch = RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(arrow::array::Int32Array::from(vec![1, 2])) as ArrayRef,
            ),
            ("side", Arc::new(arrow::array::NullArray::new(2))),
            ("qty", Arc::new(Int64Array::from(vec![5, 1 << 40]))),
        ])
        .unwrap();
        let spec = |qty_type: DataType| DeriveSpec {
            input_types: vec![
                ("ukey".into(), DataType::Int64),
                ("side".into(), DataType::Utf8),
                ("qty".into(), qty_type),
            ],
            ..DeriveSpec::default()
        };
        let (out, _) = derive_batch(&batch, &spec(DataType::Int64)).unwrap();
        let types: Vec<DataType> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Int64, DataType::Utf8, DataType::Int64]);
        assert_eq!(out.column(1).null_count(), 2);
        let error = derive_batch(&batch, &spec(DataType::Int32))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "column 'qty' has type Int64 here and Int32 on other dates; row 1 value \
             1099511627776 cannot be read as Int32 without changing it; make the type \
             consistent across dates, or cast the column with [[cast]] column = \"qty\""
        );
    }

    /// Converting a column to the bound type never changes a value: each case is a
    /// value the target type cannot hold exactly, and fails naming the row and value.
    #[test]
    fn conversion_that_would_change_a_value_fails() {
        let cases: Vec<(ArrayRef, DataType, &str)> = vec![
            (
                Arc::new(Float64Array::from(vec![Some(1.0), None, Some(100.5)])),
                DataType::Int64,
                "row 2 value 100.5",
            ),
            (
                Arc::new(Float64Array::from(vec![1.5, 1e300])),
                DataType::Float32,
                "row 1 value 1e300",
            ),
            (
                Arc::new(Float64Array::from(vec![0.5, 0.1])),
                DataType::Float32,
                "row 1 value 0.1",
            ),
            (
                Arc::new(Int64Array::from(vec![1, (1 << 53) + 1])),
                DataType::Float64,
                "row 1 value 9007199254740993",
            ),
            (
                Arc::new(arrow::array::UInt64Array::from(vec![1, u64::MAX])),
                DataType::Int64,
                "row 1 value 18446744073709551615",
            ),
        ];
        for (values, target, at) in cases {
            let batch = RecordBatch::try_from_iter([("x", values.clone())]).unwrap();
            let spec = DeriveSpec {
                input_types: vec![("x".into(), target.clone())],
                ..DeriveSpec::default()
            };
            let error = derive_batch(&batch, &spec).unwrap_err().to_string();
            let expected = format!(
                "column 'x' has type {} here and {target} on other dates; {at} cannot be read \
                 as {target} without changing it",
                values.data_type()
            );
            assert!(error.starts_with(&expected), "{error}\nexpected {expected}");
        }
    }

    /// Widening keeps every value, NaN and nulls included.
    #[test]
    fn widening_keeps_every_value() {
        let f32s = arrow::array::Float32Array::from(vec![Some(0.1), None, Some(f32::NAN)]);
        let batch = RecordBatch::try_from_iter([("x", Arc::new(f32s) as ArrayRef)]).unwrap();
        let spec = DeriveSpec {
            input_types: vec![("x".into(), DataType::Float64)],
            ..DeriveSpec::default()
        };
        let (out, _) = derive_batch(&batch, &spec).unwrap();
        let x = out.column(0).as_primitive::<Float64Type>();
        assert_eq!(x.value(0), f64::from(0.1f32));
        assert!(x.is_null(1) && x.value(2).is_nan());
    }

    /// A cast column keeps a later date's float values until the cast's own tolerance
    /// check, whatever type the run binds it to.
    #[test]
    fn a_cast_column_is_not_converted_before_its_cast() {
        let qty = Float64Array::from(vec![100.0, 100.5]);
        let batch = RecordBatch::try_from_iter([("qty", Arc::new(qty) as ArrayRef)]).unwrap();
        let spec = |on_error| DeriveSpec {
            input_types: vec![("qty".into(), DataType::Int64)],
            casts: vec![qty_cast(on_error)],
            ..DeriveSpec::default()
        };
        let error = derive_batch(&batch, &spec(CastFailure::Error))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cast: column 'qty' row 1 value 100.5"),
            "{error}"
        );
        let (out, failed) = derive_batch(&batch, &spec(CastFailure::Null)).unwrap();
        let qty = out.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(qty.iter().collect::<Vec<_>>(), [Some(100), None]);
        assert_eq!(failed, [1]);
    }
}
