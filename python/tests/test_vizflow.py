"""The Python front against the CLI and against plain Python oracles."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import tomllib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import vizflow as vf
from vizflow import _vizflow

from conftest import cli

KEYS = ["date", "alpha1_bin", "orderSide"]


def without_exact(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([c for c in frame.columns if not c.endswith(".exact")])


def read_partials(dir: Path) -> pl.DataFrame:
    frames = [pl.read_parquet(p) for p in sorted(dir.glob("2*.parquet")) if ".live." not in p.name]
    return without_exact(pl.concat(frames))


# ---- Pipeline ---------------------------------------------------------------------


def test_pipeline_from_dict_is_the_same_pipeline(pipeline_path: Path) -> None:
    from_file = vf.Pipeline.from_toml(pipeline_path)
    from_dict = vf.Pipeline.from_dict(tomllib.loads(pipeline_path.read_text()))
    assert from_dict.hash == from_file.hash
    again = vf.Pipeline.from_toml_str(from_dict.to_toml())
    assert again.hash == from_file.hash
    assert from_file.metrics[:2] == ["count", "total_qty"]
    assert from_file.group_by == ["alpha1_bin", "orderSide"]


def test_pipeline_errors_are_the_clis(tmp_path: Path, pipeline_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(pipeline_path.read_text().replace('rule = "FIFOMatch"', 'rule = "FIFOMatc"'))
    with pytest.raises(vf.PipelineError) as raised:
        vf.Pipeline.from_toml(bad)
    done = cli("run", str(bad), check=False)
    assert done.returncode != 0
    assert str(raised.value) in done.stderr
    assert "FIFOMatc" in str(raised.value)
    with pytest.raises(TypeError, match="'input.dir' is NoneType"):
        vf.Pipeline.from_dict({"input": {"dir": None}})


# ---- run --------------------------------------------------------------------------


def test_run_equals_the_cli(data: Path, cli_partials: Path, pipeline_path: Path, tmp_path: Path) -> None:
    p = vf.Pipeline.from_toml(pipeline_path)
    expected = read_partials(cli_partials).sort(KEYS)
    for workers in (1, 2, 4):
        got = vf.run(p, input_dir=data, workers=workers, progress="quiet")
        assert got.sort(KEYS).equals(expected), f"workers={workers}"
    # With an output directory: the same files as the CLI's.
    out = tmp_path / "out"
    got = vf.run(p, input_dir=data, dates="20240102..20240105", workers=2, output_dir=out,
                 progress="quiet")
    assert got.sort(KEYS).equals(expected)
    assert read_partials(out).sort(KEYS).equals(expected)
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in cli_partials.iterdir())
    # skip_existing keeps them and still returns them.
    again = vf.run(p, input_dir=data, workers=2, output_dir=out, skip_existing=True, progress="quiet")
    assert again.sort(KEYS).equals(expected)
    assert [d["status"] for d in vf.run.last_summary["dates"]] == ["skipped"] * 4
    # A list of dates.
    two = vf.run(p, input_dir=data, dates=[dt.date(2024, 1, 3), "20240105"], workers=2, progress="quiet")
    assert two["date"].unique().sort().to_list() == [dt.date(2024, 1, 3), dt.date(2024, 1, 5)]


def test_run_errors(data: Path, pipeline_path: Path, tmp_path: Path) -> None:
    p = vf.Pipeline.from_toml(pipeline_path)
    with pytest.raises(vf.DataError, match="20240106"):
        vf.run(p, input_dir=data, dates="20240106", progress="quiet")
    # A date whose file is corrupt fails, with the CLI's message; the others are written.
    broken = tmp_path / "data"
    broken.mkdir()
    for f in data.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "alpha_20240103.feather").write_bytes(b"not a feather file")
    out = tmp_path / "out"
    with pytest.raises(vf.DataError) as raised:
        vf.run(p, input_dir=broken, workers=2, output_dir=out, progress="quiet")
    message = str(raised.value)
    assert message.startswith("1 of 4 dates failed:\n  FAILED 20240103")
    done = cli("run", str(Path(pipeline_path)), "--input-dir", str(broken), "--output-dir",
               str(tmp_path / "cli"), "--progress", "quiet", check=False)
    assert message.splitlines()[1] in done.stderr
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "20240102.parquet", "20240104.parquet", "20240105.parquet"]


def test_ctrl_c_stops_a_run_cleanly(data: Path, pipeline_path: Path, tmp_path: Path) -> None:
    # A rule that sends SIGINT to the process (once) while the first date is in the
    # dataflow, as a Ctrl-C would, and goes on once the main thread has taken it.
    taken = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        taken.set()
        raise KeyboardInterrupt

    @vf.rule(inputs=["qty"], outputs={"interrupted": pl.Boolean})
    def interrupt(rows: pl.DataFrame) -> pl.DataFrame:
        if not taken.is_set():
            signal.raise_signal(signal.SIGINT)
            assert taken.wait(timeout=60)
        return rows.select(interrupted=pl.col("qty").is_null() | True)

    text = pipeline_path.read_text().replace('closed_count = "sum(is_closed)"',
                                             'closed_count = "sum(is_closed)"\ninterrupted = "count(interrupted)"')
    p = vf.Pipeline.from_toml_str(text).with_rule(interrupt)
    out = tmp_path / "out"
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            vf.run(p, input_dir=data, workers=1, output_dir=out, progress="quiet")
    finally:
        signal.signal(signal.SIGINT, previous)
    written = sorted(out.glob("*.parquet"))
    # The dates in flight finished and were written whole, no date was fed after the
    # stop: the first date, and the second when its rows were already in (a rule on
    # it needs the GIL, which the main thread holds until the stop is set, so the
    # third date never gets rows).
    names = [p.name for p in written]
    assert names in (["20240102.parquet"], ["20240102.parquet", "20240103.parquet"])
    for partial in written:
        pl.read_parquet(partial)
        report = json.loads(partial.with_name(partial.stem + ".report.json").read_text())
        assert report["counts"]["rows_read"] == 30_000, partial
    assert not [f for f in out.iterdir() if f.name.startswith(".")]


# ---- reduce and plot ---------------------------------------------------------------


def test_reduce_equals_the_cli(cli_partials: Path, tmp_path: Path) -> None:
    args = dict(by=["orderSide", "month"], where="alpha1_bin >= 0",
                metrics={"edge": "sum(return_60) / count(return_60)"})
    got = vf.reduce(cli_partials, dates="20240102..20240104", **args)
    out = tmp_path / "r.parquet"
    cli("reduce", str(cli_partials), "--dates", "20240102..20240104", "--by", "orderSide,month",
        "--where", "alpha1_bin >= 0", "--metric", "edge=sum(return_60) / count(return_60)",
        "-o", str(out))
    expected = without_exact(pl.read_parquet(out))
    assert got.columns == expected.columns
    assert got.equals(expected)
    assert "edge" in got.columns
    # Bins: each followed by its value in the source's units.
    by_bin = vf.reduce(cli_partials, by=["alpha1_bin"])
    assert by_bin.columns[:2] == ["alpha1_bin", "alpha1"]
    assert (by_bin["alpha1"] - by_bin["alpha1_bin"] * 1e-4).abs().max() < 1e-12
    with pytest.raises(vf.ReduceError, match="no partial"):
        vf.reduce(tmp_path)


def test_plot(cli_partials: Path, tmp_path: Path) -> None:
    png = tmp_path / "h.png"
    fig = vf.plot.heatmap(cli_partials, x="alpha1_bin", y="orderSide", z="mean_return_60", path=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig._repr_png_() == png.read_bytes()
    assert fig.groups == vf.reduce(cli_partials).height
    # The CLI draws the same figure, byte for byte.
    cli_png = tmp_path / "cli.png"
    cli("plot", "heatmap", str(cli_partials), "--x", "alpha1_bin", "--y", "orderSide",
        "--z", "mean_return_60", "-o", str(cli_png))
    assert cli_png.read_bytes() == png.read_bytes()
    svg = vf.plot.line(cli_partials, x="alpha1_bin", y=["mean_return_60", "mean_return_300"],
                       path=tmp_path / "l.svg", color="orderSide")
    assert svg._repr_svg_().lstrip().startswith("<svg")
    html = vf.plot.heatmap(cli_partials, x="alpha1_bin", y="orderSide", z="vwap",
                           path=tmp_path / "h.html", dates="20240103")
    assert "<svg" in html._repr_html_()
    # From a frame of groups (from reduce), without writing a file.
    m = vf.reduce(cli_partials, where="orderSide = 'B'")
    shown = vf.plot.heatmap(m, x="alpha1", y="orderSide", z="count", min_count=3)
    assert shown.path is None and shown.data[:4] == b"\x89PNG"
    assert shown.groups == m.height
    with pytest.raises(vf.ReduceError, match="no metric 'nope'"):
        vf.plot.heatmap(cli_partials, x="alpha1_bin", y="orderSide", z="nope", path=png)


def test_serve_answers_as_reduce(cli_partials: Path) -> None:
    import urllib.parse
    import urllib.request

    with vf.serve(cli_partials) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.running
        page = urllib.request.urlopen(server.url).read().decode()
        assert "<title>" in page
        query = urllib.parse.urlencode({"by": "orderSide", "metric": "edge=sum(return_60) / count(return_60)"})
        answer = json.loads(urllib.request.urlopen(f"{server.url}api/reduce?{query}").read())
        expected = vf.reduce(cli_partials, by=["orderSide"], metrics={"edge": "sum(return_60) / count(return_60)"})
        assert [r["edge"] for r in answer["rows"]] == expected["edge"].to_list()
        assert [r["count"] for r in answer["rows"]] == expected["count"].to_list()
    assert not server.running
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)
    with pytest.raises(vf.DataError, match="not a directory of partials"):
        vf.serve(cli_partials / "nope")


# ---- the engine --------------------------------------------------------------------


def test_engine_fed_shuffled_chunks_equals_replay(data: Path, cli_partials: Path, pipeline_path: Path) -> None:
    p = vf.Pipeline.from_toml(pipeline_path)
    files = sorted(data.glob("alpha_*.feather"))
    first = pl.read_ipc(files[0])
    for workers, seed in ((1, 1), (2, 2), (4, 3)):
        engine = vf.Engine(p, schema=first.schema, workers=workers)
        results = []
        for i, path in enumerate(files):
            frame = pl.read_ipc(path).with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int32))
            frame = frame.sample(fraction=1.0, shuffle=True, seed=seed + i)
            engine.begin_date(path.stem.split("_")[1])
            for k, chunk in enumerate(frame.iter_slices(997)):
                engine.push(chunk.to_arrow() if k % 2 else chunk)  # Polars and pyarrow
            results += list(engine.results())
        rest = engine.finish()
        assert all(r.final and r.ok and r.report["counts"]["rows_read"] == 30_000 for r in results)
        got = pl.concat([r.partial for r in results] + [rest])
        assert got.sort(KEYS).equals(read_partials(cli_partials).sort(KEYS)), f"workers={workers}"
        with pytest.raises(vf.EngineError, match="finished"):
            engine.begin_date("20240110")


def test_engine_streams_provisional_results(data: Path, pipeline_path: Path, tmp_path: Path) -> None:
    text = pipeline_path.read_text() + '\n[stream]\nlateness = "2s"\nemit_every = "60m"\n'
    p = vf.Pipeline.from_toml_str(text)
    # The date's rows in event order (the generated file's are not), as a feed sends
    # them and as a file a replay reads.
    frame = pl.read_ipc(data / "alpha_20240102.feather").with_row_index("row_id")
    timed = vf.parse_time(frame, "20240102", timestamp="ticktime", format="hhmmssmmm")
    ordered = (frame.join(timed.select("row_id", "elapsed_ms"), on="row_id")
               .sort("elapsed_ms", "row_id").drop("elapsed_ms", "row_id"))
    ordered.write_ipc(tmp_path / "alpha_20240102.feather")
    engine = vf.Engine(p, schema=ordered.schema, workers=2)
    engine.begin_date(dt.date(2024, 1, 2))
    seen = []
    for chunk in ordered.iter_slices(5000):
        engine.push(chunk)
        seen += list(engine.results())
    engine.end_date()
    rest = engine.finish()
    seen += list(engine.results())  # those that came out as the date closed
    provisional = [r for r in seen if not r.final]
    watermarks = [r.watermark_ms for r in provisional]
    # Every hour of the CN day's four, in order.
    assert watermarks == [3_600_000 * k for k in range(1, 5)]
    final = pl.concat([r.partial for r in seen if r.final] + [rest])
    replay = vf.run(p, input_dir=tmp_path, dates="20240102", workers=1, progress="quiet")
    assert vf.run.last_summary["dates"][0]["report"]["counts"].get("stream.late_rows", 0) == 0
    assert final.sort(KEYS).equals(replay.sort(KEYS))
    # The last provisional result, at the close, is the final partial.
    assert provisional[-1].partial.sort(KEYS).equals(replay.sort(KEYS))


def test_engine_errors(pipeline_path: Path, data: Path) -> None:
    p = vf.Pipeline.from_toml(pipeline_path)
    frame = pl.read_ipc(data / "alpha_20240102.feather")
    engine = vf.Engine(p, schema=frame.schema, workers=1)
    with pytest.raises(vf.EngineError, match="push called before begin_date"):
        engine.push(frame)
    engine.begin_date("20240103")
    with pytest.raises(vf.EngineError, match="feed dates in increasing order"):
        engine.begin_date("20240102")
    with pytest.raises(vf.DataError, match="column 'alpha1' is missing"):
        engine.push(frame.drop("alpha1"))
    with pytest.raises(vf.DataError, match="expected a Polars DataFrame"):
        engine.push([1, 2, 3])
    # Frames of other types than the Engine's schema, bad row_ids.
    with pytest.raises(vf.DataError, match="pushed frame: .*alpha1"):
        engine.push(frame.with_columns(pl.col("alpha1").cast(pl.String)))
    with pytest.raises(vf.DataError, match="row_id column has the negative value -1"):
        engine.push(frame.with_columns(row_id=pl.int_range(-1, frame.height - 1)))
    with pytest.raises(vf.DataError, match="row_id column is Float64"):
        engine.push(frame.with_columns(row_id=pl.lit(1.0)))
    engine.finish()
    with pytest.raises(vf.PipelineError, match="alpha1"):
        vf.Engine(p, schema=frame.drop("alpha1").schema)


# ---- rules in Python ---------------------------------------------------------------


def test_python_rule_equals_a_plain_loop(data: Path, tmp_path: Path) -> None:
    # Each symbol's running position through the day, in event order, and the
    # number of its fill; grouped by side and position sign.
    @vf.rule(inputs=["orderSide", "qty"], outputs={"position": pl.Int64, "nth": pl.Int64})
    def position(rows: pl.DataFrame) -> dict:
        signed = pl.when(pl.col("orderSide") == "B").then(pl.col("qty")).otherwise(-pl.col("qty"))
        return {"position": rows.select(signed.cum_sum()).to_series(),
                "nth": pl.int_range(1, rows.height + 1, eager=True)}

    p = vf.Pipeline.from_dict({
        "input": {"dir": str(data), "pattern": "alpha_{date}.feather"},
        "output": {"dir": str(tmp_path / "out")},
        "columns": {"timestamp": "ticktime", "symbol": "ukey"},
        "cast": [{"column": "qty", "to": "int64"}],
        "time": {"market": "CN", "format": "hhmmssmmm"},
        "derive": {"long": "position > 0"},
        "aggregate": {"group_by": ["orderSide", "long"],
                      "metrics": {"rows": "count()", "total": "sum(position)", "last": "max(nth)"}},
    }).with_rule(position)
    got = vf.run(p, workers=2, progress="quiet")

    # The oracle: rows in event order (trading time, then row), a loop per symbol.
    expected = []
    for path in sorted(data.glob("alpha_*.feather")):
        date = path.stem.split("_")[1]
        frame = pl.read_ipc(path).with_row_index("row_id").with_columns(pl.col("qty").round().cast(pl.Int64))
        timed = vf.parse_time(frame, date, timestamp="ticktime", format="hhmmssmmm")
        counts: dict[tuple, list] = {}
        state: dict[int, tuple[int, int]] = {}
        for row in timed.sort("elapsed_ms", "row_id").iter_rows(named=True):
            pos, nth = state.get(row["ukey"], (0, 0))
            pos += row["qty"] if row["orderSide"] == "B" else -row["qty"]
            nth += 1
            state[row["ukey"]] = (pos, nth)
            key = (row["orderSide"], pos > 0)
            c = counts.setdefault(key, [0, 0, 0])
            c[0] += 1
            c[1] += pos
            c[2] = max(c[2], nth)
        for (side, long), (rows, total, last) in counts.items():
            expected.append({"date": dt.datetime.strptime(date, "%Y%m%d").date(), "orderSide": side,
                             "long": long, "rows": rows, "total": total, "last": last})
    expected = pl.DataFrame(expected)
    keys = ["date", "orderSide", "long"]
    got = got.select(expected.columns).sort(keys)
    assert got.equals(expected.sort(keys).cast(got.schema))


def test_python_rule_errors_fail_the_date(data: Path, pipeline_path: Path) -> None:
    @vf.rule(inputs=["qty"], outputs={"x": pl.Int64})
    def short(rows: pl.DataFrame) -> pl.DataFrame:
        return rows.head(1).select(x=pl.lit(1))

    text = pipeline_path.read_text().replace('closed_count = "sum(is_closed)"',
                                             'closed_count = "sum(is_closed)"\nx = "sum(x)"')
    p = vf.Pipeline.from_toml_str(text).with_rule(short)
    with pytest.raises(vf.DataError, match=r"PythonRule\(short\): the function returned 1 rows"):
        vf.run(p, input_dir=data, dates="20240102", progress="quiet")

    @vf.rule(inputs=["qty"], outputs={"x": pl.Int64})
    def raises(rows: pl.DataFrame) -> pl.DataFrame:
        raise ValueError("no good")

    p = vf.Pipeline.from_toml_str(text).with_rule(raises)
    with pytest.raises(vf.DataError, match="ValueError: no good"):
        vf.run(p, input_dir=data, dates="20240102", progress="quiet")


def test_python_rules_refuse_stream(pipeline_path: Path) -> None:
    @vf.rule(inputs=["qty"], outputs={"y": pl.Int64})
    def y(rows: pl.DataFrame) -> pl.DataFrame:
        return rows.select(y=pl.col("qty").cast(pl.Int64))

    p = vf.Pipeline.from_toml_str(pipeline_path.read_text() + '\n[stream]\nlateness = "2s"\n')
    with pytest.raises(vf.PipelineError, match="rule 'y' is written in Python and cannot run under"):
        p.with_rule(y)


def test_a_rule_changes_the_pipeline_hash(pipeline_path: Path) -> None:
    def make(offset: int) -> vf.Rule:
        if offset:
            @vf.rule(inputs=["qty"], outputs={"y": pl.Int64}, name="y")
            def y(rows):
                return rows.select(y=pl.col("qty") + 1)
        else:
            @vf.rule(inputs=["qty"], outputs={"y": pl.Int64}, name="y")
            def y(rows):
                return rows.select(y=pl.col("qty"))
        return y

    p = vf.Pipeline.from_toml(pipeline_path)
    assert p.with_rule(make(0)).hash != p.with_rule(make(1)).hash
    assert p.with_rule(make(0)).hash == p.with_rule(make(0)).hash != p.hash


# ---- stateless operators -----------------------------------------------------------


def test_operators_on_frames_equal_inspect(data: Path, tmp_path: Path) -> None:
    frame = pl.read_ipc(data / "alpha_20240102.feather").with_columns(
        mid=(pl.col("AskPrice1") + pl.col("BidPrice1")) / 2)
    returns = vf.forward_return(frame, "20240102", price="mid", horizons=[60, "close"],
                                timestamp="ticktime", symbol="ukey", format="hhmmssmmm")
    # The CLI's rows after the keyed stage, for the same pipeline.
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
input = {{ dir = "{data}", pattern = "alpha_{{date}}.feather" }}
output = {{ dir = "{tmp_path}" }}
columns = {{ timestamp = "ticktime", symbol = "ukey" }}
derive = {{ mid = "(AskPrice1 + BidPrice1) / 2" }}
time = {{ market = "CN", format = "hhmmssmmm" }}
forward_return = {{ price = "mid", horizons = [60, "close"] }}
aggregate = {{ group_by = [], metrics = {{ a = "count(return_60)", b = "count(return_close)" }} }}
""")
    out = tmp_path / "rows.parquet"
    cli("inspect", str(pipeline), "--date", "20240102", "--after", "enrich", "-o", str(out))
    expected = pl.read_parquet(out).sort("row_id")
    got = returns.sort("row_id")
    for column in ["row_id", "elapsed_ms", "return_60", "return_close"]:
        assert got[column].equals(expected[column].cast(got[column].dtype)), column

    binned = vf.bin(frame, {"alpha1": 1e-4})
    oracle = [int(abs(v) / 1e-4 + 0.5) * (1 if v >= 0 else -1) for v in frame["alpha1"]]
    assert binned["alpha1_bin"].to_list() == oracle

    fills = frame.with_columns(pl.col("qty").round().cast(pl.Int64)).filter(pl.col("ukey") == frame["ukey"][0])
    matched = vf.fifo_match(fills, "20240102", side="orderSide", qty="qty", timestamp="ticktime",
                            symbol="ukey", price="fillPrice")
    # Every exit's matched quantities add up to at most its quantity.
    exits = matched.filter(pl.col("orderSide") == "S").group_by("row_id").agg(
        pl.col("matched_qty").sum(), pl.col("qty").first())
    assert (exits["matched_qty"] <= exits["qty"]).all()
    assert vf.markets.PRESETS["CN"].trading_ms == 4 * 3600 * 1000
    assert vf.calendar.trading_days(dir=data, pattern="alpha_{date}.feather") == [
        dt.date(2024, 1, d) for d in (2, 3, 4, 5)]


