"""Polars implementations of VizFlow's two reference pipelines, for the peer comparison.

* ``markout(path)``       = ``examples/markout.toml``
* ``alpha_markout(path)`` = ``examples/alpha_markout.toml`` (with FIFO matching)

Each reads one date's feather file (only the columns it uses, via ``pl.scan_ipc``) and
returns the date's aggregate as a DataFrame with the group-by columns, the metrics and
the mergeable components, named like the columns of VizFlow's partial
(``count()``, ``sum(qty)``, ``count(return_60)``, ``sum(return_60)``, ...).

Everything is vectorised (no Python loop over rows or symbols, no ``map_elements``)
and follows ../../SEMANTICS.md (``/work/shared/SEMANTICS.md`` in the development setup)
and the README's aggregation policy:

1. ``[[cast]] qty -> int64``: the nearest integer when within 1e-6, else the date fails.
2. ``mid = (AskPrice1 + BidPrice1) / 2``.
3. ``parse_time`` CN from ``ticktime`` (HHMMSSmmm), clamp policy: before 09:30 -> 0,
   lunch -> 7,200,000, after 15:00 -> 14,400,000; an invalid timestamp fails the date.
4. Event order per symbol = (``elapsed_ms``, ``row_id``): one sort of the whole date
   by (symbol, ``elapsed_ms``, ``row_id``), as one packed Int64 key when possible.
5. Forward returns: a backward as-of join of ``key + 1000 h`` on the sorted key
   ``symbol_index * 2^25 + elapsed_ms`` finds, for every row, the last row of the same
   symbol with ``elapsed_ms <= elapsed_ms + 1000 h`` (null when that target is past
   14,400,000).
6. FIFO matching (alpha markout only), exact and vectorised; see ``fifo_rows``.
7. ``bin``: round half away from zero of ``alpha1 / 1e-4`` (null for null/NaN/inf).
8. ``aggregate`` by (``alpha1_bin``, ``orderSide``): nulls and non-finite floats are
   skipped by ``count(x)``, ``sum(x)`` and ``mean(x)``; ``x / 0`` is null.

Only columns that reach the result are computed (``return_600`` is not computed for
alpha markout, whose metrics do not use it).
"""

from __future__ import annotations

import polars as pl

# CN market: 09:30-11:30 and 13:00-15:00, in ms since midnight (session ends inclusive).
S1_START = (9 * 3600 + 30 * 60) * 1000
S1_END = (11 * 3600 + 30 * 60) * 1000
S2_START = 13 * 3600 * 1000
S2_END = 15 * 3600 * 1000
S1_LEN = S1_END - S1_START  # 7,200,000
DAY_MS = S1_LEN + (S2_END - S2_START)  # 14,400,000

CAST_TOLERANCE = 1e-6
BIN_WIDTH = 1e-4
ELAPSED_BITS = 25  # 2^25 > DAY_MS: symbol_index * 2^25 + elapsed_ms is a sorted key
TWO_POW_63 = float(2**63)


class DateFailed(Exception):
    """The date fails, as VizFlow's run would (bad cast, bad timestamp)."""


# ---------------------------------------------------------------------------- stages


def _qty_int() -> list[pl.Expr]:
    """``[[cast]] qty -> int64`` (nearest integer within 1e-6) and a failure flag."""
    nearest = pl.col("qty").round(0, mode="half_away_from_zero")
    ok = ((pl.col("qty") - nearest).abs() <= CAST_TOLERANCE) & (nearest.abs() < 9.2e18)
    return [
        pl.when(ok).then(nearest).otherwise(None).cast(pl.Int64).alias("qty_i"),
        (ok.not_() & pl.col("qty").is_not_null()).alias("bad_qty"),
    ]


