//! Row-by-row evaluation of an expression over a running variable ([`Expr::recurrence`]), for
//! the `TagRunning` rule: a running value per symbol and date, e.g. a position,
//! `prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END`.
//!
//! Compiling splits the syntax tree in two. Every largest subtree that does not involve the
//! variable is *hoisted*: [`Recurrence::prepare`] evaluates it with the vectorised evaluator,
//! once per batch, and keeps its values as a plain slice (a literal-only subtree is evaluated
//! once and for all when compiling). What remains, the nodes on the paths from the root to the
//! variable, is a small program of [`Op`]s addressed by index, which
//! [`PreparedRecurrence::step`] interprets for one row without allocating.
//!
//! The interpreter mirrors the vectorised evaluator operation by operation, down to arrow's
//! kernels (checked integer arithmetic, `num_cast`, their error messages), so that a step gives
//! what [`Expr::evaluate`] gives on the batch with the variable added as a column; the tests in
//! `tests/recurrence.rs` check exactly that.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::error::ArrowError;

use super::scalar::{Scalar, binary, cast, negate, unary, variadic};
use super::{BinaryOp, Expr, ExprError, Failure, Function, Kind, Node, Value};

impl Expr {
    /// Compiles the expression for a scan in which `var` (e.g. `prev`) is a running value of
    /// type `var_type` (Int64, Float64 or Boolean) and every other name is a column of `schema`.
    ///
    /// [`Recurrence::prepare`] then evaluates the parts that do not involve `var` over a whole
    /// batch, and [`PreparedRecurrence::step`] the rest row by row, with the semantics of the
    /// module docs: a step gives what [`Expr::evaluate`] would give for that row with `var`
    /// added as a column.
    ///
    /// The result type depends on `var_type`: with an Int64 `prev`, `prev + 0.5` is Float64, so
    /// a caller looking for a stable type compiles again with Float64.
    ///
    /// # Errors
    ///
    /// Those of [`Expr::check`] (unknown columns, type errors), and
    /// [`ExprError::RecurrenceVariableType`] when `var_type` is none of the three,
    /// [`ExprError::RecurrenceVariableIsColumn`] when `schema` has a column named `var`,
    /// [`ExprError::RecurrenceResultType`] when the expression gives another type, and
    /// [`ExprError::RecurrenceString`] for a string value in a part that involves `var`
    /// (strings are fine elsewhere, e.g. `orderSide = 'B'`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch, StringArray};
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use vizflow_operators::expr::{Expr, Scalar};
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("orderSide", DataType::Utf8, true),
    ///     Field::new("qty", DataType::Int64, true),
    /// ]));
    /// let position =
    ///     Expr::parse("coalesce(prev, 0) + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END")
    ///         .unwrap()
    ///         .recurrence("prev", &DataType::Int64, &schema)
    ///         .unwrap();
    /// assert_eq!(position.data_type(), &DataType::Int64);
    /// assert_eq!(position.columns(), ["orderSide", "qty"]);
    ///
    /// let batch = RecordBatch::try_new(schema, vec![
    ///     Arc::new(StringArray::from(vec!["B", "S", "B"])),
    ///     Arc::new(Int64Array::from(vec![100, 30, 50])),
    /// ]).unwrap();
    /// let prepared = position.prepare(&batch).unwrap();
    /// let mut prev = Scalar::Null;
    /// let mut positions = Vec::new();
    /// for row in 0..batch.num_rows() {
    ///     prev = prepared.step(row, prev).unwrap();
    ///     positions.push(prev);
    /// }
    /// assert_eq!(positions, [Scalar::Int(100), Scalar::Int(70), Scalar::Int(120)]);
    /// ```
    pub fn recurrence(
        &self,
        var: &str,
        var_type: &DataType,
        schema: &Schema,
    ) -> Result<Recurrence, ExprError> {
        let Some(var_kind) = running_kind(var_type) else {
            return Err(ExprError::RecurrenceVariableType {
                text: self.text.clone(),
                var: var.to_string(),
                data_type: var_type.clone(),
            });
        };
        if schema.column_with_name(var).is_some() {
            return Err(ExprError::RecurrenceVariableIsColumn {
                text: self.text.clone(),
                var: var.to_string(),
            });
        }
        let mut fields = schema.fields().to_vec();
        fields.push(Arc::new(Field::new(var, var_type.clone(), true)));
        let typing = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
        let program = Program::compile(self, var, var_kind, typing)?;
        Ok(Recurrence {
            program: Arc::new(program),
        })
    }

