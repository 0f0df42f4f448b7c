"""Fixtures: generated dates (by the `vizflow gen` command, deterministic) and the CLI.

The CLI binary is `$VIZFLOW_BIN`, else the workspace's `target/debug/vizflow` (built by
`cargo test` / `cargo build`): the tests compare the package with it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATES = "20240102..20240105"


def cli_path() -> Path:
    path = Path(os.environ.get("VIZFLOW_BIN", ROOT / "target" / "debug" / "vizflow"))
    if not path.exists():
        raise RuntimeError(f"{path}: build the CLI first (cargo build), or set VIZFLOW_BIN")
    return path


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the `vizflow` command line."""
    done = subprocess.run([str(cli_path()), *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"vizflow {' '.join(args)} failed:\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four dates of 30,000 rows over 40 symbols (alpha schema)."""
    out = tmp_path_factory.mktemp("data")
    cli("gen", "--out", str(out), "--dates", DATES, "--rows", "30000", "--symbols", "40", "--seed", "7")
    return out


@pytest.fixture(scope="session")
def pipeline_path() -> Path:
    return ROOT / "examples" / "alpha_markout.toml"


@pytest.fixture(scope="session")
def cli_partials(tmp_path_factory: pytest.TempPathFactory, data: Path, pipeline_path: Path) -> Path:
    """The CLI's partials of the alpha markout pipeline over the dates."""
    out = tmp_path_factory.mktemp("cli")
    cli("run", str(pipeline_path), "--input-dir", str(data), "--output-dir", str(out),
        "--workers", "2", "--progress", "quiet")
    return out
