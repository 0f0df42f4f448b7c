"""Figures of merged partials: heatmaps and lines as PNG, SVG or a self-contained HTML
page, as ``vizflow plot`` draws them. In a notebook a figure shows itself."""

from __future__ import annotations

import os as _os
import tempfile as _tempfile
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from . import _vizflow

__all__ = ["Figure", "heatmap", "line"]


class Figure:
    """A drawn figure: its bytes and format; shows itself in a notebook."""

    def __init__(self, data: bytes, format: str, path: Path | None, groups: int) -> None:
        self.data = data
        self.format = format
        self.path = path
        self.groups = groups

    def save(self, path: str | _os.PathLike[str]) -> Path:
        """Writes the figure to ``path`` (of this figure's format)."""
        path = Path(path)
        if path.suffix.lstrip(".") != self.format:
            raise ValueError(f"{path}: this figure is {self.format}; draw it again to change format")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.data)
        tmp.replace(path)
        return path

    def _repr_png_(self) -> bytes | None:
        return self.data if self.format == "png" else None

    def _repr_svg_(self) -> str | None:
        return self.data.decode() if self.format == "svg" else None

    def _repr_html_(self) -> str | None:
        return self.data.decode() if self.format == "html" else None

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"Figure({self.format}, {self.groups} groups{where})"


def _draw(source: Any, kind: str, x: str, y: Sequence[str], path: str | _os.PathLike[str] | None,
          color: str | None, min_count: int, dates: Any, where: str | None, live: bool) -> Figure:
    with _tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path is not None else Path(tmp) / "figure.png"
        fmt = target.suffix.lstrip(".")
        if isinstance(source, (str, _os.PathLike)):
            from . import _dates_spec

            source, dates = _os.fspath(source), _dates_spec(dates)
        elif not isinstance(source, pl.DataFrame):
            source = pl.DataFrame(source)
        groups = _vizflow.plot(source, kind, x, list(y), _os.fspath(target), color=color,
                               min_count=min_count, dates=dates, where=where, live=live)
        return Figure(target.read_bytes(), fmt, Path(path) if path is not None else None, groups)


def heatmap(m_or_dir: Any, x: str, y: str, z: str, path: str | _os.PathLike[str] | None = None, *,
            min_count: int = 0, dates: Any = None, where: str | None = None, live: bool = False) -> Figure:
    """A heatmap of metric ``z`` over group columns ``x`` and ``y``.

    ``m_or_dir``: a directory of partials (merged as ``vizflow plot`` merges them,
    with ``dates``, ``where`` and ``live``) or a frame of groups (from
    ``vf.reduce``). ``path``: ``.png``, ``.svg`` or ``.html``; without it the figure
    is drawn as PNG and only returned. Cells of groups with fewer than ``min_count``
    rows (``count()``) are grey.
    """
    return _draw(m_or_dir, "heatmap", x, [y, z], path, None, min_count, dates, where, live)


def line(m_or_dir: Any, x: str, y: str | Sequence[str], path: str | _os.PathLike[str] | None = None, *,
         color: str | None = None, min_count: int = 0, dates: Any = None, where: str | None = None,
         live: bool = False) -> Figure:
    """Metrics ``y`` over group column ``x``, a line per metric (and per value of
    ``color``); as ``heatmap`` for the rest."""
    ys = [y] if isinstance(y, str) else list(y)
    return _draw(m_or_dir, "line", x, ys, path, color, min_count, dates, where, live)