    /// The user-facing error for an evaluation failure, as [`Expr::evaluate`] reports it.
    fn error(&self, failure: Failure) -> ExprError {
        match failure {
            Failure::Expr(error) => error,
            Failure::Arrow(source) => ExprError::Compute {
                text: self.text.clone(),
                source,
            },
        }
    }
}

/// The kind of a running value's type; only Int64, Float64 and Boolean qualify.
fn running_kind(data_type: &DataType) -> Option<Kind> {
    match data_type {
        DataType::Int64 => Some(Kind::Int),
        DataType::Float64 => Some(Kind::Float),
        DataType::Boolean => Some(Kind::Bool),
        _ => None,
    }
}

/// Whether `node` reads the column `name`.
fn refers_to(node: &Node, name: &str) -> bool {
    match node {
        Node::Column(column) => column == name,
        Node::Literal(_) => false,
        Node::Negate(arg) | Node::Not(arg) => refers_to(arg, name),
        Node::IsNull { arg, .. } | Node::Cast { arg, .. } => refers_to(arg, name),
        Node::Binary(_, left, right) => refers_to(left, name) || refers_to(right, name),
        Node::Case {
            branches,
            otherwise,
        } => {
            branches
                .iter()
                .any(|(condition, result)| refers_to(condition, name) || refers_to(result, name))
                || otherwise
                    .as_deref()
                    .is_some_and(|node| refers_to(node, name))
        }
        Node::Call(_, args) => args.iter().any(|arg| refers_to(arg, name)),
    }
}

/// An expression compiled for a running value by [`Expr::recurrence`].
///
/// Cheap to clone: clones share the compiled program.
#[derive(Clone, Debug)]
pub struct Recurrence {
    program: Arc<Program>,
}

/// A [`Recurrence`]'s variable-free parts evaluated over one batch, ready for
/// [`PreparedRecurrence::step`] on its rows.
#[derive(Clone, Debug)]
pub struct PreparedRecurrence {
    program: Arc<Program>,
    /// `hoisted[i]`'s values, read by [`Op::Column`]`(i)`.
    columns: Vec<Column>,
}

#[derive(Debug)]
struct Program {
    /// The whole expression, for its text and to evaluate the hoisted subtrees.
    expr: Expr,
    uses_var: bool,
    var_kind: Kind,
    data_type: DataType,
    /// The columns read, with their types in the schema compiled for.
    inputs: Vec<(String, DataType)>,
    hoisted: Vec<Hoisted>,
    ops: Vec<Op>,
    /// The arguments of every [`Op::Variadic`].
    args: Vec<OpId>,
    root: OpId,
}

impl Program {
    /// `typing` is an empty batch of the input schema with `var` added, of `var_kind`.
    fn compile(
        expr: &Expr,
        var: &str,
        var_kind: Kind,
        typing: RecordBatch,
    ) -> Result<Program, ExprError> {
        // Exactly `check`: the same type errors, in the same words.
        let data_type = expr.evaluate(&typing)?.data_type().clone();
        let Some(kind) = running_kind(&data_type) else {
            return Err(ExprError::RecurrenceResultType {
                text: expr.text.clone(),
                data_type,
            });
        };
        let schema = typing.schema();
        let inputs = expr
            .columns()
            .into_iter()
            .filter(|column| column != var)
            .filter_map(|column| {
                let data_type = schema.column_with_name(&column)?.1.data_type().clone();
                Some((column, data_type))
            })
            .collect();
        let mut compiler = Compiler {
            expr,
            var,
            typing,
            ops: Vec::new(),
            args: Vec::new(),
            hoisted: Vec::new(),
        };
        let root = compiler.operand(&expr.node, kind)?;
        Ok(Program {
            expr: expr.clone(),
            uses_var: refers_to(&expr.node, var),
            var_kind,
            data_type,
            inputs,
            hoisted: compiler.hoisted,
            ops: compiler.ops,
            args: compiler.args,
            root,
        })
    }
}

