#!/usr/bin/env python3
"""Check that the Polars pipelines give VizFlow's results, then time both.

For each date: first runs VizFlow's release binary (``vizflow run PIPELINE
--input-dir D --output-dir O --dates DATE --workers 2 --progress quiet``, which writes
the date's partial ``{out}/{date}.parquet``) and the Polars pipeline of
``polars_pipelines.py`` once and checks that the Polars result equals the partial
(same groups; counts and integer sums exactly; floats to a relative 1e-9). Then, if
they are equal, times ``--runs`` runs of each, alternated: VizFlow's wall time as a
new process, Polars in this process (reading the file included). Prints a table of
the medians and writes JSON with every time. The first runs are not timed (they warm
the page cache and thread pools).

    python benches/peers/compare.py --pipeline markout --data data --dates 20240102 --runs 3

Run it from the repository root (or pass --vizflow-bin and --pipeline-file). Exits 1
when a check fails (after printing the differences, at most 20 per date; a date that
differs is not timed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# VizFlow runs through a small launcher process started here, before Polars takes any
# memory: on Linux a child's peak RSS (ru_maxrss) includes the RSS of the process it
# was forked from, so forking VizFlow from this process would report this process's
# memory as VizFlow's.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    cmd = json.loads(line)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"wall": wall, "rc": p.returncode, "maxrss_kb": usage.ru_maxrss,
                      "out": out.decode(errors="replace")[-4000:]}), flush=True)
"""
LAUNCHER = subprocess.Popen(
    [sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)

import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polars_pipelines  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REL_TOL = 1e-9
GROUP_BY = polars_pipelines.GROUP_BY


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", choices=sorted(polars_pipelines.PIPELINES), required=True)
    p.add_argument("--data", required=True, help="directory of alpha_{date}.feather files")
    p.add_argument(
        "--dates",
        help="comma-separated YYYYMMDD dates (default: every alpha_*.feather in --data)",
    )
    p.add_argument("--runs", type=int, default=3, help="timed runs of each (median reported)")
    p.add_argument("--vizflow-bin", default=str(REPO / "target/release/vizflow"))
    p.add_argument(
        "--pipeline-file", help="the VizFlow pipeline (default examples/{pipeline}.toml)"
    )
    p.add_argument(
        "--out", help="VizFlow's output directory (default /tmp/vizflow-peers/{pipeline})"
    )
    p.add_argument("--workers", type=int, default=2, help="VizFlow worker threads")
    p.add_argument("--json", help="where to write the results (default {out}/compare.json)")
    p.add_argument(
        "--check-only", action="store_true", help="run each once and check, no timing"
    )
    return p.parse_args()


# ---------------------------------------------------------------------------- VizFlow


def run_vizflow(args: argparse.Namespace, date: str) -> tuple[float, int]:
    """One `vizflow run` of one date: (wall seconds, peak RSS bytes)."""
    cmd = [
        args.vizflow_bin, "run", args.pipeline_file,
        "--input-dir", args.data, "--output-dir", args.out,
        "--dates", date, "--workers", str(args.workers), "--progress", "quiet",
    ]  # fmt: skip
    LAUNCHER.stdin.write(json.dumps(cmd) + "\n")
    LAUNCHER.stdin.flush()
    done = json.loads(LAUNCHER.stdout.readline())
    if done["rc"] != 0:
        sys.exit(f"vizflow failed ({done['rc']}): {' '.join(cmd)}\n{done['out']}")
    return done["wall"], done["maxrss_kb"] * 1024


# ---------------------------------------------------------------------------- check


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if a == b:
            return True
        return abs(a - b) <= REL_TOL * max(abs(a), abs(b))
    return a == b


def check(polars_df: pl.DataFrame, partial: pl.DataFrame) -> list[str]:
    """Differences between the Polars result and VizFlow's partial (empty: equal)."""
    problems = []
    skip = {"date", *GROUP_BY}
    missing = [c for c in partial.columns if c not in skip and c not in polars_df.columns]
    if missing:
        problems.append(f"columns of the partial the Polars result lacks: {missing}")
    cols = [c for c in partial.columns if c not in skip and c in polars_df.columns]
    for c in cols:
        vf_int = partial.schema[c].is_integer() or partial.schema[c] == pl.Boolean
        pl_int = polars_df.schema[c].is_integer() or polars_df.schema[c] == pl.Boolean
        if vf_int != pl_int:
            problems.append(
                f"column {c}: VizFlow type {partial.schema[c]}, Polars {polars_df.schema[c]}"
            )
    key = [pl.col(k).cast(pl.Int64) if k == "alpha1_bin" else pl.col(k) for k in GROUP_BY]
    a = polars_df.with_columns(key).select(*GROUP_BY, *cols)
    b = partial.with_columns(key).select(*GROUP_BY, *cols)
    if a.height != b.height:
        problems.append(f"{a.height} groups in Polars, {b.height} in VizFlow")
    joined = a.join(b, on=GROUP_BY, how="full", suffix="_vf", nulls_equal=True, coalesce=True)
    for row in joined.iter_rows(named=True):
        group = {k: row[k] for k in GROUP_BY}
        for c in cols:
            if not _close(row[c], row[f"{c}_vf"]):
                problems.append(f"group {group}: {c}: Polars {row[c]!r}, VizFlow {row[c + '_vf']!r}")
    return problems


# ---------------------------------------------------------------------------- main


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "polars_threads": pl.thread_pool_size(),
    }


