//! Arrow across the boundary, through the Arrow C data and stream interfaces: no
//! column buffer is copied either way, except where a type must change (Polars'
//! string views become plain strings, which the engine's kernels read).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow_pyarrow::{PyArrowType, Table};
use pyo3::prelude::*;
use vizflow_operators::columns::ROW_ID;

use crate::errors;

/// `batches` as a `pyarrow.Table` (each column's buffers shared, not copied).
pub fn table(py: Python<'_>, schema: SchemaRef, batches: Vec<RecordBatch>) -> PyResult<Py<PyAny>> {
    let table = Table::try_new(batches, schema).map_err(errors::arrow)?;
    Ok(PyArrowType(table).into_pyobject(py)?.unbind())
}

/// The batches of anything that exports an Arrow stream (`__arrow_c_stream__`: a
/// Polars frame, a pyarrow table or batch reader), with their types normalised.
pub fn batches(object: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    let PyArrowType(table): PyArrowType<Table> = object.extract().map_err(|e| {
        errors::DataError::new_err(format!(
            "expected a Polars DataFrame, a pyarrow Table or anything with \
             __arrow_c_stream__; got {}: {e}",
            type_name(object)
        ))
    })?;
    let (batches, schema) = table.into_inner();
    let normal = Arc::new(normal_schema(&schema));
    let batches = batches
        .iter()
        .map(|b| normalise(b, &normal))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((normal, batches))
}

/// The Python type's name of `object`, for messages.
pub fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".to_owned())
}

/// The type the engine reads for `data_type`: string and binary views (Polars' own
/// string type) and large strings as plain ones, dictionaries of them likewise.
pub fn normal_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, values) if normal_type(values) != **values => normal_type(values),
        other => other.clone(),
    }
}

/// `schema` with each field of its [`normal_type`] (metadata dropped).
pub fn normal_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = (schema.fields().iter())
        .map(|f| Field::new(f.name(), normal_type(f.data_type()), f.is_nullable()))
        .collect();
    Schema::new(fields)
}

/// `batch` with its columns cast to `schema`'s types (a column already of its type is
/// shared as is).
pub fn normalise(batch: &RecordBatch, schema: &SchemaRef) -> PyResult<RecordBatch> {
    let columns = (batch.columns().iter().zip(schema.fields()))
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type()).map_err(errors::arrow)
            }
        })
        .collect::<PyResult<Vec<ArrayRef>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(errors::arrow)
}

/// Checks a `row_id` column: an integer type, no nulls, no negative value (a row's
/// position in its date's file).
pub fn check_row_id(batch: &RecordBatch) -> PyResult<()> {
    let Some(ids) = batch.column_by_name(ROW_ID) else {
        return Ok(());
    };
    let bad = |what: String| {
        errors::DataError::new_err(format!(
            "the row_id column {what}; it holds each row's position in its date's file \
             (an integer from 0)"
        ))
    };
    if !ids.data_type().is_integer() {
        return Err(bad(format!("is {}", ids.data_type())));
    }
    if ids.null_count() > 0 {
        return Err(bad("has nulls".to_owned()));
    }
    if ids.data_type().is_signed_integer() {
        let as_i64 = arrow::compute::cast(ids, &DataType::Int64).map_err(errors::arrow)?;
        if let Some(least) = arrow::compute::min(as_i64.as_primitive::<Int64Type>())
            && least < 0
        {
            return Err(bad(format!("has the negative value {least}")));
        }
    }
    Ok(())
}

/// The address of the values of column `column` of the first batch, as the engine
/// reads a frame (through [`batches`]): the zero-copy test compares it with the
/// address Polars holds.
#[pyfunction]
pub fn buffer_address(object: &Bound<'_, PyAny>, column: &str) -> PyResult<usize> {
    let (_, batches) = batches(object)?;
    let batch = (batches.first()).ok_or_else(|| errors::DataError::new_err("no batch"))?;
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| errors::DataError::new_err(format!("no column '{column}'")))?;
    Ok(values_address(array.as_ref()))
}

/// The address of a primitive array's first value.
fn values_address(array: &dyn Array) -> usize {
    let data = array.to_data();
    let width = array.data_type().primitive_width().unwrap_or(0);
    (data.buffers().first()).map_or(0, |b| b.as_ptr() as usize + data.offset() * width)
}

/// A column made in Rust, handed out as results are ([`table`]), with the address of
/// its values: the zero-copy test checks that the frame the API makes of it holds
/// them there.
#[pyfunction]
pub fn exported_probe(py: Python<'_>) -> PyResult<(Py<PyAny>, usize)> {
    let values: ArrayRef = Arc::new(arrow::array::Float64Array::from_iter_values(
        (0..1000).map(f64::from),
    ));
    let address = values_address(values.as_ref());
    let batch = RecordBatch::try_from_iter([("x", values)]).map_err(errors::arrow)?;
    Ok((table(py, batch.schema(), vec![batch])?, address))
}