# ---- zero copy ---------------------------------------------------------------------


def test_results_and_inputs_cross_without_copying(cli_partials: Path) -> None:
    # Out, as every result goes: a column made in Rust is where the frame holds it.
    table, address = _vizflow.exported_probe()
    frame = vf._frame(table)
    assert frame["x"].to_arrow().buffers()[1].address == address
    assert frame["x"].sum() == sum(range(1000))
    # In, as the engine reads a frame (normalised): a float column is not copied.
    source = pl.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})
    assert _vizflow.buffer_address(source, "x") == source["x"].to_arrow().buffers()[1].address

    table, _, _ = _vizflow.reduce(str(cli_partials), by=["alpha1_bin"])
    assert isinstance(table, pa.Table)
    arrow_address = table.column("total_notional").chunks[0].buffers()[1].address
    # pyarrow holds the buffer Rust made (the C data interface hands over the pointer) ...
    assert _vizflow.buffer_address(table, "total_notional") == arrow_address
    # ... and the Polars frame the API returns holds it too.
    # (Polars exports what it holds without copying: the address it gives back is the
    # one it holds.)
    frame = pl.from_arrow(table, rechunk=False)
    assert frame["total_notional"].to_arrow().buffers()[1].address == arrow_address
    # Inputs: the engine reads a Polars frame's buffers where they are.
    source = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    assert _vizflow.buffer_address(source, "x") == source["x"].to_arrow().buffers()[1].address