/// A largest subtree that does not involve the variable, evaluated once per batch and cast to
/// the kind its parent works on.
#[derive(Debug)]
struct Hoisted {
    node: Node,
    kind: Kind,
}

/// An index into [`Program::ops`].
type OpId = usize;

/// One node of the part of the expression that involves the variable. Every operand already
/// has the kind the operation works on (Int64 operands of a Float64 operation go through
/// [`Op::ToFloat`]), so operations match on [`Scalar`]s of one kind.
#[derive(Debug)]
enum Op {
    Var,
    Constant(Scalar),
    /// The row's value of [`PreparedRecurrence::columns`]`[i]`.
    Column(usize),
    ToFloat(OpId),
    Negate(OpId),
    Not(OpId),
    Binary(BinaryOp, OpId, OpId),
    IsNull {
        arg: OpId,
        negated: bool,
    },
    /// One `WHEN` of a `CASE`; `otherwise` is the rest of the `CASE`.
    Case {
        condition: OpId,
        then: OpId,
        otherwise: OpId,
    },
    /// `abs`, `sqrt`, `ln`, `log10`, `exp`, `floor`, `ceil`, `round`.
    Unary(Function, OpId),
    /// `least`, `greatest`, `coalesce` over [`Program::args`]`[range]`.
    Variadic(Function, Range<usize>),
    /// `CAST` (`strict`) or `TRY_CAST` to Int64, Float64 or Boolean.
    Cast {
        arg: OpId,
        to: Kind,
        strict: bool,
    },
}

/// Builds a [`Program`], typing every node as the vectorised evaluator does: by evaluating it
/// on an empty batch that has the variable as a column.
struct Compiler<'a> {
    expr: &'a Expr,
    var: &'a str,
    typing: RecordBatch,
    ops: Vec<Op>,
    args: Vec<OpId>,
    hoisted: Vec<Hoisted>,
}

