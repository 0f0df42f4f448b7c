//! `vizflow._vizflow`: the extension module under `import vizflow as vf`.
//!
//! The Python package (`python/python/vizflow`) wraps these functions and classes:
//! it turns the `pyarrow` tables they return into Polars frames (adopting the column
//! buffers, not copying them) and gives the API its Python shape. Everything here
//! calls the same code as the `vizflow` command line, so results and error messages
//! are the CLI's.
//!
//! | module | what it binds |
//! |---|---|
//! | [`errors`] | the exception classes and the mapping of the crate's errors to them |
//! | [`arrow_io`] | Arrow across the boundary: tables out, streams in, types normalised |
//! | [`pipeline`] | `Pipeline`: from TOML, from a dict, with Python rules |
//! | [`commands`] | `run`, `reduce`, `plot`: the CLI's commands as functions |
//! | [`engine`] | `Engine`: a live dataflow fed with frames |
//! | [`rule`] | rules written in Python, run inside the dataflow |
//! | [`kernels`] | the stateless operators on frames, markets and calendars |
//! | [`serve`] | the dashboard server, from a thread of its own |

use pyo3::prelude::*;

pub mod arrow_io;
pub mod commands;
pub mod engine;
pub mod errors;
pub mod kernels;
pub mod pipeline;
pub mod rule;
pub mod serve;

/// The extension module.
#[pymodule]
fn _vizflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<pipeline::PyPipeline>()?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<rule::PythonRule>()?;
    m.add_class::<serve::PyServer>()?;
    m.add_function(wrap_pyfunction!(serve::serve, m)?)?;
    m.add_function(wrap_pyfunction!(commands::run, m)?)?;
    m.add_function(wrap_pyfunction!(commands::reduce, m)?)?;
    m.add_function(wrap_pyfunction!(commands::plot, m)?)?;
    m.add_function(wrap_pyfunction!(arrow_io::buffer_address, m)?)?;
    m.add_function(wrap_pyfunction!(arrow_io::exported_probe, m)?)?;
    kernels::register(m)?;
    Ok(())
}
