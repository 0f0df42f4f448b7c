//! Whose fault an error is, as every error type of the operators says with a `fault()`
//! method (Arroyo's error domains): a failed date tells the user whether to fix the
//! data, fix the pipeline, or report a bug.

/// Whose fault an error is: what has to change for the error to go away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The input data: a value, a row or a file that the pipeline cannot process as
    /// written (a timestamp outside the sessions, a quantity that is not an integer).
    Data,
    /// The pipeline's configuration: a column, type, expression or setting that does not
    /// fit the input (an unknown column, a condition that is not boolean).
    Config,
    /// A bug: in VizFlow, or in a rule written in Rust that broke the rule interface's
    /// contract (columns of the wrong length, rows out of order).
    Bug,
}
