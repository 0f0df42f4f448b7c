//! [`Scalar`], one value of the row-by-row evaluator of
//! [`Expr::recurrence`](super::Expr::recurrence), and its operations: arithmetic,
//! comparisons, functions and casts as arrow's kernels do them on arrays, one value at a
//! time.

use std::cmp::Ordering;

use arrow::compute::{cast_num_to_bool, num_cast};
use arrow::datatypes::{ArrowNativeTypeOp, DataType};
use arrow::error::ArrowError;

use super::{BinaryOp, Function, Kind, canonical_float, checked_abs};

/// One value of the row-by-row evaluator: the running variable given to
/// [`PreparedRecurrence::step`](super::PreparedRecurrence::step), and what it returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// SQL's null.
    Null,
    /// An `Int64` value.
    Int(i64),
    /// A `Float64` value. `==` is IEEE 754's, so `Float(NAN) != Float(NAN)`.
    Float(f64),
    /// A `Boolean` value.
    Bool(bool),
}

impl Scalar {
    pub(super) fn is_null(self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// Whether the value can stand for a variable of `kind`.
    pub(super) fn fits(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Scalar::Null, _)
                | (Scalar::Int(_), Kind::Int)
                | (Scalar::Float(_), Kind::Float)
                | (Scalar::Bool(_), Kind::Bool)
        )
    }
}

/// An operand of a kind its operation never gets: compiling gives every operand the kind its
/// operation works on.
#[cold]
fn mistyped(operation: &str, operands: &[Scalar]) -> ! {
    unreachable!("{operation} got {operands:?}, which compiling rules out")
}

pub(super) fn negate(value: Scalar) -> Result<Scalar, ArrowError> {
    Ok(match value {
        Scalar::Null => Scalar::Null,
        Scalar::Int(x) => Scalar::Int(x.neg_checked()?),
        Scalar::Float(x) => Scalar::Float(-x),
        Scalar::Bool(_) => mistyped("-", &[value]),
    })
}

/// Arithmetic as arrow's kernels do it once the evaluator has nulled out zero divisors.
pub(super) fn binary(op: BinaryOp, left: Scalar, right: Scalar) -> Result<Scalar, ArrowError> {
    use BinaryOp::*;
    use Scalar::{Bool, Float, Int, Null};
    let ordered = |wanted: fn(Ordering) -> bool| match order(left, right) {
        Some(ordering) => Bool(wanted(ordering)),
        None => Null,
    };
    Ok(match op {
        And => match (left, right) {
            (Bool(false), _) | (_, Bool(false)) => Bool(false),
            (Bool(true), Bool(true)) => Bool(true),
            _ => Null,
        },
        Or => match (left, right) {
            (Bool(true), _) | (_, Bool(true)) => Bool(true),
            (Bool(false), Bool(false)) => Bool(false),
            _ => Null,
        },
        Eq => ordered(Ordering::is_eq),
        NotEq => ordered(Ordering::is_ne),
        Lt => ordered(Ordering::is_lt),
        LtEq => ordered(Ordering::is_le),
        Gt => ordered(Ordering::is_gt),
        GtEq => ordered(Ordering::is_ge),
        Add | Sub | Mul | Div | Rem => match (left, right) {
            (Null, _) | (_, Null) => Null,
            (Int(_), Int(0)) if op == Rem => Null,
            (Float(_), Float(divisor)) if matches!(op, Div | Rem) && divisor == 0.0 => Null,
            (Int(a), Int(b)) => Int(match op {
                Add => a.add_checked(b)?,
                Sub => a.sub_checked(b)?,
                Mul => a.mul_checked(b)?,
                // Wrapping, as arrow's `rem`: `i64::MIN % -1` is 0.
                Rem => a.mod_wrapping(b),
                _ => mistyped(op.symbol(), &[left, right]),
            }),
            (Float(a), Float(b)) => Float(match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => a / b,
                _ => a % b,
            }),
            _ => mistyped(op.symbol(), &[left, right]),
        },
    })
}

