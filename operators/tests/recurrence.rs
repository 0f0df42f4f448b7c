//! Running values (`Expr::recurrence`), step by step against [`reference`], an independent
//! row-by-row interpreter of the expression language written from its documented semantics;
//! the vectorised `Expr::evaluate` (which the recurrence uses for the parts without the
//! variable) is held to the same reference. By topic:
//! - `hand_computed`: small cases whose values are worked out by hand from the docs;
//! - `oracle`: every operator, function, `CASE` form and cast, with an Int64, Float64 or
//!   Boolean `prev`, on seeded random rows and `prev` values (nulls, NaN, signed zeros,
//!   infinities, integer extremes): every step gives what the reference gives, errors
//!   included;
//! - `random_expressions`: the same for random expression trees (proptest);
//! - `errors`: the exact text of compile, prepare and step errors.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema};
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

/// Checks stepping `text` over `batch` (which has no `prev`), with `prev` taking the values
/// `prevs` of `var_type`, against the [`reference`] interpreter: each step gives the value it
/// gives, or fails where it fails. The vectorised `Expr::evaluate` on the batch with `prev`
/// as a column must agree with it too, failing as a whole when any row fails; a failing
/// step's error text is that of `Expr::evaluate` on its row alone.
///
/// An expression `check` refuses must be refused with the same error.
fn compare_with_reference(
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
    let (result_type, expected) = reference::expected(text, batch, var_type, prevs)
        .map_err(|e| format!("{text}: the reference cannot evaluate it: {e}"))?;
    if &result_type.data_type() != recurrence.data_type() {
        return Err(format!(
            "{text} with a {var_type} prev: the recurrence gives {}, the reference {result_type:?}",
            recurrence.data_type()
        ));
    }
    let context = |row: usize| {
        format!(
            "{text} with a {var_type} prev, row {row} ({}), prev = {:?}",
            describe_row(batch, row),
            prevs[row]
        )
    };
    let failing_row = expected.iter().position(Result::is_err);
    match (expr.evaluate(&with_prev), failing_row) {
        (Ok(array), None) => {
            for (row, expected) in expected.iter().enumerate() {
                let evaluated = scalar_at(array.as_ref(), row);
                if !same(evaluated, *expected.as_ref().unwrap()) {
                    return Err(format!(
                        "{}\n  evaluate:  {evaluated:?}\n  reference: {expected:?}",
                        context(row)
                    ));
                }
            }
        }
        (Err(_), Some(_)) => {}
        (Ok(_), Some(row)) => {
            return Err(format!(
                "{}: evaluate succeeds, the reference fails",
                context(row)
            ));
        }
        (Err(error), None) => {
            return Err(format!(
                "{text}: evaluate fails ({error}), the reference on no row"
            ));
        }
    }
    let prepared = match recurrence.prepare(batch) {
        Ok(prepared) => prepared,
        // A hoisted part failed on some row, so the whole batch fails.
        Err(_) if failing_row.is_some() => return Ok(Outcome::PrepareFailed),
        Err(error) => {
            return Err(format!(
                "{text}: prepare fails ({error}), the reference on no row"
            ));
        }
    };
    let (mut good_rows, mut failed_rows) = (0, 0);
    for (row, prev) in prevs.iter().enumerate() {
        let step = prepared.step(row, *prev);
        let agree = match (&step, &expected[row]) {
            (Ok(step), Ok(expected)) => same(*step, *expected),
            (Err(step), Err(_)) => {
                let alone = expr.evaluate(&with_prev.slice(row, 1));
                alone.is_err_and(|error| error.to_string() == step.to_string())
            }
            _ => false,
        };
        if !agree {
            return Err(format!(
                "{}\n  step:      {step:?}\n  reference: {:?}",
                context(row),
                expected[row]
            ));
        }
        failed_rows += usize::from(step.is_err());
        good_rows += usize::from(step.is_ok());
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

/// What [`compare_with_reference`] could compare.
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
        match compare_with_reference(text, var_type, &batch, &prevs) {
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

/// An independent interpreter of the expression language, one row at a time: the oracle of
/// every test here. It is written from the semantics in the docs of
/// `vizflow_operators::expr` and shares no code with the crate (its own tokenizer, parser,
/// type rules, arithmetic and comparisons). `BETWEEN`, `IN` and `CASE x WHEN` are rewritten
/// as the docs define them (inclusive comparisons; a chain of `=` joined by `OR`; `x = a`).
/// Where the docs leave a detail open, the choice is noted at that place.
mod reference {
    use std::cmp::Ordering;

    use super::*;

    /// The type families of the docs: integers are Int64, floats Float64.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Type {
        Null,
        Int,
        Float,
        Bool,
        Str,
    }

    impl Type {
        pub fn data_type(self) -> DataType {
            match self {
                Type::Null => DataType::Null,
                Type::Int => DataType::Int64,
                Type::Float => DataType::Float64,
                Type::Bool => DataType::Boolean,
                Type::Str => DataType::Utf8,
            }
        }

        fn of(data_type: &DataType) -> Type {
            match data_type {
                DataType::Int64 | DataType::Int32 => Type::Int,
                DataType::Float64 => Type::Float,
                DataType::Boolean => Type::Bool,
                DataType::Utf8 => Type::Str,
                DataType::Null => Type::Null,
                other => panic!("the reference has no type for {other}"),
            }
        }

        /// The type both operands are brought to: a null takes the other's type, an integer
        /// and a float give a float, other mixes are type errors.
        fn unify(self, other: Type) -> Result<Type, String> {
            match (self, other) {
                (a, b) if a == b => Ok(a),
                (Type::Null, t) | (t, Type::Null) => Ok(t),
                (Type::Int, Type::Float) | (Type::Float, Type::Int) => Ok(Type::Float),
                (a, b) => Err(format!("{a:?} and {b:?} do not mix")),
            }
        }

        /// Arithmetic's type: integers or floats; all-null operands are Int64 (docs).
        fn numeric(self) -> Result<Type, String> {
            match self {
                Type::Null | Type::Int => Ok(Type::Int),
                Type::Float => Ok(Type::Float),
                other => Err(format!("{other:?} is not a number")),
            }
        }

        fn boolean(self) -> Result<Type, String> {
            match self {
                Type::Null | Type::Bool => Ok(Type::Bool),
                other => Err(format!("{other:?} is not a boolean")),
            }
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Value {
        Null,
        Int(i64),
        Float(f64),
        Bool(bool),
        Str(String),
    }

    impl Value {
        fn type_of(&self) -> Type {
            match self {
                Value::Null => Type::Null,
                Value::Int(_) => Type::Int,
                Value::Float(_) => Type::Float,
                Value::Bool(_) => Type::Bool,
                Value::Str(_) => Type::Str,
            }
        }

        /// The value brought to `to`, the operands' common type: only integers change.
        fn to(self, to: Type) -> Value {
            match (self, to) {
                (Value::Int(x), Type::Float) => Value::Float(x as f64),
                (value, _) => value,
            }
        }

        fn scalar(self) -> Scalar {
            match self {
                Value::Null => Scalar::Null,
                Value::Int(x) => Scalar::Int(x),
                Value::Float(x) => Scalar::Float(x),
                Value::Bool(x) => Scalar::Bool(x),
                Value::Str(x) => panic!("a running value cannot be the string {x:?}"),
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Op {
        Add,
        Sub,
        Mul,
        Div,
        Rem,
        Eq,
        NotEq,
        Lt,
        LtEq,
        Gt,
        GtEq,
        And,
        Or,
    }

    #[derive(Clone, Debug)]
    enum Ast {
        Column(String),
        Literal(Value),
        Neg(Box<Ast>),
        Not(Box<Ast>),
        Binary(Op, Box<Ast>, Box<Ast>),
        IsNull(Box<Ast>, bool),
        Case(Vec<(Ast, Ast)>, Option<Box<Ast>>),
        Call(String, Vec<Ast>),
        /// Argument, target type, strict (`CAST`) or not (`TRY_CAST`).
        Cast(Box<Ast>, Type, bool),
    }

    fn binary(op: Op, left: Ast, right: Ast) -> Ast {
        Ast::Binary(op, Box::new(left), Box::new(right))
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Token {
        Number(String),
        Word(String),
        Str(String),
        Symbol(&'static str),
    }

    fn tokenize(text: &str) -> Result<Vec<Token>, String> {
        // Two-character symbols first.
        const SYMBOLS: [&str; 15] = [
            "<>", "!=", "<=", ">=", "(", ")", ",", "+", "-", "*", "/", "%", "=", "<", ">",
        ];
        let chars: Vec<char> = text.chars().collect();
        let (mut i, mut tokens) = (0, Vec::new());
        let take_while = |i: &mut usize, keep: &dyn Fn(char) -> bool| {
            let start = *i;
            while *i < chars.len() && keep(chars[*i]) {
                *i += 1;
            }
            chars[start..*i].iter().collect::<String>()
        };
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_digit() {
                let mut number = take_while(&mut i, &|c| c.is_ascii_digit() || c == '.');
                if i < chars.len() && matches!(chars[i], 'e' | 'E') {
                    number.push('e');
                    i += 1;
                    if i < chars.len() && matches!(chars[i], '+' | '-') {
                        number.push(chars[i]);
                        i += 1;
                    }
                    number += &take_while(&mut i, &|c| c.is_ascii_digit());
                }
                tokens.push(Token::Number(number));
            } else if c.is_alphabetic() || c == '_' {
                let word = take_while(&mut i, &|c| c.is_alphanumeric() || c == '_');
                tokens.push(Token::Word(word));
            } else if c == '\'' {
                i += 1;
                let string = take_while(&mut i, &|c| c != '\'');
                if i == chars.len() {
                    return Err("unterminated string".into());
                }
                i += 1;
                tokens.push(Token::Str(string));
            } else {
                let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let symbol = SYMBOLS
                    .iter()
                    .find(|s| rest.starts_with(**s))
                    .ok_or_else(|| format!("unexpected {c:?}"))?;
                tokens.push(Token::Symbol(symbol));
                i += symbol.len();
            }
        }
        Ok(tokens)
    }

    /// Recursive descent, from the loosest operator to the tightest: `OR`, `AND`, `NOT`,
    /// comparisons (`= <> != < <= > >=`, `IS [NOT] NULL`, `[NOT] BETWEEN`, `[NOT] IN`),
    /// `+ -`, `* / %`, unary `- +`, then literals, parentheses, `CASE`, casts, calls and
    /// columns.
    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek(&self, ahead: usize) -> Option<&Token> {
            self.tokens.get(self.at + ahead)
        }

        fn is_keyword(&self, ahead: usize, keyword: &str) -> bool {
            matches!(self.peek(ahead), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
        }

        fn keyword(&mut self, keyword: &str) -> bool {
            let found = self.is_keyword(0, keyword);
            self.at += usize::from(found);
            found
        }

        fn expect_keyword(&mut self, keyword: &str) -> Result<(), String> {
            match self.keyword(keyword) {
                true => Ok(()),
                false => Err(format!("expected {keyword} at token {}", self.at)),
            }
        }

        fn symbol(&mut self, symbol: &str) -> bool {
            let found = matches!(self.peek(0), Some(Token::Symbol(s)) if *s == symbol);
            self.at += usize::from(found);
            found
        }

        fn expect_symbol(&mut self, symbol: &str) -> Result<(), String> {
            match self.symbol(symbol) {
                true => Ok(()),
                false => Err(format!("expected {symbol} at token {}", self.at)),
            }
        }

        fn expr(&mut self) -> Result<Ast, String> {
            let mut left = self.and()?;
            while self.keyword("OR") {
                left = binary(Op::Or, left, self.and()?);
            }
            Ok(left)
        }

        fn and(&mut self) -> Result<Ast, String> {
            let mut left = self.not()?;
            while self.keyword("AND") {
                left = binary(Op::And, left, self.not()?);
            }
            Ok(left)
        }

        fn not(&mut self) -> Result<Ast, String> {
            match self.keyword("NOT") {
                true => Ok(Ast::Not(Box::new(self.not()?))),
                false => self.comparison(),
            }
        }

        fn comparison(&mut self) -> Result<Ast, String> {
            let mut left = self.additive()?;
            loop {
                let op = match self.peek(0) {
                    Some(Token::Symbol("=")) => Some(Op::Eq),
                    Some(Token::Symbol("<>" | "!=")) => Some(Op::NotEq),
                    Some(Token::Symbol("<")) => Some(Op::Lt),
                    Some(Token::Symbol("<=")) => Some(Op::LtEq),
                    Some(Token::Symbol(">")) => Some(Op::Gt),
                    Some(Token::Symbol(">=")) => Some(Op::GtEq),
                    _ => None,
                };
                if let Some(op) = op {
                    self.at += 1;
                    left = binary(op, left, self.additive()?);
                    continue;
                }
                if self.keyword("IS") {
                    let negated = self.keyword("NOT");
                    self.expect_keyword("NULL")?;
                    left = Ast::IsNull(Box::new(left), negated);
                    continue;
                }
                let negated = self.is_keyword(0, "NOT")
                    && (self.is_keyword(1, "BETWEEN") || self.is_keyword(1, "IN"));
                self.at += usize::from(negated);
                let test = if self.keyword("BETWEEN") {
                    let low = self.additive()?;
                    self.expect_keyword("AND")?;
                    let high = self.additive()?;
                    let at_least = binary(Op::GtEq, left.clone(), low);
                    binary(Op::And, at_least, binary(Op::LtEq, left, high))
                } else if self.keyword("IN") {
                    self.expect_symbol("(")?;
                    let mut any = binary(Op::Eq, left.clone(), self.expr()?);
                    while self.symbol(",") {
                        any = binary(Op::Or, any, binary(Op::Eq, left.clone(), self.expr()?));
                    }
                    self.expect_symbol(")")?;
                    any
                } else {
                    return Ok(left);
                };
                left = match negated {
                    true => Ast::Not(Box::new(test)),
                    false => test,
                };
            }
        }

        fn additive(&mut self) -> Result<Ast, String> {
            let mut left = self.multiplicative()?;
            loop {
                let op = if self.symbol("+") {
                    Op::Add
                } else if self.symbol("-") {
                    Op::Sub
                } else {
                    return Ok(left);
                };
                left = binary(op, left, self.multiplicative()?);
            }
        }

        fn multiplicative(&mut self) -> Result<Ast, String> {
            let mut left = self.unary()?;
            loop {
                let op = if self.symbol("*") {
                    Op::Mul
                } else if self.symbol("/") {
                    Op::Div
                } else if self.symbol("%") {
                    Op::Rem
                } else {
                    return Ok(left);
                };
                left = binary(op, left, self.unary()?);
            }
        }

        fn unary(&mut self) -> Result<Ast, String> {
            if self.symbol("-") {
                Ok(Ast::Neg(Box::new(self.unary()?)))
            } else if self.symbol("+") {
                self.unary()
            } else {
                self.primary()
            }
        }

        fn primary(&mut self) -> Result<Ast, String> {
            let token = self.peek(0).cloned().ok_or("unexpected end")?;
            self.at += 1;
            let word = match token {
                // Docs: an integer too large for i64 is a float, so is any decimal.
                Token::Number(digits) => {
                    let float = || Value::Float(digits.parse().unwrap());
                    let value = match digits.contains(['.', 'e']) {
                        true => float(),
                        false => digits.parse().map_or_else(|_| float(), Value::Int),
                    };
                    return Ok(Ast::Literal(value));
                }
                Token::Str(text) => return Ok(Ast::Literal(Value::Str(text))),
                Token::Symbol("(") => {
                    let inner = self.expr()?;
                    self.expect_symbol(")")?;
                    return Ok(inner);
                }
                Token::Symbol(s) => return Err(format!("unexpected {s}")),
                Token::Word(word) => word,
            };
            match word.to_ascii_uppercase().as_str() {
                "TRUE" => Ok(Ast::Literal(Value::Bool(true))),
                "FALSE" => Ok(Ast::Literal(Value::Bool(false))),
                "NULL" => Ok(Ast::Literal(Value::Null)),
                "CASE" => self.case(),
                keyword @ ("CAST" | "TRY_CAST") => {
                    self.expect_symbol("(")?;
                    let arg = self.expr()?;
                    self.expect_keyword("AS")?;
                    let Some(Token::Word(name)) = self.peek(0).cloned() else {
                        return Err("expected a type".into());
                    };
                    self.at += 1;
                    let to = match name.to_ascii_uppercase().as_str() {
                        "BIGINT" | "INTEGER" | "INT" => Type::Int,
                        "DOUBLE" | "FLOAT" | "REAL" => Type::Float,
                        "BOOLEAN" | "BOOL" => Type::Bool,
                        "VARCHAR" | "TEXT" => Type::Str,
                        other => return Err(format!("unknown type {other}")),
                    };
                    self.expect_symbol(")")?;
                    Ok(Ast::Cast(Box::new(arg), to, keyword == "CAST"))
                }
                _ if self.symbol("(") => {
                    let mut args = vec![self.expr()?];
                    while self.symbol(",") {
                        args.push(self.expr()?);
                    }
                    self.expect_symbol(")")?;
                    Ok(Ast::Call(word.to_ascii_lowercase(), args))
                }
                _ => Ok(Ast::Column(word)),
            }
        }

        fn case(&mut self) -> Result<Ast, String> {
            let operand = match self.is_keyword(0, "WHEN") {
                true => None,
                false => Some(self.expr()?),
            };
            let mut branches = Vec::new();
            while self.keyword("WHEN") {
                let when = self.expr()?;
                self.expect_keyword("THEN")?;
                let condition = match &operand {
                    Some(operand) => binary(Op::Eq, operand.clone(), when),
                    None => when,
                };
                branches.push((condition, self.expr()?));
            }
            let otherwise = match self.keyword("ELSE") {
                true => Some(Box::new(self.expr()?)),
                false => None,
            };
            self.expect_keyword("END")?;
            Ok(Ast::Case(branches, otherwise))
        }
    }

    /// A row of the batch and the running variable `prev`.
    struct Row<'a> {
        batch: &'a RecordBatch,
        row: usize,
        prev: Scalar,
        prev_type: Type,
    }

    impl Row<'_> {
        fn type_of(&self, name: &str) -> Result<Type, String> {
            match name {
                "prev" => Ok(self.prev_type),
                _ => self
                    .batch
                    .column_by_name(name)
                    .map(|c| Type::of(c.data_type()))
                    .ok_or_else(|| format!("no column {name}")),
            }
        }

        fn value(&self, name: &str) -> Value {
            if name == "prev" {
                return match self.prev {
                    Scalar::Null => Value::Null,
                    Scalar::Int(x) => Value::Int(x),
                    Scalar::Float(x) => Value::Float(x),
                    Scalar::Bool(x) => Value::Bool(x),
                };
            }
            let column = self.batch.column_by_name(name).unwrap();
            let row = self.row;
            if column.is_null(row) {
                return Value::Null;
            }
            match column.data_type() {
                DataType::Int64 => Value::Int(column.as_primitive::<Int64Type>().value(row)),
                DataType::Int32 => Value::Int(column.as_primitive::<Int32Type>().value(row).into()),
                DataType::Float64 => Value::Float(column.as_primitive::<Float64Type>().value(row)),
                DataType::Boolean => Value::Bool(column.as_boolean().value(row)),
                DataType::Utf8 => Value::Str(column.as_string::<i32>().value(row).to_owned()),
                other => panic!("no value of {other}"),
            }
        }
    }

    /// The order comparisons use (docs: PostgreSQL's): for floats `-0.0 = 0.0`, and every
    /// NaN equals NaN and sorts above every number.
    fn order(a: &Value, b: &Value) -> Ordering {
        match (a, b) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => a.partial_cmp(b).unwrap(),
            },
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (a, b) => panic!("comparing {a:?} with {b:?}"),
        }
    }

    const OVERFLOW: &str = "integer overflow";

    fn arithmetic(op: Op, left: Value, right: Value) -> Result<Value, String> {
        let overflow = |x: Option<i64>| x.map(Value::Int).ok_or(OVERFLOW.to_owned());
        Ok(match (left, right) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            // Docs: division (and %) by zero gives null, for integers and floats alike.
            (_, Value::Int(0)) if matches!(op, Op::Div | Op::Rem) => Value::Null,
            (_, Value::Float(y)) if y == 0.0 && matches!(op, Op::Div | Op::Rem) => Value::Null,
            (Value::Int(x), Value::Int(y)) => match op {
                Op::Add => overflow(x.checked_add(y))?,
                Op::Sub => overflow(x.checked_sub(y))?,
                Op::Mul => overflow(x.checked_mul(y))?,
                // The remainder takes the dividend's sign (SQL's). i64::MIN % -1 is 0: the
                // result fits, so it is no overflow, though Rust's checked_rem refuses it.
                Op::Rem if y == -1 => Value::Int(0),
                Op::Rem => Value::Int(x % y),
                _ => unreachable!("/ is always on floats"),
            },
            (Value::Float(x), Value::Float(y)) => Value::Float(match op {
                Op::Add => x + y,
                Op::Sub => x - y,
                Op::Mul => x * y,
                Op::Div => x / y,
                _ => x % y,
            }),
            (a, b) => panic!("{op:?} of {a:?} and {b:?}"),
        })
    }

    fn compare(op: Op, left: &Value, right: &Value) -> Value {
        if *left == Value::Null || *right == Value::Null {
            return Value::Null;
        }
        let ordering = order(left, right);
        Value::Bool(match op {
            Op::Eq => ordering.is_eq(),
            Op::NotEq => ordering.is_ne(),
            Op::Lt => ordering.is_lt(),
            Op::LtEq => ordering.is_le(),
            Op::Gt => ordering.is_gt(),
            _ => ordering.is_ge(),
        })
    }

    /// SQL's three-valued logic.
    fn kleene(op: Op, left: &Value, right: &Value) -> Value {
        let truth = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        };
        let (a, b) = (truth(left), truth(right));
        // OR: either true is true; AND: either false is false. Otherwise a null decides.
        let decisive = op == Op::Or;
        if a == Some(decisive) || b == Some(decisive) {
            Value::Bool(decisive)
        } else if a.is_some() && b.is_some() {
            Value::Bool(!decisive)
        } else {
            Value::Null
        }
    }

    /// Docs: `CAST` fails on a value it cannot convert, `TRY_CAST` gives null; floats cast
    /// to integers are truncated toward zero (so those in [-2^63, 2^63) convert). The docs do
    /// not say how numbers become booleans: here, as in SQL, any non-zero number is true
    /// (NaN too, as it is not zero).
    fn cast(value: Value, to: Type, strict: bool) -> Result<Value, String> {
        let converted = match (value, to) {
            (Value::Null, _) => Some(Value::Null),
            (Value::Str(_), _) | (_, Type::Str) => panic!("the reference casts no strings"),
            (value, _) if value.type_of() == to => Some(value),
            (Value::Int(x), Type::Float) => Some(Value::Float(x as f64)),
            (Value::Bool(b), Type::Float) => Some(Value::Float(if b { 1.0 } else { 0.0 })),
            (Value::Bool(b), Type::Int) => Some(Value::Int(i64::from(b))),
            (Value::Int(x), Type::Bool) => Some(Value::Bool(x != 0)),
            (Value::Float(x), Type::Bool) => Some(Value::Bool(x != 0.0)),
            (Value::Float(x), Type::Int) => {
                let two_63 = 9_223_372_036_854_775_808.0;
                ((-two_63..two_63).contains(&x)).then(|| Value::Int(x.trunc() as i64))
            }
            (value, to) => panic!("cast of {value:?} to {to:?}"),
        };
        match converted {
            Some(value) => Ok(value),
            None if strict => Err("cast failed".into()),
            None => Ok(Value::Null),
        }
    }

    fn type_of(ast: &Ast, row: &Row<'_>) -> Result<Type, String> {
        let type_of = |ast| type_of(ast, row);
        Ok(match ast {
            Ast::Column(name) => row.type_of(name)?,
            Ast::Literal(value) => value.type_of(),
            Ast::Neg(arg) => type_of(arg)?.numeric()?,
            Ast::Not(arg) => type_of(arg)?.boolean()?,
            Ast::Binary(op, left, right) => {
                let common = type_of(left)?.unify(type_of(right)?)?;
                match op {
                    Op::Add | Op::Sub | Op::Mul | Op::Rem => common.numeric()?,
                    Op::Div => common.numeric().map(|_| Type::Float)?, // docs: `/` gives Float64
                    Op::And | Op::Or => common.boolean()?,
                    _ => Type::Bool,
                }
            }
            Ast::IsNull(..) => Type::Bool,
            Ast::Case(branches, otherwise) => {
                let mut common = Type::Null;
                for (condition, result) in branches {
                    type_of(condition)?.boolean()?;
                    common = common.unify(type_of(result)?)?;
                }
                if let Some(otherwise) = otherwise {
                    common = common.unify(type_of(otherwise)?)?;
                }
                match common {
                    Type::Null => Type::Int,
                    common => common,
                }
            }
            Ast::Call(function, args) => {
                let mut common = Type::Null;
                for arg in args {
                    common = common.unify(type_of(arg)?)?;
                }
                match function.as_str() {
                    "abs" | "floor" | "ceil" | "round" => common.numeric()?,
                    "sqrt" | "ln" | "log10" | "exp" => common.numeric().map(|_| Type::Float)?,
                    "least" | "greatest" | "coalesce" if common == Type::Null => Type::Int,
                    "least" | "greatest" | "coalesce" => common,
                    other => return Err(format!("unknown function {other}")),
                }
            }
            Ast::Cast(_, to, _) => *to,
        })
    }

    /// One row's value; `Err` for an evaluation error. Every part is evaluated (docs: every
    /// branch of a `CASE` on every row), so an error anywhere is the row's error.
    fn eval(ast: &Ast, row: &Row<'_>) -> Result<Value, String> {
        let eval = |ast| eval(ast, row);
        let type_of = |ast| type_of(ast, row).unwrap();
        Ok(match ast {
            Ast::Column(name) => row.value(name),
            Ast::Literal(value) => value.clone(),
            Ast::Neg(arg) => match eval(arg)?.to(type_of(ast)) {
                Value::Int(x) => Value::Int(x.checked_neg().ok_or(OVERFLOW)?),
                Value::Float(x) => Value::Float(-x),
                other => other,
            },
            Ast::Not(arg) => match eval(arg)? {
                Value::Bool(b) => Value::Bool(!b),
                other => other,
            },
            Ast::Binary(op, left, right) => {
                let common = type_of(left).unify(type_of(right)).unwrap();
                let (left, right) = (eval(left)?, eval(right)?);
                match op {
                    Op::And | Op::Or => kleene(*op, &left, &right),
                    Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => {
                        let to = if *op == Op::Div { Type::Float } else { common };
                        arithmetic(*op, left.to(to), right.to(to))?
                    }
                    _ => compare(*op, &left.to(common), &right.to(common)),
                }
            }
            Ast::IsNull(arg, negated) => Value::Bool((eval(arg)? == Value::Null) != *negated),
            Ast::Case(branches, otherwise) => {
                let mut chosen = None;
                for (condition, result) in branches {
                    let (condition, result) = (eval(condition)?, eval(result)?);
                    // A null condition counts as false.
                    if chosen.is_none() && condition == Value::Bool(true) {
                        chosen = Some(result);
                    }
                }
                let otherwise = match otherwise {
                    Some(otherwise) => eval(otherwise)?,
                    None => Value::Null,
                };
                chosen.unwrap_or(otherwise).to(type_of(ast))
            }
            Ast::Call(function, args) => {
                let to = args
                    .iter()
                    .fold(Type::Null, |t, a| t.unify(type_of(a)).unwrap());
                let mut values = Vec::new();
                for arg in args {
                    values.push(eval(arg)?.to(to));
                }
                call(function, values)?
            }
            Ast::Cast(arg, to, strict) => cast(eval(arg)?, *to, *strict)?,
        })
    }

    fn call(function: &str, mut values: Vec<Value>) -> Result<Value, String> {
        let float = |f: fn(f64) -> f64, value: Value| match value.to(Type::Float) {
            Value::Float(x) => Value::Float(f(x)),
            other => other,
        };
        let first = values[0].clone();
        Ok(match (function, first) {
            ("coalesce", _) => values
                .into_iter()
                .find(|v| *v != Value::Null)
                .unwrap_or(Value::Null),
            ("least" | "greatest", _) => {
                // Nulls are skipped. The winner is returned as compared: the docs leave open
                // which of two equal zeros (or NaNs) comes back; this takes +0.0 (and the
                // positive NaN), comparisons' one zero.
                for value in &mut values {
                    if let Value::Float(x) = value {
                        *x = if x.is_nan() { f64::NAN } else { *x + 0.0 };
                    }
                }
                let wanted = if function == "least" {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                values
                    .into_iter()
                    .filter(|v| *v != Value::Null)
                    .reduce(|best, v| if order(&v, &best) == wanted { v } else { best })
                    .unwrap_or(Value::Null)
            }
            (_, Value::Null) => Value::Null,
            ("abs", Value::Int(x)) => Value::Int(x.checked_abs().ok_or(OVERFLOW)?),
            // Docs: integers pass floor, ceil and round unchanged; round is half away from
            // zero, which is f64::round.
            ("floor" | "ceil" | "round", Value::Int(x)) => Value::Int(x),
            ("abs", value) => float(f64::abs, value),
            ("floor", value) => float(f64::floor, value),
            ("ceil", value) => float(f64::ceil, value),
            ("round", value) => float(f64::round, value),
            // Docs: IEEE 754, so sqrt(-1) is NaN and ln(0) is -inf.
            ("sqrt", value) => float(f64::sqrt, value),
            ("ln", value) => float(f64::ln, value),
            ("log10", value) => float(f64::log10, value),
            ("exp", value) => float(f64::exp, value),
            (other, _) => panic!("unknown function {other}"),
        })
    }

    /// What the expression `text` gives on each row of `batch` with `prev` taking the values
    /// `prevs` of `prev_type`: its type, and each row's value or `Err` for an error. The outer
    /// `Err` is for an expression the reference cannot parse or type.
    pub fn expected(
        text: &str,
        batch: &RecordBatch,
        prev_type: &DataType,
        prevs: &[Scalar],
    ) -> Result<(Type, Vec<Result<Scalar, String>>), String> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            at: 0,
        };
        let ast = parser.expr()?;
        if parser.at != parser.tokens.len() {
            return Err(format!("{text}: unparsed tokens from {}", parser.at));
        }
        let row = |row: usize, prev: Scalar| Row {
            batch,
            row,
            prev,
            prev_type: Type::of(prev_type),
        };
        let result_type = type_of(&ast, &row(0, Scalar::Null))?;
        let values = prevs
            .iter()
            .enumerate()
            .map(|(i, prev)| eval(&ast, &row(i, *prev)).map(Value::scalar))
            .collect();
        Ok((result_type, values))
    }
}

/// Small cases computed by hand from the docs' semantics, each checked against a step and
/// against the reference interpreter (so that the reference is checked too).
mod hand_computed {
    use super::*;
    use Scalar::{Bool, Float, Int, Null};

    /// The row a case is computed on: `x`, `y` Float64; `i`, `k` Int64; `b`; `s`.
    #[derive(Clone, Copy)]
    struct Row {
        x: Option<f64>,
        y: Option<f64>,
        i: Option<i64>,
        k: Option<i64>,
        b: Option<bool>,
        s: Option<&'static str>,
    }

    const ROW: Row = Row {
        x: Some(2.0),
        y: Some(3.0),
        i: Some(3),
        k: Some(3),
        b: Some(true),
        s: Some("B"),
    };

    fn batch(row: Row) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(vec![row.x])) as ArrayRef),
            ("y", Arc::new(Float64Array::from(vec![row.y]))),
            ("i", Arc::new(Int64Array::from(vec![row.i]))),
            ("k", Arc::new(Int64Array::from(vec![row.k]))),
            ("j", Arc::new(Int32Array::from(vec![Some(1)]))),
            ("b", Arc::new(BooleanArray::from(vec![row.b]))),
            ("s", Arc::new(StringArray::from(vec![row.s]))),
        ])
        .unwrap()
    }

    /// `None`: an evaluation error.
    type Expected = Option<Scalar>;

    const I: DataType = DataType::Int64;
    const F: DataType = DataType::Float64;
    const B: DataType = DataType::Boolean;

    #[test]
    fn steps_give_the_hand_computed_values() {
        let nan = f64::NAN;
        #[rustfmt::skip]
        let cases: Vec<(&str, DataType, Scalar, Row, Expected)> = vec![
            // The rule's examples.
            ("prev + CASE WHEN s = 'B' THEN i ELSE -i END", I, Int(10), ROW, Some(Int(13))),
            ("prev + CASE WHEN s = 'B' THEN i ELSE -i END", I, Int(10), Row { s: None, ..ROW },
                Some(Int(7))),
            ("prev * 0.9 + i", I, Int(10), ROW, Some(Float(12.0))),
            ("greatest(prev, x)", F, Null, ROW, Some(Float(2.0))),
            // `/` is always on floats; division and % by zero (also -0.0) are null.
            ("i / prev", I, Int(2), ROW, Some(Float(1.5))),
            ("prev / 0", I, Int(7), ROW, Some(Null)),
            ("prev % 0", I, Int(7), ROW, Some(Null)),
            ("prev % 0.0", F, Float(1.5), ROW, Some(Null)),
            ("prev / -0.0", F, Float(1.0), ROW, Some(Null)),
            ("prev % k", I, Int(-7), ROW, Some(Int(-1))),
            ("prev % x", F, Float(-7.5), ROW, Some(Float(-1.5))),
            ("prev % -1", I, Int(i64::MIN), ROW, Some(Int(0))),
            ("prev + 99999999999999999999", F, Float(1.0), ROW, Some(Float(1e20))),
            // Integer overflow is an error, in a branch not taken too.
            ("prev * 2", I, Int(i64::MAX), ROW, None),
            ("prev - 9223372036854775807 - 2", I, Int(0), ROW, None),
            ("-prev", I, Int(i64::MIN), ROW, None),
            ("abs(prev)", I, Int(i64::MIN), ROW, None),
            ("CASE WHEN prev > 0 THEN prev ELSE prev * 9223372036854775807 END", I, Int(5), ROW,
                None),
            // PostgreSQL's float order: -0.0 = 0.0, NaN = NaN, NaN above every number.
            ("prev = -0.0", F, Float(0.0), ROW, Some(Bool(true))),
            ("prev = x", F, Float(nan), Row { x: Some(nan), ..ROW }, Some(Bool(true))),
            ("prev > x", F, Float(nan), Row { x: Some(f64::INFINITY), ..ROW }, Some(Bool(true))),
            ("prev < i", F, Float(2.5), ROW, Some(Bool(true))),
            ("least(prev, x)", F, Float(1.0), Row { x: Some(nan), ..ROW }, Some(Float(1.0))),
            ("greatest(prev, x)", F, Float(1.0), Row { x: Some(nan), ..ROW }, Some(Float(nan))),
            ("prev = NULL", I, Int(1), ROW, Some(Null)),
            // Three-valued logic.
            ("prev AND NULL", B, Bool(false), ROW, Some(Bool(false))),
            ("prev AND NULL", B, Bool(true), ROW, Some(Null)),
            ("prev OR NULL", B, Bool(true), ROW, Some(Bool(true))),
            ("prev OR b", B, Null, Row { b: Some(false), ..ROW }, Some(Null)),
            ("NOT prev", B, Null, ROW, Some(Null)),
            ("prev IS NULL", F, Float(nan), ROW, Some(Bool(false))),
            ("NOT prev IS NULL", B, Null, ROW, Some(Bool(false))),
            // BETWEEN is inclusive; IN is a chain of `=` joined by OR.
            ("prev BETWEEN i AND k", I, Int(3), ROW, Some(Bool(true))),
            ("prev NOT BETWEEN x AND y", F, Float(2.5), ROW, Some(Bool(false))),
            ("prev IN (0, 1, i)", I, Int(3), ROW, Some(Bool(true))),
            ("prev IN (NULL)", I, Int(1), ROW, Some(Null)),
            ("prev NOT IN (x, y, NULL)", F, Float(1.0), ROW, Some(Null)),
            ("prev NOT IN (x, y, NULL)", F, Float(2.0), ROW, Some(Bool(false))),
            // CASE: a null condition is false, no ELSE is null, branches share a type.
            ("CASE WHEN NULL THEN prev ELSE 0 END", I, Int(5), ROW, Some(Int(0))),
            ("CASE WHEN prev > 0 THEN NULL END", I, Int(-1), ROW, Some(Null)),
            ("CASE WHEN b THEN i ELSE prev END", F, Float(0.5), ROW, Some(Float(3.0))),
            ("CASE prev WHEN 0 THEN x WHEN i THEN y ELSE prev END", I, Int(3), ROW,
                Some(Float(3.0))),
            ("CASE prev WHEN 0 THEN x WHEN i THEN y ELSE prev END", I, Int(4), ROW,
                Some(Float(4.0))),
            // Functions: round half away from zero, integers unchanged; IEEE 754.
            ("round(prev)", F, Float(2.5), ROW, Some(Float(3.0))),
            ("round(prev)", F, Float(-2.5), ROW, Some(Float(-3.0))),
            ("round(prev)", I, Int(7), ROW, Some(Int(7))),
            ("floor(prev)", F, Float(-0.5), ROW, Some(Float(-1.0))),
            ("ceil(prev)", F, Float(-0.5), ROW, Some(Float(-0.0))),
            ("sqrt(prev)", F, Float(-1.0), ROW, Some(Float(nan))),
            ("ln(prev)", I, Int(0), ROW, Some(Float(f64::NEG_INFINITY))),
            ("log10(prev)", I, Int(1000), ROW, Some(Float(3.0))),
            ("exp(prev)", I, Int(0), ROW, Some(Float(1.0))),
            ("greatest(prev, NULL, i)", I, Null, ROW, Some(Int(3))),
            ("coalesce(prev, x, 0)", F, Null, Row { x: None, ..ROW }, Some(Float(0.0))),
            // Casts: floats truncated toward zero; CAST fails, TRY_CAST gives null.
            ("CAST(prev AS BIGINT)", F, Float(-2.7), ROW, Some(Int(-2))),
            ("CAST(prev AS BIGINT)", F, Float(-9223372036854775808.0), ROW, Some(Int(i64::MIN))),
            ("CAST(prev AS BIGINT)", F, Float(9.3e18), ROW, None),
            ("CAST(prev AS BIGINT)", F, Float(nan), ROW, None),
            ("TRY_CAST(prev AS BIGINT)", F, Float(nan), ROW, Some(Null)),
            ("CAST(prev AS DOUBLE)", B, Bool(true), ROW, Some(Float(1.0))),
            ("CAST(prev AS BOOLEAN)", I, Int(0), ROW, Some(Bool(false))),
            ("CAST(prev AS BOOLEAN)", I, Int(-3), ROW, Some(Bool(true))),
            ("CAST(prev IS NULL AS BIGINT)", F, Null, ROW, Some(Int(1))),
        ];
        let mut failures = Vec::new();
        for (text, var_type, prev, row, expected) in cases {
            let batch = batch(row);
            let step = Expr::parse(text)
                .unwrap()
                .recurrence("prev", &var_type, &batch.schema())
                .unwrap()
                .prepare(&batch)
                .unwrap()
                .step(0, prev);
            let (_, reference) = reference::expected(text, &batch, &var_type, &[prev]).unwrap();
            let agrees = |got: Option<Scalar>| match (got, expected) {
                (Some(got), Some(expected)) => same(got, expected),
                (got, expected) => got.is_none() && expected.is_none(),
            };
            if !agrees(step.as_ref().ok().copied()) || !agrees(reference[0].clone().ok()) {
                failures.push(format!(
                    "{text} with prev = {prev:?}: expected {expected:?}, step {step:?}, \
                     reference {:?}",
                    reference[0]
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
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
    fn every_step_equals_the_reference() {
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
        fn every_step_equals_the_reference((text, var_type, seed) in cases()) {
            let (batch, prevs) = Rows::new(seed).batch_and_prevs(&var_type);
            if let Err(message) = compare_with_reference(&text, &var_type, &batch, &prevs) {
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
