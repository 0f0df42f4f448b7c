"""VizFlow from Python: per-date market-data analysis on a Rust dataflow engine.

>>> import vizflow as vf
>>> p = vf.Pipeline.from_toml("examples/alpha_markout.toml")
>>> df = vf.run(p, input_dir="data", dates="20240102..20240105", output_dir="out/am")
>>> m = vf.reduce("out/am", by=["alpha1_bin"])

Results are Polars DataFrames that adopt the engine's Arrow buffers (no copy of their
numeric columns); inputs are anything exporting Arrow (Polars, pyarrow). The functions call the same code as
the ``vizflow`` command line: results, files and error messages are the CLI's.
"""

from __future__ import annotations

import datetime as _dt
import hashlib as _hashlib
import atexit as _atexit
import inspect as _inspect
import json as _json
import os as _os
import weakref as _weakref
from dataclasses import dataclass as _dataclass, field as _field
from typing import Any, Callable, Iterator, Mapping, Sequence

import polars as pl
import pyarrow as pa

from . import _vizflow
from ._vizflow import (
    DataError,
    EngineError,
    PipelineError,
    ReduceError,
    VizflowError,
    __version__,
)
from . import calendar, markets, plot

__all__ = [
    "Pipeline",
    "Rule",
    "rule",
    "run",
    "reduce",
    "serve",
    "Server",
    "Engine",
    "DateResult",
    "plot",
    "calendar",
    "markets",
    "parse_time",
    "forward_return",
    "fifo_match",
    "bin",
    "VizflowError",
    "PipelineError",
    "DataError",
    "EngineError",
    "ReduceError",
    "__version__",
]

Pipeline = _vizflow.Pipeline
Rule = _vizflow.Rule


def _frame(table: pa.Table) -> pl.DataFrame:
    """A Polars frame over a pyarrow table's buffers (no copy of numeric columns)."""
    return pl.from_arrow(table, rechunk=False)  # type: ignore[return-value]


def _concat(tables: Sequence[pa.Table]) -> pl.DataFrame:
    frames = [_frame(t) for t in tables]
    if not frames:
        return pl.DataFrame()
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="diagonal_relaxed", rechunk=False)


def _date_text(date: str | int | _dt.date) -> str:
    if isinstance(date, _dt.date):
        return date.strftime("%Y%m%d")
    return str(date)


def _dates_spec(dates: str | Sequence[str | int | _dt.date] | None) -> str | None:
    if dates is None or isinstance(dates, str):
        return dates
    return ",".join(_date_text(d) for d in dates)


def run(
    pipeline: Pipeline,
    input_dir: str | _os.PathLike[str] | None = None,
    dates: str | Sequence[str | int | _dt.date] | None = None,
    workers: int | None = None,
    output_dir: str | _os.PathLike[str] | None = None,
    skip_existing: bool = False,
    *,
    progress: str = "auto",
    fail_fast: bool = False,
) -> pl.DataFrame:
    """Runs ``pipeline`` over the dates, as ``vizflow run`` does.

    Returns every date's partial (its groups and metrics; the exact-sum columns that
    merging needs stay in the files) with a leading ``date`` column. With
    ``output_dir`` the partials and reports are written there (``skip_existing``
    keeps those made by the same pipeline); without it they go to a temporary
    directory that is removed.

    ``dates``: ``"20240102..20240131"``, ``"20240102,20240103"``, one date, or a list
    of dates; all of the calendar's when ``None``. ``workers`` defaults to the
    machine's cores. ``progress``: ``"auto"`` (a bar on a terminal, log lines
    otherwise), ``"log"`` or ``"quiet"``.

    Raises ``DataError`` when a date failed (the message lists them as the CLI
    does), ``PipelineError`` when the pipeline does not fit the data, and
    ``KeyboardInterrupt`` on Ctrl-C (the dates in flight finish and are written, no
    date is begun after).
    """
    tables, summary = _vizflow.run(
        pipeline,
        input_dir=None if input_dir is None else _os.fspath(input_dir),
        dates=_dates_spec(dates),
        workers=workers,
        output_dir=None if output_dir is None else _os.fspath(output_dir),
        skip_existing=skip_existing,
        progress=progress,
        fail_fast=fail_fast,
    )
    run.last_summary = _json.loads(summary)  # type: ignore[attr-defined]
    return _concat(tables)