/// How comparisons, `least` and `greatest` order two values; `None` if either is null.
fn order(left: Scalar, right: Scalar) -> Option<Ordering> {
    match (left, right) {
        (Scalar::Null, _) | (_, Scalar::Null) => None,
        (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(&b)),
        (Scalar::Float(a), Scalar::Float(b)) => {
            Some(canonical_float(a).total_cmp(&canonical_float(b)))
        }
        (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(&b)),
        _ => mistyped("a comparison", &[left, right]),
    }
}

pub(super) fn unary(function: Function, value: Scalar) -> Result<Scalar, ArrowError> {
    use Function::*;
    Ok(match (function, value) {
        (_, Scalar::Null) => Scalar::Null,
        (Abs, Scalar::Int(x)) => Scalar::Int(checked_abs(x)?),
        (Floor | Ceil | Round, Scalar::Int(x)) => Scalar::Int(x),
        (Abs, Scalar::Float(x)) => Scalar::Float(x.abs()),
        (Floor, Scalar::Float(x)) => Scalar::Float(x.floor()),
        (Ceil, Scalar::Float(x)) => Scalar::Float(x.ceil()),
        (Round, Scalar::Float(x)) => Scalar::Float(x.round()),
        (Sqrt, Scalar::Float(x)) => Scalar::Float(x.sqrt()),
        (Ln, Scalar::Float(x)) => Scalar::Float(x.ln()),
        (Log10, Scalar::Float(x)) => Scalar::Float(x.log10()),
        (Exp, Scalar::Float(x)) => Scalar::Float(x.exp()),
        _ => mistyped(function.name(), &[value]),
    })
}

/// One step of the evaluator's left fold for `least`, `greatest` and `coalesce`: the next
/// argument replaces the result so far where that is null or the next one wins. `least` and
/// `greatest` give floats as comparisons see them (`-0.0` as `0.0`, one NaN).
pub(super) fn variadic(function: Function, result: Scalar, next: Scalar) -> Scalar {
    let next = match (function, next) {
        (Function::Least | Function::Greatest, Scalar::Float(x)) => {
            Scalar::Float(canonical_float(x))
        }
        _ => next,
    };
    let wins = match function {
        Function::Least => order(next, result) == Some(Ordering::Less),
        Function::Greatest => order(next, result) == Some(Ordering::Greater),
        _ => false,
    };
    if result.is_null() || wins {
        next
    } else {
        result
    }
}

/// `CAST` as arrow's `cast` does it between Int64, Float64 and Boolean: floats are truncated
/// toward zero and out of range (or NaN) for Int64 they fail, or give null for `TRY_CAST`;
/// numbers are true when not zero; `true` is 1.
pub(super) fn cast(value: Scalar, to: Kind, strict: bool) -> Result<Scalar, ArrowError> {
    use Scalar::{Bool, Float, Int, Null};
    Ok(match (value, to) {
        (Null, _) => Null,
        (Int(_), Kind::Int) | (Float(_), Kind::Float) | (Bool(_), Kind::Bool) => value,
        (Int(x), Kind::Float) => Float(x as f64),
        (Int(x), Kind::Bool) => Bool(cast_num_to_bool(x)),
        (Float(x), Kind::Int) => match num_cast::<f64, i64>(x) {
            Some(x) => Int(x),
            None if strict => {
                return Err(ArrowError::CastError(format!(
                    "Can't cast value {x:?} to type {}",
                    DataType::Int64
                )));
            }
            None => Null,
        },
        (Float(x), Kind::Bool) => Bool(cast_num_to_bool(x)),
        (Bool(x), Kind::Int) => Int(i64::from(x)),
        (Bool(x), Kind::Float) => Float(f64::from(x)),
        _ => mistyped("CAST", &[value]),
    })
}