impl Compiler<'_> {
    /// Compiles `node`, whose value its parent works on as `kind`.
    fn operand(&mut self, node: &Node, kind: Kind) -> Result<OpId, ExprError> {
        if !refers_to(node, self.var) {
            return self.hoist(node, kind);
        }
        let op = self.residual(node)?;
        Ok(match Kind::of(&self.data_type(node)?) {
            Some(Kind::Int) if kind == Kind::Float => self.push(Op::ToFloat(op)),
            _ => op,
        })
    }

    fn hoist(&mut self, node: &Node, kind: Kind) -> Result<OpId, ExprError> {
        let value = self.evaluate(node)?;
        let op = if value.scalar {
            let constant = value
                .cast(kind)
                .map_err(|source| self.expr.error(source.into()))?;
            Op::Constant(Column::new(constant.array.as_ref(), kind).get(0))
        } else {
            self.hoisted.push(Hoisted {
                node: node.clone(),
                kind,
            });
            Op::Column(self.hoisted.len() - 1)
        };
        Ok(self.push(op))
    }

    /// Compiles a node that involves the variable.
    fn residual(&mut self, node: &Node) -> Result<OpId, ExprError> {
        let op = match node {
            // The only column that involves the variable is the variable.
            Node::Column(_) => Op::Var,
            Node::Literal(_) => unreachable!("a literal does not involve the variable"),
            Node::Negate(arg) => {
                let kind = self.common_kind("-", &[arg.as_ref()])?;
                Op::Negate(self.operand(arg, kind)?)
            }
            Node::Not(arg) => Op::Not(self.operand(arg, Kind::Bool)?),
            Node::Binary(op, left, right) => {
                let kind = match op {
                    BinaryOp::And | BinaryOp::Or => Kind::Bool,
                    BinaryOp::Div => Kind::Float,
                    _ => self.common_kind(op.symbol(), &[left.as_ref(), right.as_ref()])?,
                };
                Op::Binary(*op, self.operand(left, kind)?, self.operand(right, kind)?)
            }
            Node::IsNull { arg, negated } => {
                let kind = Kind::of(&self.data_type(arg)?).unwrap_or(Kind::Null);
                Op::IsNull {
                    arg: self.operand(arg, kind)?,
                    negated: *negated,
                }
            }
            Node::Case {
                branches,
                otherwise,
            } => {
                let kind = self.case_kind(branches, otherwise.as_deref())?;
                return self.case(branches, otherwise.as_deref(), kind);
            }
            Node::Call(function, args) if function.variadic() => {
                let kind = self.common_kind(function.name(), &args.iter().collect::<Vec<_>>())?;
                let mut ids = Vec::with_capacity(args.len());
                for arg in args {
                    ids.push(self.operand(arg, kind)?);
                }
                let start = self.args.len();
                self.args.extend(ids);
                Op::Variadic(*function, start..self.args.len())
            }
            Node::Call(function, args) => {
                let kind = match function {
                    Function::Sqrt | Function::Ln | Function::Log10 | Function::Exp => Kind::Float,
                    _ => self.common_kind(function.name(), &[&args[0]])?,
                };
                Op::Unary(*function, self.operand(&args[0], kind)?)
            }
            Node::Cast { arg, to, strict } => {
                let from = Kind::of(&self.data_type(arg)?).unwrap_or(Kind::Null);
                let arg_op = self.operand(arg, from)?;
                let Some(to) = running_kind(to) else {
                    let types = vec![self.data_type(arg)?];
                    return Err(self.string_error(&format!("CAST AS {to}"), types, &[]));
                };
                Op::Cast {
                    arg: arg_op,
                    to,
                    strict: *strict,
                }
            }
        };
        Ok(self.push(op))
    }

    /// A `CASE` as a chain of one-`WHEN` cases; the rest of the chain is hoisted as soon as
    /// it no longer involves the variable.
    fn case(
        &mut self,
        branches: &[(Node, Node)],
        otherwise: Option<&Node>,
        kind: Kind,
    ) -> Result<OpId, ExprError> {
        let Some(((condition, then), rest)) = branches.split_first() else {
            return match otherwise {
                Some(otherwise) => self.operand(otherwise, kind),
                None => Ok(self.push(Op::Constant(Scalar::Null))),
            };
        };
        let condition = self.operand(condition, Kind::Bool)?;
        let then = self.operand(then, kind)?;
        let rest_case = Node::Case {
            branches: rest.to_vec(),
            otherwise: otherwise.cloned().map(Box::new),
        };
        let otherwise = if rest.is_empty() || refers_to(&rest_case, self.var) {
            self.case(rest, otherwise, kind)?
        } else {
            self.hoist(&rest_case, kind)?
        };
        Ok(self.push(Op::Case {
            condition,
            then,
            otherwise,
        }))
    }

    /// The kind of a `CASE`'s results, with a missing `ELSE` as a `NULL`.
    fn case_kind(
        &mut self,
        branches: &[(Node, Node)],
        otherwise: Option<&Node>,
    ) -> Result<Kind, ExprError> {
        let mut types = Vec::with_capacity(branches.len() + 1);
        let mut children = Vec::with_capacity(2 * branches.len() + 1);
        for (condition, result) in branches {
            types.push(self.data_type(result)?);
            children.extend([condition, result]);
        }
        types.push(match otherwise {
            Some(otherwise) => self.data_type(otherwise)?,
            None => DataType::Null,
        });
        children.extend(otherwise);
        self.common_kind_of("CASE", types, &children)
    }

    /// The kind the vectorised evaluator casts `operands` to before applying `operator`.
    fn common_kind(&mut self, operator: &str, operands: &[&Node]) -> Result<Kind, ExprError> {
        let mut types = Vec::with_capacity(operands.len());
        for operand in operands {
            types.push(self.data_type(operand)?);
        }
        self.common_kind_of(operator, types, operands)
    }

    /// The kind of the evaluator's `common_kind` for operands of `types`, which
    /// [`Expr::check`] has already run without error; strings are refused.
    fn common_kind_of(
        &mut self,
        operator: &str,
        types: Vec<DataType>,
        children: &[&Node],
    ) -> Result<Kind, ExprError> {
        let kind = types
            .iter()
            .filter_map(Kind::of)
            .fold(Kind::Null, |common, kind| {
                common.unify(kind).unwrap_or(common)
            });
        match kind {
            // Only `NULL`s: every operator that gets here takes Int64 first.
            Kind::Null => Ok(Kind::Int),
            Kind::Str => Err(self.string_error(operator, types, children)),
            kind => Ok(kind),
        }
    }

    /// The error for string operands of `operator`, or rather for the innermost operator under
    /// `children` that meets a string, which says best where the string meets the variable.
    fn string_error(
        &mut self,
        operator: &str,
        types: Vec<DataType>,
        children: &[&Node],
    ) -> ExprError {
        for child in children {
            if refers_to(child, self.var)
                && let Err(inner) = self.residual(child)
            {
                return inner;
            }
        }
        ExprError::RecurrenceString {
            text: self.expr.text.clone(),
            var: self.var.to_string(),
            operator: operator.to_string(),
            types,
        }
    }

    fn evaluate(&self, node: &Node) -> Result<Value, ExprError> {
        self.expr
            .eval(node, &self.typing)
            .map_err(|failure| self.expr.error(failure))
    }

    fn data_type(&self, node: &Node) -> Result<DataType, ExprError> {
        Ok(self.evaluate(node)?.data_type().clone())
    }

    fn push(&mut self, op: Op) -> OpId {
        self.ops.push(op);
        self.ops.len() - 1
    }
}