def _elapsed_ms() -> list[pl.Expr]:
    """``parse_time`` CN from HHMMSSmmm with the clamp policy, and an invalid flag."""
    t = pl.col("ticktime")
    hh = t // 10_000_000
    mm = (t // 100_000) % 100
    ss = (t // 1000) % 100
    ms = t % 1000
    tod = ((hh * 60 + mm) * 60 + ss) * 1000 + ms
    elapsed = (
        pl.when(tod < S1_START)
        .then(0)
        .when(tod <= S1_END)
        .then(tod - S1_START)
        .when(tod < S2_START)
        .then(S1_LEN)
        .when(tod <= S2_END)
        .then(tod - S2_START + S1_LEN)
        .otherwise(DAY_MS)
    )
    bad = t.is_null() | (t < 0) | (hh > 23) | (mm > 59) | (ss > 59)
    return [elapsed.cast(pl.Int64).alias("elapsed_ms"), bad.alias("bad_time")]


def _bin() -> pl.Expr:
    """``alpha1_bin``: round half away from zero of alpha1 / 1e-4; null if not finite."""
    q = (pl.col("alpha1") / BIN_WIDTH).round(0, mode="half_away_from_zero")
    ok = q.is_finite() & (q >= -TWO_POW_63) & (q < TWO_POW_63)
    return pl.when(ok).then(q).otherwise(None).cast(pl.Int64).alias("alpha1_bin")


def _load(path: str, columns: list[str]) -> pl.DataFrame:
    """Reads the used columns and computes the row-wise stages: the cast, ``mid``,
    ``elapsed_ms``, ``alpha1_bin`` and ``row_id``; fails the date like VizFlow on a
    quantity that is not an integer or an invalid timestamp."""
    df = (
        pl.scan_ipc(path, row_index_name="row_id")
        .select(["row_id", *columns])
        .with_columns(
            *_qty_int(),
            *_elapsed_ms(),
            ((pl.col("AskPrice1") + pl.col("BidPrice1")) / 2).alias("mid"),
            _bin(),
        )
        .drop(["qty", "ticktime", "AskPrice1", "BidPrice1", "alpha1"])
        .collect()
    )
    bad_qty, bad_time = df.select(pl.col("bad_qty").sum(), pl.col("bad_time").sum()).row(0)
    if bad_qty:
        raise DateFailed(f"{path}: cast: {bad_qty} qty values not within 1e-6 of an integer")
    if bad_time:
        raise DateFailed(f"{path}: parse_time: {bad_time} invalid HHMMSSmmm timestamps")
    return df.drop(["bad_qty", "bad_time"])


def _event_sorted(df: pl.DataFrame) -> pl.DataFrame:
    """The rows sorted by symbol, then event order (``elapsed_ms``, ``row_id``), with
    ``sym`` (an integer per symbol, increasing in sorted order), ``new_sym`` (the first
    row of a symbol) and ``key`` = ``sym * 2^25 + elapsed_ms`` (sorted).

    With integer symbols of a small range (the usual case) the sort is one sort of a
    single Int64 key ``(ukey - min) | elapsed_ms | row_id`` packed in 63 bits, about 3x
    faster than Polars' multi-column sort; otherwise a sort by the three columns.
    """
    rbits = max(1, (df.height - 1).bit_length())
    ukey = df["ukey"]
    packed = False
    if ukey.dtype.is_integer() and ukey.null_count() == 0 and df.height:
        lo, hi = int(ukey.min()), int(ukey.max())
        packed = (hi - lo).bit_length() + ELAPSED_BITS + rbits <= 63
    if packed:
        # Sort one packed key and derive sym, elapsed_ms and row_id back from it: fewer
        # columns to gather in sorted order.
        low = ELAPSED_BITS + rbits
        packed_key = (
            (pl.col("ukey").cast(pl.Int64) - lo) * 2**low
            + pl.col("elapsed_ms") * 2**rbits
            + pl.col("row_id").cast(pl.Int64)
        )
        df = (
            df.lazy()
            .select(packed_key.alias("packed"), pl.all().exclude("ukey", "elapsed_ms", "row_id"))
            .sort("packed")
            .with_columns(
                (pl.col("packed") // 2**low).alias("sym"),
                (pl.col("packed") // 2**rbits % 2**ELAPSED_BITS).alias("elapsed_ms"),
                (pl.col("packed") % 2**rbits).cast(pl.UInt32).alias("row_id"),
            )
            .with_columns(pl.col("sym").ne_missing(pl.col("sym").shift(1)).fill_null(True).alias("new_sym"))
            .drop("packed")
            .collect()
        )
    else:
        df = df.sort(["ukey", "elapsed_ms", "row_id"], nulls_last=True)
        new_sym = pl.col("ukey").ne_missing(pl.col("ukey").shift(1)).fill_null(True)
        df = df.with_columns(new_sym.alias("new_sym")).with_columns(
            (pl.col("new_sym").cast(pl.Int64).cum_sum() - 1).alias("sym")
        )
    return df.with_columns((pl.col("sym") * 2**ELAPSED_BITS + pl.col("elapsed_ms")).alias("key"))


def _with_forward_returns(df: pl.DataFrame, horizons: list[int]) -> pl.DataFrame:
    """``return_{h}`` on the sorted rows: ``mid`` of the last row of the same symbol
    with ``elapsed_ms <= elapsed_ms + 1000 h`` (a backward as-of join on the sorted
    ``key``, which takes the last of equal keys, i.e. the last in event order)."""
    future_mid = df.select("key", pl.col("mid").alias("future_mid"))
    returns = []
    for h in horizons:
        future = (
            df.select((pl.col("key") + 1000 * h).alias("key"))
            .join_asof(future_mid, on="key", strategy="backward", check_sortedness=False)
            .get_column("future_mid")
        )
        returns.append(
            pl.when(pl.col("elapsed_ms") + 1000 * h <= DAY_MS)
            .then(future / pl.col("mid") - 1)
            .otherwise(None)
            .alias(f"return_{h}")
        )
    return df.with_columns(returns)


def _finite(name: str) -> pl.Expr:
    """A float column with non-finite values as null (the aggregation policy)."""
    return pl.when(pl.col(name).is_finite()).then(pl.col(name)).otherwise(None)


def _count_sum(name: str) -> list[pl.Expr]:
    """The components ``count(x)`` and ``sum(x)`` of a float column."""
    return [
        _finite(name).count().cast(pl.Int64).alias(f"count({name})"),
        _finite(name).sum().alias(f"sum({name})"),
    ]


def _div(a: str, b: str) -> pl.Expr:
    """Metric division: x / 0 -> null."""
    return (
        pl.when(pl.col(b) != 0)
        .then(pl.col(a).cast(pl.Float64) / pl.col(b).cast(pl.Float64))
        .otherwise(None)
    )


GROUP_BY = ["alpha1_bin", "orderSide"]

# ---------------------------------------------------------------------------- markout


def markout(path: str) -> pl.DataFrame:
    """``examples/markout.toml`` on one date's feather file."""
    horizons = [60, 300, 600]
    rets = [f"return_{h}" for h in horizons]
    df = _load(path, ["ticktime", "ukey", "orderSide", "qty", "BidPrice1", "AskPrice1", "alpha1"])
    df = _with_forward_returns(_event_sorted(df), horizons)
    out = (
        df.lazy()
        .group_by(GROUP_BY)
        .agg(
            pl.len().cast(pl.Int64).alias("count()"),
            pl.col("qty_i").sum().alias("sum(qty)"),
            *[e for r in rets for e in _count_sum(r)],
        )
        .with_columns(
            pl.col("count()").alias("count"),
            pl.col("sum(qty)").alias("total_qty"),
            *[_div(f"sum({r})", f"count({r})").alias(f"mean_{r}") for r in rets],
        )
        .sort(GROUP_BY, nulls_last=True)
        .collect()
    )
    return out


# ---------------------------------------------------------------------------- FIFO


def fifo_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Exact FIFO matching (SEMANTICS.md, *FIFO matching*), vectorised.

    ``df`` holds one date's rows sorted by symbol and event order (``_event_sorted``),
    with ``orderSide``, ``qty_i``, ``elapsed_ms``, ``row_id`` and ``fillPrice``. Returns
    VizFlow's FIFO output rows as ``src`` (the position in ``df`` of the row each output
    row comes from, whose columns it keeps) and the five FIFO columns
    ``matched_entry_id``, ``matched_qty``, ``holding_period``, ``matched_entry_price``,
    ``is_closed``: one row per entry (``matched_qty`` = how much of it was closed by the
    end of the date), per row of another side or with an invalid quantity (FIFO columns
    null), per lot portion an exit takes, and per exit remainder (quantity left with no
    open lot, or an exit that took nothing).

    How: per symbol, in event order, let E = cumulative entry quantity and S =
    cumulative exit quantity (inclusive). The cumulative quantity closed C follows
    C_k = min(C_{k-1} + q_k, E_k) at exit k (an exit takes at most what is open; what it
    cannot take is its remainder and never consumes later entries), so with D = C - S:
    D_k = min(D_{k-1}, E_k - S_k), D_0 = 0, i.e. C = S + min(0, cummin(E - S)). An exit
    closes the entry-quantity interval [C_before, C_after): entries are laid out as
    intervals [E - q, E) of the same axis, oldest first, so the overlaps of the exit's
    interval with the entries' intervals are exactly the FIFO portions. Quantities are
    made global (offset per symbol) so that two as-of joins over all symbols at once
    find each exit's first and last lot; the per-symbol cummin is one global cummin of
    ``E - S - sym * BIG`` (BIG larger than any per-symbol |E - S|, so an earlier
    symbol's values never win). An entry's ``matched_qty`` is its overlap with
    [0, C at the symbol's end).
    """
    side = pl.col("orderSide")
    valid = pl.col("qty_i").is_not_null() & (pl.col("qty_i") >= 0)
    # |E - S| never exceeds the summed positive quantities of the date.
    big = int(df.select(pl.col("qty_i").clip(lower_bound=0).sum()).item() or 0) + 1
    if df.height and (int(df["sym"][-1]) + 1) * big >= 2**62:
        raise OverflowError("quantities too large for the global-offset cummin")

    m = (
        df.lazy()
        .select(
            "sym",
            "new_sym",
            ((side == "B") & valid).fill_null(False).alias("is_entry"),
            ((side == "S") & valid).fill_null(False).alias("is_exit"),
            "qty_i",
            "row_id",
            "elapsed_ms",
            "fillPrice",
        )
        .with_columns(
            pl.when("is_entry").then("qty_i").otherwise(0).alias("eq"),
            pl.when("is_exit").then("qty_i").otherwise(0).alias("xq"),
        )
        .with_row_index("src")
        .with_columns(
            pl.col("eq").cum_sum().alias("Eg"),  # global cumulative entry qty (inclusive)
            pl.col("xq").cum_sum().alias("Sg"),
        )
        .with_columns(
            # the global cumulative sums before each symbol's first row
            pl.when("new_sym").then(pl.col("Eg") - pl.col("eq")).forward_fill().alias("E0"),
            pl.when("new_sym").then(pl.col("Sg") - pl.col("xq")).forward_fill().alias("S0"),
        )
        .with_columns(
            # C: quantity closed so far in the symbol (inclusive), from E - S per symbol
            (
                pl.col("Sg")
                - pl.col("S0")
                + (
                    (
                        pl.col("Eg") - pl.col("E0") - pl.col("Sg") + pl.col("S0")
                        - pl.col("sym") * big
                    ).cum_min()
                    + pl.col("sym") * big
                ).clip(upper_bound=0)
            ).alias("C")
        )
        .with_columns(
            pl.when("new_sym").then(0).otherwise(pl.col("C").shift(1)).alias("C_prev"),
            # C at the symbol's last row (C never decreases within a symbol)
            pl.when(pl.col("new_sym").shift(-1).fill_null(True))
            .then("C")
            .backward_fill()
            .alias("C_end"),
        )
        .with_columns((pl.col("C") - pl.col("C_prev")).alias("took"))
        .select(
            "src", "row_id", "elapsed_ms", "fillPrice", "is_entry", "is_exit",
            "eq", "xq", "Eg", "E0", "C", "C_prev", "C_end", "took",
        )  # fmt: skip
        .collect()
        .lazy()
    )

    # One row per input row that is not an exit fully matched: entries, other rows and
    # exit remainders.
    entry_matched = pl.min_horizontal(
        pl.col("C_end") - (pl.col("Eg") - pl.col("E0") - pl.col("eq")), pl.col("eq")
    ).clip(lower_bound=0)
    remainder = pl.col("xq") - pl.col("took")
    single = m.filter(
        pl.col("is_exit").not_() | (remainder > 0) | (pl.col("took") == 0)
    ).select(
        "src",
        pl.lit(None, pl.UInt64).alias("matched_entry_id"),
        pl.when("is_entry")
        .then(entry_matched)
        .when("is_exit")
        .then(remainder)
        .otherwise(None)
        .alias("matched_qty"),
        pl.lit(None, pl.Float64).alias("holding_period"),
        pl.lit(None, pl.Float64).alias("matched_entry_price"),
        pl.when("is_entry")
        .then(entry_matched == pl.col("eq"))
        .when("is_exit")
        .then(False)
        .otherwise(None)
        .alias("is_closed"),
    )

    # Lots: entries of positive quantity at their global interval [Eg - q, Eg); exits
    # that took something, at their global interval [a, b). Both are sorted and
    # disjoint along the global axis.
    lots, exits = pl.collect_all(
        [
            m.filter(pl.col("is_entry") & (pl.col("eq") > 0)).select(
                (pl.col("Eg") - pl.col("eq")).alias("lot_start"),
                pl.col("Eg").alias("lot_end"),
                pl.col("row_id").cast(pl.UInt64).alias("matched_entry_id"),
                pl.col("elapsed_ms").alias("lot_elapsed_ms"),
                pl.col("fillPrice").alias("matched_entry_price"),
            ),
            m.filter(pl.col("is_exit") & (pl.col("took") > 0)).select(
                "src",
                "elapsed_ms",
                (pl.col("E0") + pl.col("C_prev")).alias("a"),
                (pl.col("E0") + pl.col("C")).alias("b"),
            ),
        ]
    )
    # Each exit's first lot (the first with lot_end > a) and last lot (the last with
    # lot_start < b): two as-of joins of sorted keys (merges, faster than searches).
    lot_index = pl.int_range(pl.len(), dtype=pl.UInt32)
    first = (
        exits.select((pl.col("a") + 1).alias("k"))
        .join_asof(
            lots.select(pl.col("lot_end").alias("k"), lot_index.alias("first")),
            on="k", strategy="forward", check_sortedness=False,
        )  # fmt: skip
        .get_column("first")
    )
    last = (
        exits.select((pl.col("b") - 1).alias("k"))
        .join_asof(
            lots.select(pl.col("lot_start").alias("k"), lot_index.alias("last")),
            on="k", strategy="backward", check_sortedness=False,
        )  # fmt: skip
        .get_column("last")
    )
    portions = exits.with_columns(
        pl.int_ranges(first, last + 1, dtype=pl.UInt32).alias("lot")
    ).explode("lot")
    lot = lots[portions["lot"]]  # each portion's lot
    portions = pl.concat([portions, lot], how="horizontal").select(
        "src",
        "matched_entry_id",
        (pl.min_horizontal("b", "lot_end") - pl.max_horizontal("a", "lot_start")).alias(
            "matched_qty"
        ),
        ((pl.col("elapsed_ms") - pl.col("lot_elapsed_ms")) / 1000).alias("holding_period"),
        "matched_entry_price",
        pl.lit(True).alias("is_closed"),
    )
    return pl.concat([single.collect(), portions], how="vertical_relaxed")


# ---------------------------------------------------------------------------- alpha markout


def alpha_markout(path: str) -> pl.DataFrame:
    """``examples/alpha_markout.toml`` on one date's feather file."""
    horizons = [60, 300]  # return_600 is computed by the TOML but no metric uses it
    rets = [f"return_{h}" for h in horizons]
    df = _load(
        path,
        ["ticktime", "ukey", "orderSide", "qty", "fillPrice", "BidPrice1", "AskPrice1", "alpha1"],
    )
    df = _with_forward_returns(_event_sorted(df), horizons)
    fifo = fifo_rows(df)
    # Every FIFO row keeps the columns of its source row.
    rows = df.select(*GROUP_BY, "fillPrice", *rets)[fifo["src"]].hstack(
        fifo.select("matched_qty", "holding_period", "is_closed")
    )
    del df, fifo
    out = (
        rows.lazy()
        .with_columns((pl.col("matched_qty") * pl.col("fillPrice")).alias("notional"))
        .group_by(GROUP_BY)
        .agg(
            pl.len().cast(pl.Int64).alias("count()"),
            pl.col("matched_qty").sum().alias("sum(matched_qty)"),
            _finite("notional").sum().alias("sum(notional)"),
            *[e for c in [*rets, "holding_period"] for e in _count_sum(c)],
            pl.col("is_closed").sum().cast(pl.Int64).alias("sum(is_closed)"),
        )
        .with_columns(
            pl.col("count()").alias("count"),
            pl.col("sum(matched_qty)").alias("total_qty"),
            pl.col("sum(notional)").alias("total_notional"),
            _div("sum(notional)", "sum(matched_qty)").alias("vwap"),
            *[_div(f"sum({r})", f"count({r})").alias(f"mean_{r}") for r in rets],
            _div("sum(holding_period)", "count(holding_period)").alias("mean_holding_period"),
            pl.col("sum(is_closed)").alias("closed_count"),
        )
        .sort(GROUP_BY, nulls_last=True)
        .collect()
    )
    return out


PIPELINES = {"markout": markout, "alpha_markout": alpha_markout}


if __name__ == "__main__":
    import sys
    import time

    name, path = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    result = PIPELINES[name](path)
    with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=250):
        print(result)
    print(f"{name}: {time.perf_counter() - t0:.3f} s")
