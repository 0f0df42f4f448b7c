"""Type stubs of the extension module `vizflow._vizflow` (the Rust side).

The public API is `vizflow` (``__init__.py``, typed inline); these are the functions
and classes it wraps.
"""

from __future__ import annotations

from typing import Any, Callable

import pyarrow as pa

__version__: str

class VizflowError(Exception): ...
class PipelineError(VizflowError): ...
class DataError(VizflowError): ...
class EngineError(VizflowError): ...
class ReduceError(VizflowError): ...

class Pipeline:
    """A validated pipeline (the TOML format of ``vizflow run``)."""

    @staticmethod
    def from_toml(path: str | Any) -> Pipeline: ...
    @staticmethod
    def from_toml_str(text: str) -> Pipeline: ...
    @staticmethod
    def from_dict(d: dict[str, Any]) -> Pipeline: ...
    def to_toml(self) -> str: ...
    def with_rule(self, rule: Rule) -> Pipeline: ...
    @property
    def hash(self) -> str: ...
    @property
    def input_dir(self) -> str: ...
    @property
    def output_dir(self) -> str: ...
    @property
    def metrics(self) -> list[str]: ...
    @property
    def group_by(self) -> list[str]: ...

class Rule:
    """A rule written in Python (made by ``vizflow.rule``)."""

    def __init__(
        self,
        name: str,
        inputs: list[str],
        outputs: list[tuple[str, pa.DataType]],
        call: Callable[[pa.RecordBatch], Any],
        fingerprint: str,
    ) -> None: ...
    @property
    def name(self) -> str: ...

ResultTuple = tuple[str, bool, int | None, pa.Table | None, list[str], str]

class Engine:
    def __init__(self, pipeline: Pipeline, schema: pa.Schema, workers: int | None = None) -> None: ...
    def begin_date(self, date: str) -> None: ...
    def push(self, frame: Any) -> None: ...
    def advance(self, elapsed_ms: int) -> None: ...
    def end_date(self) -> None: ...
    def next_result(self) -> ResultTuple | None: ...
    def finish(self) -> list[ResultTuple]: ...

def run(
    pipeline: Pipeline,
    input_dir: str | None = None,
    dates: str | None = None,
    workers: int | None = None,
    output_dir: str | None = None,
    skip_existing: bool = False,
    progress: str = "auto",
    fail_fast: bool = False,
) -> tuple[list[pa.Table], str]: ...
def reduce(
    dir: str,
    dates: str | None = None,
    by: list[str] | None = None,
    where: str | None = None,
    metrics: list[tuple[str, str]] = ...,
    rebin: list[tuple[str, int]] = ...,
    live: bool = False,
    allow_mixed: bool = False,
) -> tuple[pa.Table, list[str], list[str]]: ...
def plot(
    dir: str,
    kind: str,
    x: str,
    y: list[str],
    path: str,
    color: str | None = None,
    min_count: int = 0,
    dates: str | None = None,
    where: str | None = None,
    live: bool = False,
) -> int: ...
def plot_table(
    table: Any,
    kind: str,
    x: str,
    y: list[str],
    path: str,
    color: str | None = None,
    min_count: int = 0,
    name: str = "frame",
) -> int: ...
def stages(table: Any, toml: str, date: str, after: str) -> pa.Table: ...
def bin(table: Any, widths: list[tuple[str, float]]) -> pa.Table: ...
def market(name: str) -> tuple[str, str, list[tuple[str, str]], int]: ...
def market_presets() -> list[str]: ...
def calendar_dates(path: str | None = None, dir: str | None = None, pattern: str | None = None) -> list[str]: ...
def buffer_address(object: Any, column: str) -> int: ...
