"""The market presets: time zones and trading sessions, as ``[time] market`` names them."""

from __future__ import annotations

from dataclasses import dataclass

from . import _vizflow

__all__ = ["Market", "preset", "PRESETS"]


@dataclass(frozen=True)
class Market:
    """A market's trading clock: its time zone and sessions (local wall-clock times,
    ends inclusive), and the trading milliseconds in a day."""

    name: str
    time_zone: str
    sessions: tuple[tuple[str, str], ...]
    trading_ms: int


def preset(name: str) -> Market:
    """A preset by name, case-insensitively (``"CN"``, ``"hkex_northbound"``, ...)."""
    name, zone, sessions, total = _vizflow.market(name)
    return Market(name, zone, tuple((s, e) for s, e in sessions), total)


PRESETS: dict[str, Market] = {n: preset(n) for n in _vizflow.market_presets()}