impl Recurrence {
    /// The result type (Int64, Float64 or Boolean), for the variable type compiled for.
    pub fn data_type(&self) -> &DataType {
        &self.program.data_type
    }

    /// True when the expression refers to the variable at all.
    pub fn uses_var(&self) -> bool {
        self.program.uses_var
    }

    /// The columns it reads, in order of first appearance (like [`Expr::columns`], without
    /// the variable).
    pub fn columns(&self) -> Vec<String> {
        self.program
            .inputs
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Evaluates the variable-free parts over `batch` (vectorised, once per batch).
    ///
    /// # Errors
    ///
    /// A column missing from `batch` or of another type than in the schema compiled for, and
    /// the evaluation errors of [`Expr::evaluate`] in those parts (e.g. integer overflow).
    pub fn prepare(&self, batch: &RecordBatch) -> Result<PreparedRecurrence, ExprError> {
        let program = &self.program;
        let schema = batch.schema_ref();
        for (name, compiled_type) in &program.inputs {
            let Ok(field) = schema.field_with_name(name) else {
                return Err(program.expr.unknown_column(name, schema));
            };
            if field.data_type() != compiled_type {
                let message = format!(
                    "column '{name}' is {} in this batch but {compiled_type} in the schema \
                     the recurrence was compiled for",
                    field.data_type()
                );
                return Err(program.expr.error(ArrowError::SchemaError(message).into()));
            }
        }
        let mut columns = Vec::with_capacity(program.hoisted.len());
        for hoisted in &program.hoisted {
            let array = program
                .expr
                .eval(&hoisted.node, batch)
                .and_then(|value| Ok(value.cast(hoisted.kind)?.expand(batch.num_rows())?))
                .map_err(|failure| program.expr.error(failure))?;
            columns.push(Column::new(array.as_ref(), hoisted.kind));
        }
        Ok(PreparedRecurrence {
            program: self.program.clone(),
            columns,
        })
    }
}

impl PreparedRecurrence {
    /// The value at `row` given the variable's value `var` ([`Scalar::Null`] for null): of the
    /// recurrence's [`data_type`](Recurrence::data_type), or [`Scalar::Null`].
    ///
    /// # Errors
    ///
    /// Integer overflow and a failing `CAST`, naming the expression text and the values, as
    /// [`Expr::evaluate`] reports them. As there, every operand and every `CASE` branch is
    /// evaluated, so an overflow in a branch not taken is an error too.
    ///
    /// # Panics
    ///
    /// If `row` is not a row of the prepared batch, or `var` is neither null nor of the
    /// variable's type.
    pub fn step(&self, row: usize, var: Scalar) -> Result<Scalar, ExprError> {
        let program = &*self.program;
        assert!(
            var.fits(program.var_kind),
            "the running variable of '{}' is {}, not {var:?}",
            program.expr.text,
            program.var_kind.data_type()
        );
        self.eval(program.root, row, var)
            .map_err(|source| program.expr.error(source.into()))
    }

