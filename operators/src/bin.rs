//! `bin`: discretise a numeric column into integer bins.
//!
//! Implements SEMANTICS.md, *bin*: `{col}_bin` = round half away from zero of
//! `x / width`, as `i64`, computed in `f64`. A null, NaN or infinite `x` (or a quotient
//! outside the `i64` range) gives a null bin, counted in the date's report as
//! `bin.null.{col}`.
//!
//! ```
//! use arrow::array::{Array, Float64Array};
//! use vizflow_operators::bin::bin_values;
//! let x = Float64Array::from(vec![Some(0.75), Some(-1.25), None, Some(f64::NAN)]);
//! let (bins, nulls) = bin_values(&x, 0.5).unwrap();
//! assert_eq!(bins.value(0), 2); // 1.5 rounds away from zero
//! assert_eq!(bins.value(1), -3); // -2.5 rounds away from zero
//! assert!(bins.is_null(2) && bins.is_null(3));
//! assert_eq!(nulls, 2);
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Float64Type};
use arrow::error::ArrowError;
use timely::dataflow::Stream;

use crate::batch::{Batch, map_batches, with_columns};
use crate::report::Diagnostics;
use crate::time::Time;

/// Why a column could not be binned.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// The column is not numeric.
    #[error("cannot bin a column of type {data_type}: {source}")]
    Type {
        /// The column's type.
        data_type: DataType,
        /// Arrow's complaint about the cast to Float64.
        source: ArrowError,
    },
    /// The batch has no column to bin.
    #[error("bin: column '{column}' is missing")]
    MissingColumn {
        /// The column.
        column: String,
    },
}

impl BinError {
    /// Whose fault the error is: a column that is not numeric is the configuration's (the
    /// wrong column to bin), a missing one the data's (the date's file lacks it).
    pub fn fault(&self) -> crate::Fault {
        match self {
            BinError::Type { .. } => crate::Fault::Config,
            BinError::MissingColumn { .. } => crate::Fault::Data,
        }
    }
}

const TWO_POW_63: f64 = (1u64 << 63) as f64;

/// One binned column: `{column}_bin` from `column` with bins of `width`.
#[derive(Clone, Debug, PartialEq)]
pub struct BinSpec {
    /// The input column.
    pub column: String,
    /// The bin width (positive, finite).
    pub width: f64,
}

impl BinSpec {
    /// The output column's name, `{column}_bin`.
    pub fn output(&self) -> String {
        format!("{}_bin", self.column)
    }
}

/// `x.round()`: half away from zero, bit for bit (signed zeros, NaN and infinities
/// included), without the call to libm's `round` that baseline x86-64 (no SSE4.1
/// rounding instruction) makes for every value.
#[inline(always)]
pub fn round_half_away(x: f64) -> f64 {
    // From 2^52 on, every f64 is an integer; NaN and infinities are returned as well
    // (through an addition, which quiets a signaling NaN as `round` does).
    if x.is_nan() || x.abs() >= (1u64 << 52) as f64 {
        return x + 0.0;
    }
    let toward_zero = x as i64 as f64;
    // Exact: `x` and its integer part are within 1 of each other.
    let fraction = x - toward_zero;
    let step = f64::from(u8::from(fraction >= 0.5)) - f64::from(u8::from(fraction <= -0.5));
    (toward_zero + step).copysign(x)
}

/// `to_integer` of every value in one pass: the integers (0 where it gives `None`) and a
/// bit per value that is set where it gives one, packed 64 to a word as it goes.
#[inline]
pub fn integers_of(
    values: &[f64],
    to_integer: impl Fn(f64) -> Option<i64>,
) -> (Vec<i64>, BooleanBuffer) {
    let mut integers = Vec::with_capacity(values.len());
    let mut words = Vec::with_capacity(values.len().div_ceil(64));
    for chunk in values.chunks(64) {
        let mut word = 0u64;
        for (k, x) in chunk.iter().enumerate() {
            let integer = to_integer(*x);
            integers.push(integer.unwrap_or(0));
            word |= u64::from(integer.is_some()) << k;
        }
        words.push(word);
    }
    (integers, BooleanBuffer::new(words.into(), 0, values.len()))
}

/// Bins an array of any numeric type. Returns the bins and how many are null.
pub fn bin_values(values: &dyn Array, width: f64) -> Result<(Int64Array, u64), BinError> {
    let floats =
        arrow::compute::cast(values, &DataType::Float64).map_err(|source| BinError::Type {
            data_type: values.data_type().clone(),
            source,
        })?;
    let floats = floats.as_primitive::<Float64Type>();
    let values = floats.values();
    // The i64 range is [-2^63, 2^63); 2^63 itself is an f64, so compare exclusively.
    let in_range = |q: f64| (-TWO_POW_63..TWO_POW_63).contains(&q);
    let (bins, mut valid) = integers_of(values, |x| {
        let q = round_half_away(x / width);
        in_range(q).then_some(q as i64)
    });
    if let Some(nulls) = floats.nulls() {
        valid = &valid & nulls.inner();
    }
    let nulls = (valid.len() - valid.count_set_bits()) as u64;
    let bins = Int64Array::new(bins.into(), (nulls > 0).then(|| NullBuffer::new(valid)));
    Ok((bins, nulls))
}

