//! Schemas across dates: the schema a run binds to ([`widest_schema`]), and whether
//! another date's file can be read with the bound pipeline
//! ([`BoundPipeline::check_schema`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::suggest::column_hint;

use super::BoundPipeline;

/// A date's file whose schema the bound pipeline cannot read (the data's fault: the
/// files of a run differ). The message names the column and says what to do.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A column the pipeline reads is not in the file.
    #[error("column '{column}' is missing, though the first date has it; {hint}")]
    Missing {
        /// The column.
        column: String,
        /// A close name and the columns the file has.
        hint: String,
    },
    /// A column has a type that cannot be converted to the run's without a cast.
    #[error(
        "column '{column}' has type {found} here but {expected} on the first date; make the type consistent across dates{}",
        if found.is_numeric() && expected.is_numeric() {
            format!(", or cast the column with [[cast]] column = \"{column}\"")
        } else {
            String::new()
        }
    )]
    Type {
        /// The column.
        column: String,
        /// Its type in this file.
        found: DataType,
        /// Its type in the run.
        expected: DataType,
    },
}

impl BoundPipeline {
    /// Checks that another date's file schema is compatible with the bound one: every
    /// column read exists, with a type of the same kind, an integer type where the bound
    /// type is a float, or Arrow's Null type (a column without values); the `derive`
    /// stage converts it to the bound type without changing a value. The error names the
    /// column and both types, or suggests a column and lists those available.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), SchemaError> {
        self.check_columns(schema, &self.read)
    }

    /// `batch` (the columns of [`BoundPipeline::price_read`] and `row_id`) with every
    /// other column the pipeline reads as nulls of the run's type, in the order of
    /// [`BoundPipeline::read`]: a date read for its prices alone.
    pub fn with_nulls(&self, batch: &RecordBatch) -> RecordBatch {
        let n = batch.num_rows();
        let schema = batch.schema();
        let mut fields = Vec::with_capacity(self.read.len() + 1);
        let mut columns = Vec::with_capacity(self.read.len() + 1);
        for name in self.read.iter().map(String::as_str).chain([ROW_ID]) {
            let (field, column) = match schema.index_of(name) {
                Ok(i) => (schema.field(i).clone(), batch.column(i).clone()),
                Err(_) => {
                    let data_type = (self.input_schema.field_with_name(name))
                        .map_or(DataType::Null, |f| f.data_type().clone());
                    let field = Field::new(name, data_type.clone(), true);
                    (field, arrow::array::new_null_array(&data_type, n))
                }
            };
            fields.push(field);
            columns.push(column);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .expect("columns of the batch's length")
    }

    /// [`BoundPipeline::check_schema`] for `columns` (some of those read) alone: a date
    /// read for its prices only needs [`BoundPipeline::price_read`].
    pub fn check_columns(&self, schema: &Schema, columns: &[String]) -> Result<(), SchemaError> {
        for column in columns {
            let expected = self
                .input_schema
                .field_with_name(column)
                .expect("bound columns exist")
                .data_type();
            let Ok(field) = schema.field_with_name(column) else {
                let hint = column_hint(column, schema.fields().iter().map(|f| f.name().as_str()));
                return Err(SchemaError::Missing {
                    column: column.clone(),
                    hint,
                });
            };
            let kind = |t: &DataType| {
                if self.pipeline.casts.iter().any(|c| c.column == *column) && t.is_numeric() {
                    "number"
                } else if t.is_integer() {
                    "integer"
                } else if t.is_floating() {
                    "float"
                } else if matches!(
                    t,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Dictionary(_, _)
                ) {
                    "string"
                } else {
                    "other"
                }
            };
            // A column of the Null type has no values: nulls of any type. Integers widen
            // to floats (the `derive` stage checks that each value is held exactly).
            let compatible = field.data_type() == expected
                || field.data_type() == &DataType::Null
                || kind(field.data_type()) == kind(expected)
                || (field.data_type().is_integer() && expected.is_floating());
            if !compatible {
                return Err(SchemaError::Type {
                    column: column.clone(),
                    found: field.data_type().clone(),
                    expected: expected.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The schema a run over several dates binds to: the columns of `first`, in its order,
/// each with the narrowest type that holds its type in `first` and in every one of
/// `others` (see [`widen`]); a column whose types have no common type keeps `first`'s,
/// and the dates that differ fail with [`BoundPipeline::check_schema`]'s message.
///
/// ```
/// use arrow::datatypes::{DataType, Field, Schema};
/// use vizflow::config::widest_schema;
///
/// let schema = |qty| Schema::new(vec![Field::new("qty", qty, true)]);
/// let widest = widest_schema(&schema(DataType::Int32), &[schema(DataType::Int64)]);
/// assert_eq!(widest.field(0).data_type(), &DataType::Int64);
/// ```
pub fn widest_schema(first: &Schema, others: &[Schema]) -> Schema {
    let fields: Vec<Field> = first
        .fields()
        .iter()
        .map(|field| {
            let data_type = others
                .iter()
                .filter_map(|schema| schema.field_with_name(field.name()).ok())
                .try_fold(field.data_type().clone(), |widest, other| {
                    widen(&widest, other.data_type())
                });
            let data_type = data_type.unwrap_or_else(|| field.data_type().clone());
            field.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    Schema::new_with_metadata(fields, first.metadata().clone())
}

/// The narrowest type that holds every value of both `a` and `b`, if they have one:
/// the wider of two integer or two float types (a signed integer wide enough for an
/// unsigned one, at most Int64), Float64 for an integer and a float, Utf8 (LargeUtf8
/// when either is) for two kinds of strings (a dictionary of strings included), and the
/// other type beside Arrow's Null type. Float64 cannot hold an integer beyond 2^53 and
/// Int64 no UInt64 beyond 2^63 - 1: such a value fails its date, naming it.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    fn string_kind(t: &DataType) -> bool {
        match t {
            Utf8 | LargeUtf8 | Utf8View => true,
            Dictionary(_, values) => string_kind(values),
            _ => false,
        }
    }
    // (bits, signed) of an integer type.
    fn integer(t: &DataType) -> (u32, bool) {
        match t {
            Int8 => (8, true),
            Int16 => (16, true),
            Int32 => (32, true),
            UInt8 => (8, false),
            UInt16 => (16, false),
            UInt32 => (32, false),
            UInt64 => (64, false),
            _ => (64, true),
        }
    }
    Some(match (a, b) {
        _ if a == b => a.clone(),
        (Null, other) | (other, Null) => other.clone(),
        _ if a.is_integer() && b.is_integer() => {
            let ((a_bits, a_signed), (b_bits, b_signed)) = (integer(a), integer(b));
            let bits = match (a_signed, b_signed) {
                (true, true) | (false, false) => a_bits.max(b_bits),
                // A signed type wider than the unsigned one.
                (true, false) => a_bits.max(2 * b_bits).min(64),
                (false, true) => b_bits.max(2 * a_bits).min(64),
            };
            match (a_signed || b_signed, bits) {
                (true, 8) => Int8,
                (true, 16) => Int16,
                (true, 32) => Int32,
                (true, _) => Int64,
                (false, 8) => UInt8,
                (false, 16) => UInt16,
                (false, 32) => UInt32,
                (false, _) => UInt64,
            }
        }
        _ if a.is_floating() && b.is_floating() => match (a, b) {
            (Float64, _) | (_, Float64) => Float64,
            _ => Float32,
        },
        _ if (a.is_integer() || a.is_floating()) && (b.is_integer() || b.is_floating()) => Float64,
        _ if string_kind(a) && string_kind(b) => match (a, b) {
            (LargeUtf8, _) | (_, LargeUtf8) => LargeUtf8,
            _ => Utf8,
        },
        _ => return None,
    })
}