    fn eval(&self, op: OpId, row: usize, var: Scalar) -> Result<Scalar, ArrowError> {
        let eval = |op: &OpId| self.eval(*op, row, var);
        Ok(match &self.program.ops[op] {
            Op::Var => var,
            Op::Constant(value) => *value,
            Op::Column(column) => self.columns[*column].get(row),
            Op::ToFloat(arg) => match eval(arg)? {
                Scalar::Int(x) => Scalar::Float(x as f64),
                value => value,
            },
            Op::Negate(arg) => negate(eval(arg)?)?,
            Op::Not(arg) => match eval(arg)? {
                Scalar::Bool(x) => Scalar::Bool(!x),
                value => value,
            },
            Op::Binary(op, left, right) => binary(*op, eval(left)?, eval(right)?)?,
            Op::IsNull { arg, negated } => Scalar::Bool(eval(arg)?.is_null() != *negated),
            Op::Case {
                condition,
                then,
                otherwise,
            } => {
                let (condition, then, otherwise) =
                    (eval(condition)?, eval(then)?, eval(otherwise)?);
                if condition == Scalar::Bool(true) {
                    then
                } else {
                    otherwise
                }
            }
            Op::Unary(function, arg) => unary(*function, eval(arg)?)?,
            Op::Variadic(function, args) => {
                let mut result = Scalar::Null;
                for arg in &self.program.args[args.clone()] {
                    result = variadic(*function, result, eval(arg)?);
                }
                result
            }
            Op::Cast { arg, to, strict } => cast(eval(arg)?, *to, *strict)?,
        })
    }
}

/// A hoisted subtree's values over one batch, read by row with an indexed load.
#[derive(Clone, Debug)]
enum Column {
    Int(ScalarBuffer<i64>, Option<NullBuffer>),
    Float(ScalarBuffer<f64>, Option<NullBuffer>),
    Bool(BooleanBuffer, Option<NullBuffer>),
}

impl Column {
    /// `array` must be of `kind`'s type: Int64, Float64 or Boolean.
    fn new(array: &dyn Array, kind: Kind) -> Column {
        let nulls = array.logical_nulls();
        match kind {
            Kind::Int => Column::Int(array.as_primitive::<Int64Type>().values().clone(), nulls),
            Kind::Float => {
                Column::Float(array.as_primitive::<Float64Type>().values().clone(), nulls)
            }
            _ => Column::Bool(array.as_boolean().values().clone(), nulls),
        }
    }

    fn get(&self, row: usize) -> Scalar {
        let valid = |nulls: &Option<NullBuffer>| nulls.as_ref().is_none_or(|n| n.is_valid(row));
        match self {
            Column::Int(values, nulls) if valid(nulls) => Scalar::Int(values[row]),
            Column::Float(values, nulls) if valid(nulls) => Scalar::Float(values[row]),
            Column::Bool(values, nulls) if valid(nulls) => Scalar::Bool(values.value(row)),
            _ => Scalar::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("orderSide", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("fillPrice", DataType::Float64, true),
        ])
    }