def reduce(
    dir: str | _os.PathLike[str],
    dates: str | Sequence[str | int | _dt.date] | None = None,
    by: Sequence[str] | None = None,
    where: str | None = None,
    metrics: Mapping[str, str] | None = None,
    *,
    rebin: Mapping[str, int] | None = None,
    live: bool = False,
    allow_mixed: bool = False,
) -> pl.DataFrame:
    """Merges the partials in ``dir`` exactly, as ``vizflow reduce`` does.

    ``by``: the columns to group by (the partials' own by default; also ``month``,
    ``weekday``, ``year``); ``where``: a SQL condition over them and ``date``;
    ``metrics``: new metrics ``{name: expression over aggregate calls}``;
    ``rebin``: ``{bin column: odd factor}``; ``live``: also the provisional partials
    of open dates. Each bin column is followed by its value in the source's units.
    """
    table, _dates, _provisional = _vizflow.reduce(
        _os.fspath(dir),
        dates=_dates_spec(dates),
        by=None if by is None else list(by),
        where=where,
        metrics=list((metrics or {}).items()),
        rebin=list((rebin or {}).items()),
        live=live,
        allow_mixed=allow_mixed,
    )
    return _frame(table)


class Server:
    """The dashboard of a directory of partials, served from a thread while Python goes
    on (``vizflow serve``). Open ``url`` in a browser; ``stop()`` ends it (also on
    leaving a ``with`` block, and when the interpreter exits)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    @property
    def url(self) -> str:
        """The page, e.g. ``http://127.0.0.1:8050/``."""
        return self._server.url

    @property
    def running(self) -> bool:
        """True until stopped."""
        return self._server.running

    def stop(self) -> None:
        """Stops the server and waits for it."""
        self._server.stop()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        return f'VizFlow dashboard: <a href="{self.url}" target="_blank">{self.url}</a>'

    def __repr__(self) -> str:
        return f"Server({self.url}, {'running' if self.running else 'stopped'})"


def serve(dir: str | _os.PathLike[str], bind: str = "127.0.0.1:0", *, max_groups: int = 200_000) -> Server:
    """Serves the dashboard of the partials in ``dir`` (heatmap, lines and table, merged
    exactly; with the provisional partials of open dates) on ``bind``: loopback and a
    free port by default; ``0.0.0.0:PORT`` must be asked for. Returns at once."""
    server = Server(_vizflow.serve(_os.fspath(dir), bind=bind, max_groups=max_groups))
    _atexit.register(server._server.stop)
    return server


# ---- rules written in Python ----------------------------------------------------


def _arrow_type(dtype: Any) -> pa.DataType:
    if isinstance(dtype, pa.DataType):
        return dtype
    return pl.Series("x", [], dtype=dtype).to_arrow().type


def _fingerprint(function: Callable[..., Any], version: str | None) -> str:
    """What defines the rule's results as far as can be seen: its source (or code), the
    values it closes over, its defaults, and ``version``. A rule reading other state
    (globals, files) says so by changing ``version``."""
    try:
        source = _inspect.getsource(function)
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        source = repr(code.co_code) + repr(code.co_consts) if code else repr(function)
    closure = [c.cell_contents for c in (getattr(function, "__closure__", None) or ())
               if not callable(c.cell_contents)]
    parts = [source, repr(closure), repr(getattr(function, "__defaults__", None)), repr(version)]
    return _hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def rule(
    inputs: Sequence[str],
    outputs: Mapping[str, Any],
    name: str | None = None,
    version: str | None = None,
) -> Callable[[Callable[[pl.DataFrame], Any]], Rule]:
    """Makes a rule of a vectorised function, to add with ``Pipeline.with_rule``.

    The function gets one symbol's rows of a date in event order as a Polars
    DataFrame (the ``inputs`` columns, ``elapsed_ms`` and ``row_id``) and returns a
    DataFrame (or a dict of Series) with the ``outputs`` columns, one value per row.
    ``outputs`` maps each name to its type (a Polars or pyarrow type). It runs
    inside the dataflow, once per symbol and date, holding the GIL.

    The pipeline's hash (which ``skip_existing`` compares) covers the function's
    source, the values it closes over and its defaults; change ``version`` when its
    results change for another reason (a global, a file it reads).

    >>> @vf.rule(inputs=["qty", "orderSide"], outputs={"position": pl.Int64})
    ... def position(rows):
    ...     signed = pl.when(rows["orderSide"] == "B").then(rows["qty"]).otherwise(-rows["qty"])
    ...     return rows.select(position=signed.cum_sum())
    """

    def make(function: Callable[[pl.DataFrame], Any]) -> Rule:
        names = list(outputs)

        def call(batch: pa.RecordBatch, runs: list[int]) -> tuple[pa.Table | None, str | None]:
            # One frame over the chunk's rows; the function sees each symbol's slice.
            frame = pl.from_arrow(batch, rechunk=False)
            outs = []
            for start, end in zip(runs, runs[1:]):
                if start == end:
                    continue
                out = function(frame.slice(start, end - start))
                if not isinstance(out, pl.DataFrame):
                    out = pl.DataFrame(out)
                # Which symbol: its first row, by its place in the date's file.
                where = f"the symbol of row_id {frame['row_id'][start]}"
                if out.height != end - start:
                    return None, (f"the function returned {out.height} rows for {end - start} "
                                  f"({where}); return one row per row")
                missing = [n for n in names if n not in out.columns]
                if missing:
                    return None, (f"the function returned no column '{missing[0]}' for {where} "
                                  f"(it returned {', '.join(out.columns)})")
                outs.append(out.select(names))
            if not outs:
                return None, None
            return pl.concat(outs, how="vertical_relaxed", rechunk=False).to_arrow(), None

        return Rule(
            name or function.__name__,
            list(inputs),
            [(n, _arrow_type(t)) for n, t in outputs.items()],
            call,
            _fingerprint(function, version),
        )

    return make


