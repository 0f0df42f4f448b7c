//! `vizflow.serve`: the dashboard of a directory of partials (`vizflow serve`), served
//! from a thread of its own while Python goes on; stopped by `Server.stop()` (Ctrl-C
//! stays Python's).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vizflow::serve::{DEFAULT_MAX_GROUPS, ServeError, ServeOptions, serve_until};

use crate::errors;

/// A running dashboard server.
#[pyclass(name = "Server", module = "vizflow")]
pub struct PyServer {
    address: SocketAddr,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<Result<(), ServeError>>>>,
}

/// Serves the dashboard of the partials in `dir` on `bind` (loopback, any free port
/// by default) until the returned server is stopped.
#[pyfunction]
#[pyo3(signature = (dir, bind="127.0.0.1:0", max_groups=DEFAULT_MAX_GROUPS, header_timeout=10.0))]
pub fn serve(
    py: Python<'_>,
    dir: PathBuf,
    bind: &str,
    max_groups: usize,
    header_timeout: f64,
) -> PyResult<PyServer> {
    let bind: SocketAddr = bind.parse().map_err(|e| {
        PyValueError::new_err(format!(
            "bind={bind:?}: {e}; write an address such as 127.0.0.1:8050"
        ))
    })?;
    let options = ServeOptions {
        dir,
        bind,
        max_groups,
        layout: None,
        header_timeout: Duration::from_secs_f64(header_timeout.max(0.001)),
    };
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vizflow-serve".into())
        .spawn(move || {
            serve_until(
                &options,
                |address| {
                    let _ = ready_tx.send(address);
                },
                async move {
                    let _ = stop_rx.await;
                },
            )
        })
        .map_err(|e| errors::EngineError::new_err(format!("cannot start the server: {e}")))?;
    match py.detach(|| ready_rx.recv()) {
        Ok(address) => Ok(PyServer {
            address,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }),
        // The server ended before it listened: its error.
        Err(_) => {
            let ended = py.detach(|| thread.join());
            let message = match ended {
                Ok(Err(error)) => error.to_string(),
                Ok(Ok(())) => "the server stopped before it listened".to_owned(),
                Err(_) => "the server panicked".to_owned(),
            };
            Err(errors::DataError::new_err(message))
        }
    }
}

#[pymethods]
impl PyServer {
    /// The page's address, e.g. `http://127.0.0.1:8050/`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Stops the server and waits for it (the connections open are closed).
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            match py.detach(|| thread.join()) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(errors::DataError::new_err(error.to_string())),
                Err(_) => return Err(errors::EngineError::new_err("the server panicked")),
            }
        }
        Ok(())
    }

    /// True while the server runs.
    #[getter]
    fn running(&self) -> bool {
        (self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref())
        .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        if let Some(stop) = self
            .stop
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        // The thread ends on its own once stopped; it is not waited for here.
    }
}
