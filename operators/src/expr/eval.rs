//! Evaluation helpers: values with their kind (`Value`, `Kind`), `CASE`, casts, variadic folds and float canonicalisation.

use super::*;

/// `CASE`: the last branch is the `ELSE` value; earlier branches take precedence.
pub(super) fn case(
    conditions: Vec<Value>,
    mut results: Vec<Value>,
    rows: usize,
) -> Result<Value, Failure> {
    let scalar = conditions.iter().chain(&results).all(|value| value.scalar);
    let rows = if scalar { 1 } else { rows };
    let mut chosen = results.pop().expect("CASE always has an ELSE value");
    for (condition, result) in conditions.iter().zip(results).rev() {
        let array = zip(condition.expand(rows)?.as_boolean(), &result, &chosen)?;
        chosen = Value { array, scalar };
    }
    Ok(chosen)
}

pub(super) fn cast_all(values: Vec<Value>, kind: Kind) -> Result<Vec<Value>, ArrowError> {
    values.into_iter().map(|value| value.cast(kind)).collect()
}

/// `least`, `greatest` and `coalesce` over arguments of `kind`: fold left, taking the next
/// argument where it wins.
pub(super) fn fold_variadic(
    function: Function,
    args: Vec<Value>,
    kind: Kind,
    rows: usize,
) -> Result<Value, ArrowError> {
    let scalar = args.iter().all(|arg| arg.scalar);
    let rows = if scalar { 1 } else { rows };
    let mut args = args.into_iter().map(|arg| match function {
        Function::Coalesce => Ok(arg),
        _ => arg.comparable(kind),
    });
    let first = args
        .next()
        .expect("variadic functions have at least one argument")?;
    let array = first.expand(rows)?;
    let mut result = Value { array, scalar };
    for next in args {
        let next = next?;
        let missing = is_null(&result.array)?;
        // Where `next` is null the comparison is null, which `zip` reads as false.
        let take_next = match function {
            Function::Coalesce => missing,
            Function::Least => or_kleene(&missing, &cmp::lt(&next, &result)?)?,
            _ => or_kleene(&missing, &cmp::gt(&next, &result)?)?,
        };
        let array = zip(&take_next, &next, &result)?;
        result = Value { array, scalar };
    }
    Ok(result)
}

/// `abs` of an integer; `abs(i64::MIN)` is an overflow error.
pub(super) fn checked_abs(x: i64) -> Result<i64, ArrowError> {
    x.checked_abs()
        .ok_or_else(|| ArrowError::ArithmeticOverflow(format!("Overflow happened on: abs({x})")))
}

/// A float as comparisons see it (PostgreSQL's order): every NaN is the one positive NaN, which
/// sorts above every number, and `-0.0` is `0.0`.
pub(super) fn canonical_float(x: f64) -> f64 {
    if x.is_nan() { f64::NAN } else { x + 0.0 }
}

pub(super) fn float_unary(value: Value, op: impl Fn(f64) -> f64) -> Value {
    let array = value
        .array
        .as_primitive::<Float64Type>()
        .unary::<_, Float64Type>(op);
    Value {
        array: Arc::new(array),
        ..value
    }
}

/// An evaluation failure; kernel errors get the expression text once, at the top.
#[derive(Debug)]
pub(super) enum Failure {
    Expr(ExprError),
    Arrow(ArrowError),
}

impl From<ExprError> for Failure {
    fn from(error: ExprError) -> Self {
        Failure::Expr(error)
    }
}

impl From<ArrowError> for Failure {
    fn from(error: ArrowError) -> Self {
        Failure::Arrow(error)
    }
}

/// The type families operators work on; each has one canonical Arrow type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

pub(super) const NUMERIC: &[Kind] = &[Kind::Int, Kind::Float];
pub(super) const BOOLEAN: &[Kind] = &[Kind::Bool];
pub(super) const ANY: &[Kind] = &[Kind::Int, Kind::Float, Kind::Bool, Kind::Str];

impl Kind {
    pub(super) fn of(data_type: &DataType) -> Option<Kind> {
        match data_type {
            DataType::Null => Some(Kind::Null),
            DataType::Boolean => Some(Kind::Bool),
            t if t.is_integer() => Some(Kind::Int),
            t if t.is_floating() => Some(Kind::Float),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Str),
            DataType::Dictionary(_, values) => Kind::of(values),
            _ => None,
        }
    }

    pub(super) fn data_type(self) -> DataType {
        match self {
            Kind::Null => DataType::Null,
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Str => DataType::Utf8,
        }
    }

    pub(super) fn unify(self, other: Kind) -> Option<Kind> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Kind::Null, kind) | (kind, Kind::Null) => Some(kind),
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Some(Kind::Float),
            _ => None,
        }
    }
}

/// An intermediate result: a column of the batch's length, or one value standing for every
/// row (literals and operations on literals only), so `x * 2` never builds a column of 2s.
#[derive(Clone, Debug)]
pub(super) struct Value {
    pub(super) array: ArrayRef,
    pub(super) scalar: bool,
}

impl Datum for Value {
    fn get(&self) -> (&dyn Array, bool) {
        (self.array.as_ref(), self.scalar)
    }
}

impl Value {
    pub(super) fn column(array: ArrayRef) -> Value {
        Value {
            array,
            scalar: false,
        }
    }

    pub(super) fn scalar(array: ArrayRef) -> Value {
        Value {
            array,
            scalar: true,
        }
    }

    pub(super) fn data_type(&self) -> &DataType {
        self.array.data_type()
    }

    pub(super) fn map(
        self,
        op: impl FnOnce(&dyn Array) -> Result<ArrayRef, ArrowError>,
    ) -> Result<Value, ArrowError> {
        let array = op(self.array.as_ref())?;
        Ok(Value { array, ..self })
    }

    /// Casts to the canonical type of `kind`; a failure is an error (`UInt64` too big for
    /// `Int64`), never a silent null.
    pub(super) fn cast(self, kind: Kind) -> Result<Value, ArrowError> {
        let to = kind.data_type();
        if self.data_type() == &to {
            return Ok(self);
        }
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        self.map(|array| cast_with_options(array, &to, &options))
    }

    /// Like [`Value::cast`], but keeps dictionaries the comparison kernels read directly, and
    /// makes floats compare as in PostgreSQL: one NaN, above every number, and `-0.0 = 0.0`.
    pub(super) fn comparable(self, kind: Kind) -> Result<Value, ArrowError> {
        match (kind, self.data_type()) {
            (Kind::Float, _) => {
                let value = self.cast(kind)?;
                Ok(float_unary(value, canonical_float))
            }
            (_, DataType::Dictionary(_, values)) if **values == kind.data_type() => Ok(self),
            _ => self.cast(kind),
        }
    }

    /// Nulls out zero divisors, so `/` and `%` give null rather than an error or infinity.
    pub(super) fn null_if_zero(self) -> Result<Value, ArrowError> {
        self.map(|array| {
            let zero = match array.data_type() {
                DataType::Int64 => {
                    BooleanArray::from_unary(array.as_primitive::<Int64Type>(), |x| x == 0)
                }
                _ => BooleanArray::from_unary(array.as_primitive::<Float64Type>(), |x| x == 0.0),
            };
            nullif(array, &zero)
        })
    }

    /// The value as an array of `rows` rows, repeating a scalar.
    pub(super) fn expand(&self, rows: usize) -> Result<ArrayRef, ArrowError> {
        if self.scalar && rows != 1 {
            take(self.array.as_ref(), &UInt32Array::from_value(0, rows), None)
        } else {
            Ok(self.array.clone())
        }
    }
}