# ---- the engine -------------------------------------------------------------------


@_dataclass
class DateResult:
    """A date's result from an ``Engine``: final, or provisional at ``watermark_ms``."""

    date: _dt.date
    final: bool
    watermark_ms: int | None
    partial: pl.DataFrame | None
    errors: list[str] = _field(default_factory=list)
    report: dict[str, Any] = _field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the date did not fail."""
        return self.partial is not None


def _result(item: tuple) -> DateResult:
    date, final, watermark, table, errors, report = item
    return DateResult(
        date=_dt.datetime.strptime(date, "%Y%m%d").date(),
        final=final,
        watermark_ms=watermark,
        partial=None if table is None else _frame(table),
        errors=list(errors),
        report=_json.loads(report) if report else {},
    )


def _arrow_schema(schema: Any) -> pa.Schema:
    if isinstance(schema, pa.Schema):
        return schema
    if isinstance(schema, Mapping) or isinstance(schema, pl.Schema):
        return pl.DataFrame(schema=schema).to_arrow().schema
    raise TypeError(f"schema: a Polars schema, a dict of column types or a pyarrow schema; got {type(schema).__name__}")


class Engine:
    """A running dataflow of a pipeline, fed with frames date by date.

    >>> e = vf.Engine(p, schema=frame.schema, workers=2)
    >>> e.begin_date("20240102"); e.push(frame)
    >>> for r in e.results(): ...          # provisional and final partials so far
    >>> partials = e.finish()              # the final partials of the rest

    ``push`` takes anything exporting Arrow with the pipeline's input columns, and a
    ``row_id`` column (any integer type) when present: the row's position in the
    date's file, so that results do not depend on push order (otherwise rows are
    numbered in push order). Under ``[stream]`` the watermark follows the rows;
    ``advance`` moves it for an idle producer.
    """

    def __init__(self, pipeline: Pipeline, schema: Any, workers: int | None = None) -> None:
        self._engine = _vizflow.Engine(pipeline, _arrow_schema(schema), workers)
        self._pending: list[DateResult] | None = None
        _open_engines.add(self)

    def begin_date(self, date: str | int | _dt.date) -> None:
        """Starts feeding ``date``; dates must increase."""
        self._engine.begin_date(_date_text(date))

    def push(self, frame: Any) -> None:
        """Pushes rows of the current date."""
        self._engine.push(frame)

    def advance(self, elapsed_ms: int) -> None:
        """Says no row of the current date earlier than ``elapsed_ms`` will come."""
        self._engine.advance(int(elapsed_ms))

    def end_date(self) -> None:
        """Ends the current date without beginning another."""
        self._engine.end_date()

    def results(self) -> Iterator[DateResult]:
        """The results that have come out: completed dates' (waiting for them) and the
        current date's provisional ones so far."""
        if self._pending is not None:
            pending, self._pending = self._pending, []
            yield from pending
            return
        while (item := self._engine.next_result()) is not None:
            yield _result(item)

    def finish(self) -> pl.DataFrame:
        """Closes the input, waits for the remaining dates and stops the workers.

        Returns the final partials not taken from ``results()``, with a ``date``
        column (the provisional results that came out meanwhile stay for
        ``results()``); raises ``DataError`` naming the dates that failed, with the
        others' partials as its ``partials``.
        """
        results = [_result(item) for item in self._engine.finish()]
        # The provisional results that came out as the dates closed: results() gives them.
        self._pending = [r for r in results if not r.final]
        _open_engines.discard(self)
        frames = [r.partial for r in results if r.final and r.partial is not None]
        partials = pl.concat(frames, how="diagonal_relaxed", rechunk=False) if frames else pl.DataFrame()
        failed = [r for r in results if r.final and not r.ok]
        if failed:
            lines = "\n".join(f"  FAILED {r.date:%Y%m%d}: {'; '.join(r.errors)}" for r in failed)
            error = DataError(f"{len(failed)} dates failed:\n{lines}")
            error.partials = partials  # type: ignore[attr-defined]
            raise error
        return partials