    fn compile(text: &str, var_type: DataType) -> Recurrence {
        Expr::parse(text)
            .unwrap()
            .recurrence("prev", &var_type, &schema())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The ops, e.g. `[Var, Column(0), Binary(Add, 0, 1)]`, in one line.
    fn ops(recurrence: &Recurrence) -> String {
        format!("{:?}", recurrence.program.ops)
    }

    #[test]
    fn compiled_recurrences_can_move_between_workers() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Recurrence>();
        send_sync::<PreparedRecurrence>();
    }

    #[test]
    fn variable_free_subtrees_are_hoisted_whole() {
        let position = compile(
            "prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END",
            DataType::Int64,
        );
        assert_eq!(ops(&position), "[Var, Column(0), Binary(Add, 0, 1)]");
        assert_eq!(position.program.hoisted.len(), 1);

        let decayed = compile("prev * 0.9 + qty", DataType::Float64);
        assert_eq!(
            ops(&decayed),
            "[Var, Constant(Float(0.9)), Binary(Mul, 0, 1), Column(0), Binary(Add, 2, 3)]"
        );
        assert_eq!(
            decayed.program.hoisted[0].kind,
            Kind::Float,
            "qty is cast once per batch"
        );
    }

    #[test]
    fn literal_only_subtrees_are_constants() {
        let recurrence = compile("prev + (2 * 3 - 1)", DataType::Int64);
        assert_eq!(
            ops(&recurrence),
            "[Var, Constant(Int(5)), Binary(Add, 0, 1)]"
        );
        assert!(recurrence.program.hoisted.is_empty());
        let recurrence = compile("coalesce(prev, NULL, 1)", DataType::Float64);
        assert_eq!(
            ops(&recurrence),
            "[Var, Constant(Null), Constant(Float(1.0)), Variadic(Coalesce, 0..3)]"
        );
    }

    #[test]
    fn integer_operands_of_float_operations_are_converted_once() {
        let recurrence = compile("greatest(prev, fillPrice)", DataType::Int64);
        assert_eq!(
            ops(&recurrence),
            "[Var, ToFloat(0), Column(0), Variadic(Greatest, 0..2)]"
        );
        assert_eq!(recurrence.data_type(), &DataType::Float64);
    }

    #[test]
    fn the_rest_of_a_case_is_hoisted_once_it_no_longer_involves_the_variable() {
        let recurrence = compile(
            "CASE WHEN prev IS NULL THEN 0 WHEN orderSide = 'B' THEN qty ELSE -qty END",
            DataType::Int64,
        );
        assert_eq!(
            ops(&recurrence),
            "[Var, IsNull { arg: 0, negated: false }, Constant(Int(0)), Column(0), \
             Case { condition: 1, then: 2, otherwise: 3 }]"
        );
        let recurrence = compile("CASE WHEN qty > 0 THEN prev END", DataType::Boolean);
        assert_eq!(
            ops(&recurrence),
            "[Column(0), Var, Constant(Null), Case { condition: 0, then: 1, otherwise: 2 }]"
        );
    }

    #[test]
    fn an_expression_without_the_variable_is_one_column() {
        let recurrence = compile("qty * 2", DataType::Float64);
        assert!(!recurrence.uses_var());
        assert_eq!(ops(&recurrence), "[Column(0)]");
        assert_eq!(recurrence.data_type(), &DataType::Int64);
    }

    #[test]
    fn casts_follow_arrow_at_the_edges_of_int64() {
        let to_int = |x: f64| cast(Scalar::Float(x), Kind::Int, false).unwrap();
        assert_eq!(to_int(-2.7), Scalar::Int(-2));
        assert_eq!(to_int(-9223372036854775808.0), Scalar::Int(i64::MIN));
        assert_eq!(to_int(9223372036854775808.0), Scalar::Null);
        assert_eq!(to_int(f64::NAN), Scalar::Null);
        assert_eq!(to_int(f64::INFINITY), Scalar::Null);
        assert_eq!(
            cast(Scalar::Float(-0.0), Kind::Bool, true).unwrap(),
            Scalar::Bool(false)
        );
        assert_eq!(
            cast(Scalar::Float(f64::NAN), Kind::Bool, true).unwrap(),
            Scalar::Bool(true)
        );
    }
}
