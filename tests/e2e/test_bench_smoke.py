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


def test_the_encryption_sitting_compares_both_modes_and_reports_the_ratios(tmp_path: Path) -> None:
    """`python -m bench encryption`: the micro-benchmark, then authorisation and the scale runs
    with per-CP keys on and off alternately (Central with --cp-encryption off for off)."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "encryption", "--quick", "--repeat", "1"],
        cwd=REPO,
        env={**os.environ, "EV_BENCH_DOCS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "bench").glob("*.json")}
    assert {"seal", "encryption-auth", "encryption-holds"} <= set(results)
    auth = results["encryption-auth"]["results"]
    assert [(r["mode"], r["request_to_response"]["never_seen"]) for r in auth["runs"]] == [
        ("on", 0),
        ("off", 0),
    ]
    holds = results["encryption-holds"]["results"]
    assert [(r["mode"], r["holds"], r["failures"]) for r in holds["runs"]] == [
        ("on", True, []),
        ("off", True, []),
    ]
    on = holds["runs"][0]["loadgen"]
    assert on["keys_held"] == on["cps"]  # every CP got its key at AUTH_OK
    assert on["commands_rejected"] == {}  # and every command Central sealed opened
    assert holds["runs"][0]["central_log"]["records_rejected"] == 0  # and Central every event
    assert holds["verdict"]["on"]["largest_n"] == 50
    report = (tmp_path / "performance.md").read_text(encoding="utf-8")
    assert "## Encryption cost (issue 14)" in report
    assert "| largest N that holds | 50 | 50 | 1.00 |" in report


def test_the_ocpp_benchmark_drives_chargers_through_a_gateway(tmp_path: Path) -> None:
    """`python -m bench ocpp --quick`: 20 OCPP chargers (the `ocpp` package, in a process of
    their own) boot at a real EV_OCPP, supply and send MeterValues every second; every reading is
    answered and reaches Central's screen, and the gateway's CPU per message is measured."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "ocpp", "--quick"],
        cwd=REPO,
        env={**os.environ, "EV_BENCH_DOCS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "bench" / "ocpp.json").read_text())
    (only,) = data["results"]["runs"]
    assert (only["n"], only["supplying"], only["boots"].get("Rejected", 0)) == (20, 20, 0)
    window = only["meter_values_window"]
    assert window["sent"] >= 20 * 3
    assert window["answered"] == window["sent"]
    assert only["call_to_result"]["n"] == window["sent"]
    assert only["meter_values_to_screen"]["never_seen"] == 0  # every reading reached Central
    assert only["gateway_cpu_us_per_meter_values"] > 0
    assert only["stop_transactions"] == {"stopped": 20}
    assert only["sessions_ended"] is True
    assert only["gateway_log"]["tracebacks"] == 0
    report = (tmp_path / "performance.md").read_text(encoding="utf-8")
    assert "## OCPP gateway (issue 16)" in report
    assert "| 20 |" in report