/// Adds the `{col}_bin` columns of `specs` to a batch.
pub fn bin_batch(
    batch: &RecordBatch,
    specs: &[BinSpec],
) -> Result<(RecordBatch, Vec<u64>), BinError> {
    let mut columns = Vec::with_capacity(specs.len());
    let mut nulls = Vec::with_capacity(specs.len());
    for spec in specs {
        let values = batch
            .column_by_name(&spec.column)
            .ok_or_else(|| BinError::MissingColumn {
                column: spec.column.clone(),
            })?;
        let (bins, null_count) = bin_values(values.as_ref(), spec.width)?;
        columns.push((spec.output(), Arc::new(bins) as ArrayRef));
        nulls.push(null_count);
    }
    Ok((with_columns(batch, columns), nulls))
}

/// The `bin` operator.
pub trait Bin<'scope> {
    /// Adds a `{col}_bin` column per spec to every batch.
    fn bin(self, specs: Vec<BinSpec>, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch>;
}

impl<'scope> Bin<'scope> for Stream<'scope, Time, Batch> {
    fn bin(self, specs: Vec<BinSpec>, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch> {
        let counter_names: Vec<String> = specs
            .iter()
            .map(|s| format!("bin.null.{}", s.column))
            .collect();
        map_batches(
            self,
            "Bin",
            diagnostics,
            move |date_key, batch, diagnostics| {
                // `map_batches` takes the error's text for the date's report.
                let (out, nulls) = bin_batch(&batch, &specs)?;
                diagnostics.add_all(
                    date_key,
                    counter_names.iter().map(String::as_str).zip(nulls),
                );
                Ok::<_, BinError>(out)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array};
    use proptest::prelude::*;

    /// The oracle, straight from SEMANTICS.md.
    fn oracle(x: Option<f64>, width: f64) -> Option<i64> {
        let x = x?;
        if !x.is_finite() {
            return None;
        }
        // Round half away from zero, written out: the integer part plus one when the
        // fractional part is at least a half.
        let q = x / width;
        let (whole, fraction) = (q.trunc(), q.fract().abs());
        let r = if fraction >= 0.5 {
            whole + q.signum()
        } else {
            whole
        };
        (r.is_finite() && r.abs() < 9.2e18).then_some(r as i64)
    }

    #[test]
    fn halves_round_away_from_zero() {
        let x = Float64Array::from(vec![0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999999999999994]);
        let (bins, nulls) = bin_values(&x, 1.0).unwrap();
        assert_eq!(bins.values().to_vec(), vec![1, 2, 3, -1, -2, -3, 0]);
        assert_eq!(nulls, 0);
    }

    #[test]
    fn integer_input_and_overflow() {
        let (bins, _) = bin_values(&Int32Array::from(vec![7, -7]), 2.0).unwrap();
        assert_eq!(bins.values().to_vec(), vec![4, -4]);
        let (bins, nulls) =
            bin_values(&Float64Array::from(vec![1e300, f64::INFINITY]), 1e-4).unwrap();
        assert_eq!(nulls, 2);
        assert!(bins.is_null(0) && bins.is_null(1));
    }

    proptest! {
        #[test]
        fn matches_oracle(values in prop::collection::vec(prop::option::weighted(0.9, -1e-2f64..1e-2), 0..300), width in prop::sample::select(vec![1e-4, 5e-4, 1e-3, 0.25])) {
            let array = Float64Array::from(values.clone());
            let (bins, nulls) = bin_values(&array, width).unwrap();
            let expected: Vec<Option<i64>> = values.iter().map(|v| oracle(*v, width)).collect();
            let actual: Vec<Option<i64>> = bins.iter().collect();
            prop_assert_eq!(&actual, &expected);
            prop_assert_eq!(nulls as usize, expected.iter().filter(|v| v.is_none()).count());
        }
    }

    proptest::proptest! {
        #[test]
        fn round_half_away_is_f64_round(bits in proptest::num::u64::ANY, small in -1e6f64..1e6) {
            let halves = (small * 2.0).trunc() / 2.0;
            for x in [f64::from_bits(bits), small, halves] {
                proptest::prop_assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "{}", x);
            }
        }
    }

    #[test]
    fn a_column_that_is_not_numeric_is_the_configurations_fault() {
        let dates = arrow::array::Date32Array::from(vec![1]);
        let error = bin_values(&dates, 1.0).unwrap_err();
        assert_eq!(error.fault(), crate::Fault::Config);
        assert_eq!(
            error.to_string(),
            "cannot bin a column of type Date32: Cast error: Casting from Date32 to Float64 \
             not supported"
        );
    }

    #[test]
    fn round_half_away_edges() {
        let big = (1u64 << 52) as f64;
        for x in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            0.49999999999999994,
            -0.49999999999999994,
            1.5,
            -2.5,
            big - 0.5,
            -(big - 0.5),
            big - 1.5,
            big,
            big + 1.0,
            2.0 * big,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "{x}");
        }
        assert!(round_half_away(f64::NAN).is_nan());
    }
}