# Engines not finished when the interpreter exits are stopped then, while rules
# written in Python can still run (not later, from a finalizer).
_open_engines: "_weakref.WeakSet[Engine]" = _weakref.WeakSet()


@_atexit.register
def _close_open_engines() -> None:
    for engine in list(_open_engines):
        engine._engine.close()


# ---- stateless operators on frames ------------------------------------------------


def _time_sections(
    timestamp: str, symbol: str, market: str | Mapping[str, Any], format: str | None, out_of_session: str | None
) -> dict[str, Any]:
    time: dict[str, Any] = {"market": market}
    if format is not None:
        time["format"] = format
    if out_of_session is not None:
        time["out_of_session"] = out_of_session
    return {
        "input": {"dir": ".", "pattern": "{date}.feather"},
        "output": {"dir": "."},
        "columns": {"timestamp": timestamp, "symbol": symbol},
        "time": time,
        "aggregate": {"group_by": [], "metrics": {"count": "count()"}},
    }


def _stages(frame: Any, sections: Mapping[str, Any], date: str | int | _dt.date, after: str,
            outputs: Sequence[str] = ()) -> pl.DataFrame:
    sections = dict(sections)
    # A pipeline computes only what its metrics use: count each output.
    metrics = {"count": "count()", **{f"count_{c}": f"count({c})" for c in outputs}}
    sections["aggregate"] = {"group_by": [], "metrics": metrics}
    text = Pipeline.from_dict(sections).to_toml()
    return _frame(_vizflow.stages(frame, text, _date_text(date), after))


def parse_time(
    frame: Any,
    date: str | int | _dt.date,
    *,
    timestamp: str,
    market: str | Mapping[str, Any] = "CN",
    format: str | None = None,
    out_of_session: str | None = None,
) -> pl.DataFrame:
    """Adds ``elapsed_ms`` (trading time since the open) and ``elapsed_seconds`` to a
    frame of ``date``'s rows, as ``[time]`` does; ``row_id`` numbers the rows (their
    position) unless the frame has it. ``out_of_session``: ``"clamp"`` (default),
    ``"drop"`` or ``"error"``."""
    frame = frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(frame)
    # The stage needs a symbol column; time parsing does not read it.
    key = "__vizflow_symbol"
    sections = _time_sections(timestamp, key, market, format, out_of_session)
    out = _stages(frame.with_columns(pl.lit("").alias(key)), sections, date, "parse_time")
    return out.drop(key)


def forward_return(
    frame: Any,
    date: str | int | _dt.date,
    *,
    price: str,
    horizons: Sequence[int | str],
    timestamp: str,
    symbol: str,
    market: str | Mapping[str, Any] = "CN",
    format: str | None = None,
    out_of_session: str | None = None,
) -> pl.DataFrame:
    """Adds ``return_{h}`` per horizon (seconds, ``"close"``) to a frame of
    ``date``'s rows, as ``[forward_return]`` does (returns to the next trading day
    are null here: a frame has no next day)."""
    sections = _time_sections(timestamp, symbol, market, format, out_of_session)
    sections["forward_return"] = {"price": price, "horizons": list(horizons)}
    return _stages(frame, sections, date, "enrich", [f"return_{h}" for h in horizons])


def fifo_match(
    frame: Any,
    date: str | int | _dt.date,
    *,
    side: str,
    qty: str,
    timestamp: str,
    symbol: str,
    price: str | None = None,
    entry_side: str = "B",
    exit_side: str = "S",
    market: str | Mapping[str, Any] = "CN",
    format: str | None = None,
    out_of_session: str | None = None,
) -> pl.DataFrame:
    """Matches exits against entries first in, first out per symbol, as the
    ``FIFOMatch`` rule does (an exit is split over the lots it closes)."""
    sections = _time_sections(timestamp, symbol, market, format, out_of_session)
    rule_: dict[str, Any] = {"rule": "FIFOMatch", "side": side, "qty": qty,
                             "entry_side": entry_side, "exit_side": exit_side}
    if price is not None:
        rule_["price"] = price
    sections["enrich"] = [rule_]
    outputs = ["matched_qty", "holding_period", "is_closed"] + (["matched_entry_price"] if price else [])
    return _stages(frame, sections, date, "enrich", outputs)


def bin(frame: Any, widths: Mapping[str, float]) -> pl.DataFrame:
    """Adds ``{column}_bin`` for each ``{column: width}``: the value divided by the
    width, rounded half away from zero, as ``[bin]`` does."""
    out = pl.DataFrame(frame) if not isinstance(frame, pl.DataFrame) else frame
    table = _vizflow.bin(out, list(widths.items()))
    return _frame(table)
