//! The row codec of [`TagRule`](super::TagRule)s: the input columns read as typed
//! values a row at a time ([`InputValue`], [`InputRow`]), and the typed output values
//! appended to Arrow builders ([`OutputValue`], [`OutputRow`]). No value is boxed.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, StringArray, UInt64Builder,
};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Float64Type, Int64Type};

/// The types a [`TagRule`](super::TagRule) reads its input columns as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputType {
    /// `f64`: any numeric column.
    Float,
    /// `i64`: any integer column.
    Int,
    /// `&str`: any string column (plain, large, view or dictionary).
    Str,
    /// `bool`: a boolean column.
    Bool,
}

impl InputType {
    fn data_type(self) -> DataType {
        match self {
            InputType::Float => DataType::Float64,
            InputType::Int => DataType::Int64,
            InputType::Str => DataType::Utf8,
            InputType::Bool => DataType::Boolean,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            InputType::Float => "f64 (any numeric column)",
            InputType::Int => "i64 (any integer column)",
            InputType::Str => "&str (any string column)",
            InputType::Bool => "bool (a boolean column)",
        }
    }

    /// `Some(())` when a column of type `actual` can be read as this type.
    pub(super) fn cast_from(self, actual: &DataType) -> Option<()> {
        let ok = match self {
            InputType::Float => actual.is_numeric(),
            InputType::Int => actual.is_integer(),
            InputType::Str => {
                matches!(
                    actual,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) || matches!(actual, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
            }
            InputType::Bool => actual == &DataType::Boolean,
        };
        ok.then_some(())
    }

    pub(super) fn cast(self, column: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(column, &self.data_type(), &options)
    }
}

/// A typed input column, ready to read row by row.
#[derive(Debug)]
pub enum Reader<'a> {
    /// A Float64 column.
    Float(&'a Float64Array),
    /// An Int64 column.
    Int(&'a Int64Array),
    /// A Utf8 column.
    Str(&'a StringArray),
    /// A Boolean column.
    Bool(&'a BooleanArray),
}

impl<'a> Reader<'a> {
    fn new(column: &'a ArrayRef) -> Self {
        match column.data_type() {
            DataType::Float64 => Reader::Float(column.as_primitive::<Float64Type>()),
            DataType::Int64 => Reader::Int(column.as_primitive::<Int64Type>()),
            DataType::Utf8 => Reader::Str(column.as_string::<i32>()),
            _ => Reader::Bool(column.as_boolean()),
        }
    }
}

/// A value a [`TagRule`](super::TagRule) reads from one input column.
pub trait InputValue<'a>: Sized {
    /// The column type it reads.
    const TYPE: InputType;
    /// The value at `row`.
    fn read(reader: &Reader<'a>, row: usize) -> Self;
}

macro_rules! input_value {
    ($variant:ident, $t:ty, $read:expr, $default:expr) => {
        impl<'a> InputValue<'a> for Option<$t> {
            const TYPE: InputType = InputType::$variant;
            #[inline]
            fn read(reader: &Reader<'a>, row: usize) -> Self {
                match reader {
                    Reader::$variant(array) => array.is_valid(row).then(|| $read(*array, row)),
                    _ => unreachable!("columns are cast to the input type"),
                }
            }
        }
        impl<'a> InputValue<'a> for $t {
            const TYPE: InputType = InputType::$variant;
            #[inline]
            fn read(reader: &Reader<'a>, row: usize) -> Self {
                <Option<$t> as InputValue<'a>>::read(reader, row).unwrap_or($default)
            }
        }
    };
}

input_value!(Float, f64, |a: &Float64Array, i| a.value(i), 0.0);
input_value!(Int, i64, |a: &Int64Array, i| a.value(i), 0);
input_value!(Str, &'a str, |a: &'a StringArray, i| a.value(i), "");
input_value!(Bool, bool, |a: &BooleanArray, i| a.value(i), false);

/// The input values of one row: one [`InputValue`] or a tuple of them.
pub trait InputRow<'a>: Sized {
    /// Each value's column type.
    fn types() -> Vec<InputType>;
    /// Typed readers over the (already cast) input columns.
    fn readers(columns: &'a [ArrayRef]) -> Vec<Reader<'a>> {
        columns.iter().map(Reader::new).collect()
    }
    /// The values at `row`.
    fn read(readers: &[Reader<'a>], row: usize) -> Self;
}

impl<'a, T: InputValue<'a>> InputRow<'a> for T {
    fn types() -> Vec<InputType> {
        vec![T::TYPE]
    }
    #[inline]
    fn read(readers: &[Reader<'a>], row: usize) -> Self {
        T::read(&readers[0], row)
    }
}

macro_rules! input_tuple {
    ($($t:ident $i:tt),+) => {
        impl<'a, $($t: InputValue<'a>),+> InputRow<'a> for ($($t,)+) {
            fn types() -> Vec<InputType> {
                vec![$($t::TYPE),+]
            }
            #[inline]
            fn read(readers: &[Reader<'a>], row: usize) -> Self {
                ($($t::read(&readers[$i], row),)+)
            }
        }
    };
}

input_tuple!(A 0);
input_tuple!(A 0, B 1);
input_tuple!(A 0, B 1, C 2);
input_tuple!(A 0, B 1, C 2, D 3);
input_tuple!(A 0, B 1, C 2, D 3, E 4);
input_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

/// A value a [`TagRule`](super::TagRule) writes to one output column.
pub trait OutputValue: Sized {
    /// The column's builder.
    type Builder;
    /// The column's type.
    fn data_type() -> DataType;
    /// A builder with room for `rows` values.
    fn builder(rows: usize) -> Self::Builder;
    /// Appends the value.
    fn append(self, builder: &mut Self::Builder);
    /// The finished column.
    fn finish(builder: Self::Builder) -> ArrayRef;
}

macro_rules! output_value {
    ($t:ty, $builder:ty, $data_type:expr) => {
        impl OutputValue for Option<$t> {
            type Builder = $builder;
            fn data_type() -> DataType {
                $data_type
            }
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            #[inline]
            fn append(self, builder: &mut Self::Builder) {
                builder.append_option(self);
            }
            fn finish(mut builder: Self::Builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
        impl OutputValue for $t {
            type Builder = $builder;
            fn data_type() -> DataType {
                $data_type
            }
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            #[inline]
            fn append(self, builder: &mut Self::Builder) {
                builder.append_value(self);
            }
            fn finish(mut builder: Self::Builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
    };
}

output_value!(f64, Float64Builder, DataType::Float64);
output_value!(i64, Int64Builder, DataType::Int64);
output_value!(u64, UInt64Builder, DataType::UInt64);
output_value!(bool, BooleanBuilder, DataType::Boolean);

/// The output values of one output row: one [`OutputValue`] or a tuple of them.
pub trait OutputRow: Sized {
    /// The columns' builders.
    type Builders;
    /// Each column's type.
    fn data_types() -> Vec<DataType>;
    /// Builders with room for `rows` rows.
    fn builders(rows: usize) -> Self::Builders;
    /// Appends one row.
    fn append(self, builders: &mut Self::Builders);
    /// The finished columns.
    fn finish(builders: Self::Builders) -> Vec<ArrayRef>;
}

impl<T: OutputValue> OutputRow for T {
    type Builders = T::Builder;
    fn data_types() -> Vec<DataType> {
        vec![T::data_type()]
    }
    fn builders(rows: usize) -> Self::Builders {
        T::builder(rows)
    }
    #[inline]
    fn append(self, builders: &mut Self::Builders) {
        OutputValue::append(self, builders)
    }
    fn finish(builders: Self::Builders) -> Vec<ArrayRef> {
        vec![T::finish(builders)]
    }
}

macro_rules! output_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t: OutputValue),+> OutputRow for ($($t,)+) {
            type Builders = ($($t::Builder,)+);
            fn data_types() -> Vec<DataType> {
                vec![$($t::data_type()),+]
            }
            fn builders(rows: usize) -> Self::Builders {
                ($($t::builder(rows),)+)
            }
            #[inline]
            fn append(self, builders: &mut Self::Builders) {
                $(self.$i.append(&mut builders.$i);)+
            }
            fn finish(builders: Self::Builders) -> Vec<ArrayRef> {
                vec![$($t::finish(builders.$i)),+]
            }
        }
    };
}

output_tuple!(A 0);
output_tuple!(A 0, B 1);
output_tuple!(A 0, B 1, C 2);
output_tuple!(A 0, B 1, C 2, D 3);
output_tuple!(A 0, B 1, C 2, D 3, E 4);
output_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
