//! From SQL text to the syntax tree: sqlparser's AST converted into [`Node`]s, with `BETWEEN`, `IN` and simple `CASE` rewritten.

use super::*;

pub(super) fn parse_sql(text: &str) -> Result<sql::Expr, ExprError> {
    let parse_error = |error: ParserError| ExprError::Parse {
        text: text.to_string(),
        message: match error {
            ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
            ParserError::RecursionLimitExceeded => "the expression is nested too deeply".into(),
        },
    };
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(parse_error)?;
    let expr = parser.parse_expr().map_err(parse_error)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError::Parse {
            text: text.to_string(),
            message: format!(
                "unexpected '{}' after the expression{}",
                next.token, next.span.start
            ),
        });
    }
    Ok(expr)
}

/// Converts sqlparser's syntax tree into [`Node`]s.
pub(super) struct Converter<'a> {
    pub(super) text: &'a str,
    /// The aggregate calls met so far when converting a metric, `None` for a scalar
    /// expression. In a metric each call becomes a column named [`AggregateCall::name`].
    pub(super) calls: Option<Vec<AggregateCall>>,
}

impl Converter<'_> {
    pub(super) fn convert(&mut self, expr: &sql::Expr) -> Result<Node, ExprError> {
        use sql::DateTimeField::NoDateTime;
        use sql::Expr as E;
        let boxed = |node| Box::new(node);
        Ok(match expr {
            E::Identifier(ident) => match self.calls {
                Some(_) => {
                    return Err(ExprError::BareColumn {
                        text: self.text.to_string(),
                        column: ident.value.clone(),
                    });
                }
                None => Node::Column(ident.value.clone()),
            },
            E::Value(value) => Node::Literal(self.literal(&value.value, expr)?),
            E::Nested(inner)
            | E::UnaryOp {
                op: sql::UnaryOperator::Plus,
                expr: inner,
            } => self.convert(inner)?,
            E::UnaryOp {
                op: sql::UnaryOperator::Minus,
                expr: inner,
            } => Node::Negate(boxed(self.convert(inner)?)),
            E::UnaryOp {
                op: sql::UnaryOperator::Not,
                expr: inner,
            } => Node::Not(boxed(self.convert(inner)?)),
            E::BinaryOp { left, op, right } => {
                let op = self.binary_op(op, expr)?;
                binary(op, self.convert(left)?, self.convert(right)?)
            }
            E::IsNull(arg) => Node::IsNull {
                arg: boxed(self.convert(arg)?),
                negated: false,
            },
            E::IsNotNull(arg) => Node::IsNull {
                arg: boxed(self.convert(arg)?),
                negated: true,
            },
            E::Between {
                expr: arg,
                negated,
                low,
                high,
            } => {
                let arg = self.convert(arg)?;
                let low = binary(BinaryOp::GtEq, arg.clone(), self.convert(low)?);
                let high = binary(BinaryOp::LtEq, arg, self.convert(high)?);
                negate_if(*negated, binary(BinaryOp::And, low, high))
            }
            E::InList {
                expr: arg,
                list,
                negated,
            } => negate_if(*negated, self.in_list(arg, list, expr)?),
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref())?,
            E::Function(function) => self.function(function, expr)?,
            // sqlparser parses these two itself, for their `TO <field>` and scale forms.
            E::Floor {
                expr: arg,
                field: sql::CeilFloorKind::DateTimeField(NoDateTime),
            } => Node::Call(Function::Floor, vec![self.convert(arg)?]),
            E::Ceil {
                expr: arg,
                field: sql::CeilFloorKind::DateTimeField(NoDateTime),
            } => Node::Call(Function::Ceil, vec![self.convert(arg)?]),
            E::Cast {
                kind,
                expr: arg,
                data_type,
                format: None,
            } => {
                let to = self.cast_type(data_type, expr)?;
                let strict = matches!(kind, sql::CastKind::Cast | sql::CastKind::DoubleColon);
                Node::Cast {
                    arg: boxed(self.convert(arg)?),
                    to,
                    strict,
                }
            }
            other => return Err(self.unsupported(&construct_name(other), expr)),
        })
    }

    /// An SQL binary operator; `expr` is the whole expression, for errors.
    fn binary_op(&self, op: &sql::BinaryOperator, expr: &sql::Expr) -> Result<BinaryOp, ExprError> {
        use sql::BinaryOperator as B;
        Ok(match op {
            B::Plus => BinaryOp::Add,
            B::Minus => BinaryOp::Sub,
            B::Multiply => BinaryOp::Mul,
            B::Divide => BinaryOp::Div,
            B::Modulo => BinaryOp::Rem,
            B::Eq => BinaryOp::Eq,
            B::NotEq => BinaryOp::NotEq,
            B::Lt => BinaryOp::Lt,
            B::LtEq => BinaryOp::LtEq,
            B::Gt => BinaryOp::Gt,
            B::GtEq => BinaryOp::GtEq,
            B::And => BinaryOp::And,
            B::Or => BinaryOp::Or,
            other => return Err(self.unsupported(&format!("operator '{other}'"), expr)),
        })
    }

    /// `arg IN (list)`: `arg = a OR arg = b OR ...`.
    fn in_list(
        &mut self,
        arg: &sql::Expr,
        list: &[sql::Expr],
        expr: &sql::Expr,
    ) -> Result<Node, ExprError> {
        let arg = self.convert(arg)?;
        let mut any = None;
        for item in list {
            let equal = binary(BinaryOp::Eq, arg.clone(), self.convert(item)?);
            any = Some(match any {
                Some(any) => binary(BinaryOp::Or, any, equal),
                None => equal,
            });
        }
        any.ok_or_else(|| self.unsupported("empty IN list", expr))
    }

    /// `CASE [operand] WHEN ... THEN ... [ELSE ...] END`; with an operand, each `WHEN`
    /// value is compared with it.
    fn case(
        &mut self,
        operand: Option<&sql::Expr>,
        conditions: &[sql::CaseWhen],
        else_result: Option<&sql::Expr>,
    ) -> Result<Node, ExprError> {
        let operand = operand.map(|operand| self.convert(operand)).transpose()?;
        let mut branches = Vec::with_capacity(conditions.len());
        for when in conditions {
            let condition = self.convert(&when.condition)?;
            let condition = match &operand {
                Some(operand) => binary(BinaryOp::Eq, operand.clone(), condition),
                None => condition,
            };
            branches.push((condition, self.convert(&when.result)?));
        }
        let otherwise = else_result.map(|e| self.convert(e)).transpose()?;
        Ok(Node::Case {
            branches,
            otherwise: otherwise.map(Box::new),
        })
    }

    /// The type of an SQL `CAST`.
    fn cast_type(
        &self,
        data_type: &sql::DataType,
        expr: &sql::Expr,
    ) -> Result<DataType, ExprError> {
        use sql::DataType as T;
        Ok(match data_type {
            T::BigInt(_) | T::Int(_) | T::Integer(_) | T::Int64 => DataType::Int64,
            T::Double(_) | T::DoublePrecision | T::Float(_) | T::Real | T::Float64 => {
                DataType::Float64
            }
            T::Varchar(_) | T::Text | T::String(_) => DataType::Utf8,
            T::Boolean | T::Bool => DataType::Boolean,
            other => return Err(self.unsupported(&format!("cast to {other}"), expr)),
        })
    }

    pub(super) fn literal(
        &self,
        value: &sql::Value,
        expr: &sql::Expr,
    ) -> Result<ArrayRef, ExprError> {
        Ok(match value {
            sql::Value::Number(digits, _) => match digits.parse::<i64>() {
                Ok(integer) => Arc::new(Int64Array::from(vec![integer])),
                Err(_) => match digits.parse::<f64>() {
                    Ok(float) => Arc::new(Float64Array::from(vec![float])),
                    Err(_) => return Err(self.unsupported("number", expr)),
                },
            },
            sql::Value::SingleQuotedString(text) => {
                Arc::new(StringArray::from(vec![text.as_str()]))
            }
            sql::Value::Boolean(flag) => Arc::new(BooleanArray::from(vec![*flag])),
            sql::Value::Null => Arc::new(NullArray::new(1)),
            _ => return Err(self.unsupported("literal", expr)),
        })
    }

    pub(super) fn function(
        &mut self,
        function: &sql::Function,
        expr: &sql::Expr,
    ) -> Result<Node, ExprError> {
        if function.over.is_some() {
            return Err(self.unsupported("window function", expr));
        }
        let plain = function.filter.is_none()
            && function.within_group.is_empty()
            && function.null_treatment.is_none()
            && matches!(function.parameters, sql::FunctionArguments::None);
        let (name, args) = match (function.name.0.as_slice(), &function.args) {
            ([sql::ObjectNamePart::Identifier(name)], sql::FunctionArguments::List(list))
                if plain && list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
            {
                (name.value.to_lowercase(), &list.args)
            }
            _ => return Err(self.unsupported("function call", expr)),
        };
        // `None` is `*`, as in `count(*)`.
        let mut arguments = Vec::with_capacity(args.len());
        for arg in args {
            arguments.push(match arg {
                sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(arg)) => Some(arg),
                sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard) => None,
                _ => return Err(self.unsupported("function argument", expr)),
            });
        }
        if let Some(aggregate) = AggregateFunction::from_name(&name) {
            return self.aggregate(aggregate, &arguments, expr);
        }
        let Some(&(_, function)) = FUNCTIONS.iter().find(|(known, _)| *known == name) else {
            return Err(ExprError::UnknownFunction {
                text: self.text.to_string(),
                suggestion: closest(&name, FUNCTIONS.map(|(known, _)| known)).map(str::to_string),
                function: name,
            });
        };
        let arity_ok = match function.variadic() {
            true => !arguments.is_empty(),
            false => arguments.len() == 1,
        };
        if !arity_ok {
            return Err(ExprError::Arity {
                text: self.text.to_string(),
                function: name,
                expected: if function.variadic() {
                    "1 or more arguments"
                } else {
                    "1 argument"
                },
                got: arguments.len(),
            });
        }
        let args = arguments
            .into_iter()
            .map(|arg| match arg {
                Some(arg) => self.convert(arg),
                None => Err(self.unsupported("'*' argument", expr)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Node::Call(function, args))
    }

    pub(super) fn aggregate(
        &mut self,
        function: AggregateFunction,
        args: &[Option<&sql::Expr>],
        expr: &sql::Expr,
    ) -> Result<Node, ExprError> {
        let text = self.text.to_string();
        if self.calls.is_none() {
            return Err(self.unsupported("aggregate function", expr));
        }
        let call = match (function, args) {
            (AggregateFunction::Count, [] | [None]) => AggregateCall {
                function: AggregateFunction::CountRows,
                column: None,
            },
            (_, [Some(sql::Expr::Identifier(column))]) => AggregateCall {
                function,
                column: Some(column.value.clone()),
            },
            (_, [None]) => return Err(self.unsupported("'*' argument", expr)),
            (_, [Some(sql::Expr::Function(inner))])
                if inner.name.0.len() == 1
                    && AggregateFunction::from_name(&inner.name.to_string().to_lowercase())
                        .is_some() =>
            {
                return Err(ExprError::NestedAggregate {
                    text,
                    call: expr.to_string(),
                });
            }
            (_, [Some(argument)]) => {
                return Err(ExprError::AggregateArgument {
                    text,
                    call: expr.to_string(),
                    argument: argument.to_string(),
                });
            }
            _ => {
                return Err(ExprError::Arity {
                    text,
                    function: function.name().to_string(),
                    expected: "1 column argument",
                    got: args.len(),
                });
            }
        };
        let name = call.name();
        let calls = self.calls.as_mut().expect("only metrics collect calls");
        if !calls.contains(&call) {
            calls.push(call);
        }
        Ok(Node::Column(name))
    }

    pub(super) fn unsupported(&self, construct: &str, expr: &sql::Expr) -> ExprError {
        ExprError::Unsupported {
            text: self.text.to_string(),
            construct: construct.to_string(),
            fragment: expr.to_string(),
        }
    }
}

pub(super) fn binary(op: BinaryOp, left: Node, right: Node) -> Node {
    Node::Binary(op, Box::new(left), Box::new(right))
}

pub(super) fn negate_if(negated: bool, node: Node) -> Node {
    if negated {
        Node::Not(Box::new(node))
    } else {
        node
    }
}

/// sqlparser's variant name in words, e.g. `InSubquery` -> `in subquery`.
pub(super) fn construct_name(expr: &sql::Expr) -> String {
    let debug = format!("{expr:?}");
    let variant = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut name = String::new();
    for c in variant.chars() {
        if c.is_uppercase() && !name.is_empty() {
            name.push(' ');
        }
        name.extend(c.to_lowercase());
    }
    name
}
