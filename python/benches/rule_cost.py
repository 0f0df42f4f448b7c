"""What a rule written in Python costs against the same rule in Rust.

The rule: each symbol's running position through the day (+qty for a buy, -qty for a
sell, in event order), grouped by side and by the sign of the position. In Rust it is
the built-in `TagRunning` rule of the pipeline file; in Python a `vizflow.rule`
function on a Polars frame per symbol and date. Both run inside the same dataflow over
the same dates; the script checks they give the same partials, then prints the
median wall time of alternated runs.

    python python/benches/rule_cost.py DATA_DIR [--dates 20240102..20240105] [--runs 5]

DATA_DIR holds `alpha_{date}.feather` files (`vizflow gen --out DATA_DIR ...`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import polars as pl

import vizflow as vf


def pipeline(data: str, rust: bool) -> vf.Pipeline:
    sections = {
        "input": {"dir": data, "pattern": "alpha_{date}.feather"},
        "output": {"dir": "unused"},
        "columns": {"timestamp": "ticktime", "symbol": "ukey"},
        "cast": [{"column": "qty", "to": "int64"}],
        "time": {"market": "CN", "format": "hhmmssmmm"},
        "derive": {"long": "position > 0"},
        "aggregate": {"group_by": ["orderSide", "long"],
                      "metrics": {"rows": "count()", "total": "sum(position)"}},
    }
    if rust:
        sections["enrich"] = [{"rule": "TagRunning", "name": "position",
                               "update": "prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END"}]
        return vf.Pipeline.from_dict(sections)

    @vf.rule(inputs=["orderSide", "qty"], outputs={"position": pl.Int64})
    def position(rows: pl.DataFrame) -> pl.DataFrame:
        signed = pl.when(pl.col("orderSide") == "B").then(pl.col("qty")).otherwise(-pl.col("qty"))
        return rows.select(position=signed.cum_sum())

    return vf.Pipeline.from_dict(sections).with_rule(position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--dates", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    runs = {"rust": [], "python": []}
    results = {}
    for _ in range(args.runs):
        for kind in ("rust", "python"):
            p = pipeline(args.data, kind == "rust")
            started = time.perf_counter()
            results[kind] = vf.run(p, dates=args.dates, workers=args.workers, progress="quiet")
            runs[kind].append(time.perf_counter() - started)
    keys = ["date", "orderSide", "long"]
    assert results["rust"].sort(keys).equals(results["python"].sort(keys)), "the rules disagree"
    rows = sum(d["report"]["counts"]["rows_read"] for d in vf.run.last_summary["dates"])
    for kind, times in runs.items():
        median = statistics.median(times)
        print(f"{kind:>6}: median {median:.3f} s of {len(times)} runs ({rows / median / 1e6:.2f}M rows/s)")
    ratio = statistics.median(runs["python"]) / statistics.median(runs["rust"])
    print(f"python / rust: {ratio:.2f}x ({rows} rows, {args.workers} workers)")


if __name__ == "__main__":
    main()
