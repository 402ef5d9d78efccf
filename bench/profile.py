"""Reads a py-spy profile of Central (`py-spy record --format raw`: one folded stack per line,
`frame;frame;...;frame count`) into its top functions and where its CPU time goes by library."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RATE_HZ = 100

_LINE = re.compile(r":\d+\)$")
_FILE = re.compile(r"\((?P<file>[^()]*?)(?::\d+)?\)$")

# Where a sample's innermost frame lives -> a name a reader knows; first match wins.
AREAS = (
    ("jsonschema", "OCPP schema validation (jsonschema)"),
    ("site-packages/ocpp/", "OCPP library (ocpp)"),
    ("adapters/ocpp/", "EV_OCPP adapter (charger, server)"),
    ("services/ocpp_gateway", "EV_OCPP gateway service"),
    ("adapters/sockets/central_logins", "EV_OCPP links to Central"),
    ("services/monitor", "EV_OCPP links to Central"),
    ("aiokafka", "Kafka client (aiokafka)"),
    ("kafka/", "Kafka client (aiokafka)"),
    ("sqlite", "SQLite"),
    ("adapters/db/", "SQLite"),
    ("logging/", "logging"),
    ("pydantic", "pydantic (events)"),
    ("contracts/events", "pydantic (events)"),
    ("json/", "json"),
    ("websockets", "WebSocket / HTTP server"),
    ("uvicorn", "WebSocket / HTTP server"),
    ("starlette", "WebSocket / HTTP server"),
    ("adapters/web/", "WebSocket / HTTP server"),
    ("adapters/sockets/", "Monitor sockets (framing)"),
    ("contracts/frames", "Monitor sockets (framing)"),
    ("asyncio/", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("decimal", "decimal / money"),
    ("uuid.py", "uuid / dataclasses (ids, immutable records)"),
    ("dataclasses.py", "uuid / dataclasses (ids, immutable records)"),
    ("domain/", "domain rules"),
    ("services/", "Central service"),
)


def _short(frame: str) -> str:
    """`handler (/long/path/src/evcharging/services/central.py:42)` -> `handler (services/central.py)`."""
    frame = _LINE.sub(")", frame)
    for marker in ("site-packages/", "src/evcharging/", "lib/python3"):
        at = frame.find(marker)
        if at >= 0:
            start = frame.rfind("(", 0, at) + 1
            rest = frame[at + len(marker) :]
            if marker == "lib/python3":
                rest = rest.split("/", 1)[-1]
            return frame[:start] + rest
    return frame


def area(frame: str) -> str:
    match = _FILE.search(frame)
    path = match.group("file") if match else frame
    for marker, name in AREAS:
        if marker in path:
            return name
    return "other"


def top_functions(folded: Path, rate: int, seconds: float, limit: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        areas[area(stack.split(";")[-1])] += count
        for name in set(frames):
            total[name] += count

    def share(counter: Counter[str], skip_common: bool = False) -> list[dict[str, Any]]:
        top = max(counter.values(), default=0)
        rows = counter.most_common()
        if skip_common:  # frames on (nearly) every stack, the loop's own, say nothing
            rows = [(name, c) for name, c in rows if c < 0.85 * top]
        return [
            {"function": name, "pct": round(100 * c / max(samples, 1), 1)}
            for name, c in rows[:limit]
        ]

    return {
        "samples": samples,
        "busy_pct_of_one_core": round(100 * samples / max(rate * seconds, 1), 1),
        "by_area": share(areas),
        "self": share(own),
        "inclusive": share(total, skip_common=True),
    }


class Profiler:
    """`py-spy record` against a running process, from `start()` to `stop()` (SIGINT)."""

    def __init__(self, pid: int, out: Path, rate: int = RATE_HZ) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self._proc: subprocess.Popen[bytes] | None = None
        self._t0 = 0.0

    def start(self) -> None:
        from bench.harness import BIN

        argv = [str(BIN / "py-spy"), "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--format", "raw", "--output", str(self.out)]
        log.info("py-spy recording pid=%s into %s", self.pid, self.out)
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> dict[str, Any]:
        from bench.harness import shown  # harness imports this module

        proc, seconds = self._proc, time.monotonic() - self._t0
        if proc is None:
            return {"error": "not started"}
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not self.out.exists():
            return {"error": err.decode(errors="replace")[-500:]}
        where = shown(self.out)
        return {
            "folded": where,
            "seconds": round(seconds, 1),
            **top_functions(self.out, self.rate, seconds),
        }
