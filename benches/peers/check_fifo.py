#!/usr/bin/env python3
"""Self-test of the vectorised FIFO of polars_pipelines.py against a plain queue.

    python benches/peers/check_fifo.py [--trials 300] [--seed 0]

Random small dates (1-4 symbols, timestamp ties, quantities 0, negative and null,
sides B, S, other and null) go through ``fifo_rows`` and through a row-by-row
implementation of SEMANTICS.md, *FIFO matching* (a Python loop: only this test has
one); the output rows must be identical. Also checks SEMANTICS.md's example
(B 50, B 50, S 80 -> 4 rows). Both sort paths (packed key, multi-column sort) run.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict, deque
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polars_pipelines as pp  # noqa: E402

COLS = [
    "row_id", "matched_qty", "holding_period", "is_closed",
    "matched_entry_id", "matched_entry_price",
]  # fmt: skip
SCHEMA = {
    "row_id": pl.UInt32, "ukey": pl.Int64, "elapsed_ms": pl.Int64,
    "orderSide": pl.String, "qty_i": pl.Int64, "fillPrice": pl.Float64,
}  # fmt: skip


def _order(t):
    return tuple((x is None, x) for x in t)


def reference(rows: list[dict]) -> list[tuple]:
    """FIFO output rows of ``rows`` (sorted by symbol and event order), as tuples."""
    out = []
    by_symbol = defaultdict(list)
    for r in rows:
        by_symbol[r["sym"]].append(r)
    for rs in by_symbol.values():
        lots, closed, entries = deque(), {}, []
        for r in rs:
            side, qty = r["orderSide"], r["qty_i"]
            valid = qty is not None and qty >= 0
            if side == "B" and valid:
                if qty > 0:
                    lots.append([r["row_id"], qty, r["elapsed_ms"], r["fillPrice"]])
                closed[r["row_id"]] = 0
                entries.append(r)
            elif side == "S" and valid:
                left, took = qty, 0
                while left > 0 and lots:
                    lot = lots[0]
                    take = min(left, lot[1])
                    lot[1] -= take
                    left -= take
                    took += take
                    closed[lot[0]] += take
                    holding = (r["elapsed_ms"] - lot[2]) / 1000
                    out.append((r["row_id"], take, holding, True, lot[0], lot[3]))
                    if lot[1] == 0:
                        lots.popleft()
                if left > 0 or took == 0:
                    out.append((r["row_id"], left, None, False, None, None))
            else:
                out.append((r["row_id"], None, None, None, None, None))
        for r in entries:
            m = closed[r["row_id"]]
            out.append((r["row_id"], m, None, m == r["qty_i"], None, None))
    return sorted(out, key=_order)


def vectorised(df: pl.DataFrame) -> tuple[list[tuple], list[dict]]:
    df = pp._event_sorted(df)
    fifo = pp.fifo_rows(df)
    got = df.select("row_id")[fifo["src"]].hstack(fifo.drop("src")).select(COLS)
    return sorted(got.rows(), key=_order), df.to_dicts()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    example = pl.DataFrame(
        {"row_id": [0, 1, 2], "ukey": [600000] * 3, "elapsed_ms": [0, 1000, 61000],
         "orderSide": ["B", "B", "S"], "qty_i": [50, 50, 80], "fillPrice": [1.0, 2.0, 3.0]},
        schema=SCHEMA,
    )  # fmt: skip
    got, _ = vectorised(example)
    want = sorted(
        [(0, 50, None, True, None, None), (1, 30, None, False, None, None),
         (2, 50, 61.0, True, 0, 1.0), (2, 30, 60.0, True, 1, 2.0)],
        key=_order,
    )  # fmt: skip
    assert got == want, (got, want)

    rng = random.Random(args.seed)
    for trial in range(args.trials):
        n, nsym = rng.randint(1, 60), rng.randint(1, 4)
        rows = [
            {
                "row_id": i,
                "ukey": rng.randint(1, nsym) * (10**17 if trial % 2 else 1),
                "elapsed_ms": rng.randint(0, 5) * 1000,
                "orderSide": rng.choice(["B", "B", "S", "S", "X", None]),
                "qty_i": rng.choice([0, 10, 20, 30, 50, 80, 100, -5, None]),
                "fillPrice": rng.random(),
            }
            for i in range(n)
        ]
        got, sorted_rows = vectorised(pl.DataFrame(rows, schema=SCHEMA))
        want = reference(sorted_rows)
        if got != want:
            print(f"trial {trial}: MISMATCH\ninput {rows}\nvectorised {got}\nreference {want}")
            return 1
    print(f"FIFO: SEMANTICS.md example and {args.trials} random dates identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
