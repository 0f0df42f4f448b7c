"""Trading days: from a calendar file, or from the date files in a directory."""

from __future__ import annotations

import datetime as _dt
import os as _os

from . import _vizflow

__all__ = ["trading_days", "next_trading_day", "previous_trading_day"]


def _date(text: str) -> _dt.date:
    return _dt.datetime.strptime(text, "%Y%m%d").date()


def trading_days(
    path: str | _os.PathLike[str] | None = None,
    *,
    dir: str | _os.PathLike[str] | None = None,
    pattern: str = "{date}.feather",
) -> list[_dt.date]:
    """The trading days of a calendar file (``.csv``, ``.parquet``, ``.feather`` with a
    ``date`` column, as ``[input] calendar``), or of the files in ``dir`` named by
    ``pattern`` (as ``vizflow run`` finds them without a calendar)."""
    dates = _vizflow.calendar_dates(
        path=None if path is None else _os.fspath(path),
        dir=None if dir is None else _os.fspath(dir),
        pattern=pattern,
    )
    return [_date(d) for d in dates]


def next_trading_day(days: list[_dt.date], date: _dt.date) -> _dt.date | None:
    """The first of ``days`` after ``date``."""
    later = [d for d in days if d > date]
    return min(later) if later else None


def previous_trading_day(days: list[_dt.date], date: _dt.date) -> _dt.date | None:
    """The last of ``days`` before ``date``."""
    earlier = [d for d in days if d < date]
    return max(earlier) if earlier else None