def main() -> int:
    args = parse_args()
    args.pipeline_file = args.pipeline_file or str(REPO / f"examples/{args.pipeline}.toml")
    args.out = args.out or f"/tmp/vizflow-peers/{args.pipeline}"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not shutil.which(args.vizflow_bin) and not Path(args.vizflow_bin).is_file():
        return f"no VizFlow binary at {args.vizflow_bin}: cargo build --release first"
    if args.dates:
        dates = [d.strip() for d in args.dates.split(",") if d.strip()]
    else:
        dates = sorted(p.name[6:14] for p in Path(args.data).glob("alpha_*.feather"))
    if not dates:
        return f"no dates: no alpha_*.feather in {args.data}"
    runs = 1 if args.check_only else args.runs
    polars_fn = polars_pipelines.PIPELINES[args.pipeline]

    results, failed = [], False
    for date in dates:
        path = str(Path(args.data) / f"alpha_{date}.feather")
        rows = pl.scan_ipc(path).select(pl.len()).collect().item()
        # First the check: one run of each (also a warm-up: page cache, thread pools).
        first_vf = run_vizflow(args, date)
        t0 = time.perf_counter()
        result = polars_fn(path)
        first_pl = time.perf_counter() - t0
        partial = pl.read_parquet(Path(args.out) / f"{date}.parquet")
        problems = check(result, partial)
        failed |= bool(problems)
        for p in problems[:20]:
            print(f"{date}: MISMATCH {p}", file=sys.stderr)
        if len(problems) > 20:
            print(f"{date}: ... {len(problems) - 20} more differences", file=sys.stderr)
        # Then the timed runs, alternated so that both see the same machine.
        load_before = os.getloadavg()[0]
        if args.check_only or problems:
            vf, pl_times = [first_vf], [first_pl]
        else:
            vf, pl_times = [], []
            for _ in range(runs):
                vf.append(run_vizflow(args, date))
                t0 = time.perf_counter()
                polars_fn(path)
                pl_times.append(time.perf_counter() - t0)
        load_after = os.getloadavg()[0]
        vf_med = statistics.median(t for t, _ in vf)
        pl_med = statistics.median(pl_times)
        results.append(
            {
                "date": date,
                "rows": rows,
                "groups": partial.height,
                "check": "equal" if not problems else "DIFFERENT",
                "timed": not (args.check_only or problems),
                "differences": problems,
                "vizflow_wall_s": [round(t, 4) for t, _ in vf],
                "vizflow_peak_rss_bytes": max(r for _, r in vf),
                "polars_wall_s": [round(t, 4) for t in pl_times],
                "vizflow_median_s": round(vf_med, 4),
                "polars_median_s": round(pl_med, 4),
                "speedup": round(pl_med / vf_med, 2),
                "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
            }
        )
    # ru_maxrss of this process: the Polars runs' peak (and Python's own memory).
    polars_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    report = {
        "pipeline": args.pipeline,
        "pipeline_file": args.pipeline_file,
        "data": args.data,
        "runs": runs,
        "vizflow_workers": args.workers,
        "vizflow_bin": args.vizflow_bin,
        "machine": machine(),
        "polars_peak_rss_bytes": polars_rss,
        "dates": results,
    }
    json_path = args.json or str(Path(args.out) / "compare.json")
    Path(json_path).write_text(json.dumps(report, indent=2) + "\n")

    gb = 1e9
    print(
        f"\n{args.pipeline}: Polars {pl.__version__} ({pl.thread_pool_size()} threads) vs "
        f"VizFlow ({args.workers} workers), median of {runs}, {os.cpu_count()} CPUs"
    )
    header = (
        f"{'date':<10} {'rows':>11} {'groups':>7} {'check':<9} "
        f"{'Polars s':>9} {'VizFlow s':>10} {'speedup':>8} {'VizFlow RSS':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['date']:<10} {r['rows']:>11,} {r['groups']:>7} {r['check']:<9} "
            f"{r['polars_median_s']:>9.3f} {r['vizflow_median_s']:>10.3f} "
            f"{r['speedup']:>7.1f}x {r['vizflow_peak_rss_bytes'] / gb:>9.2f} GB"
        )
    print(f"Polars peak RSS (this process): {polars_rss / gb:.2f} GB")
    loads = [x for r in results for x in r["loadavg_1min_before_after"]]
    print(f"1-min load average before/after the runs: {min(loads):.2f} .. {max(loads):.2f}")
    print(f"JSON: {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
