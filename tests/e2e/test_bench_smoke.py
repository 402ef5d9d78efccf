"""`python -m bench --quick`: the benchmark suite runs end to end (its own broker, EV_Central,
the load generator) and writes its results and report, here into a tmp folder, not docs/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_measures_every_figure_and_writes_the_report(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=REPO,
        env={**os.environ, "EV_BENCH_DOCS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "bench").glob("*.json")}
    assert {"auth", "fault", "scale"} <= set(results)
    auth = results["auth"]["results"]
    assert auth["request_to_response"]["n"] == results["auth"]["parameters"]["requests"]
    assert auth["request_to_response"]["never_seen"] == 0
    runs = results["scale"]["results"]["runs"]
    assert [r["n"] for r in runs] == [50, 100]
    assert [r["failures"] for r in runs] == [[], []]
    assert all(r["holds"] for r in runs), runs
    report = (tmp_path / "performance.md").read_text(encoding="utf-8")
    for section in ("## Targets", "## Authorisation latency", "## Fault propagation", "## Scale"):
        assert section in report
