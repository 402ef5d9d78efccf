"""What every benchmark shares: the broker, an EV_Central process, seed files, /proc figures,
Kafka group offsets and lag, and the JSON result files.

Central runs as its real program (`EV_Central ... --ui plain --seed FILE --group-id G`), as the
end-to-end tests start it (tests/support/processes.py); the broker is the project's own
(`evcharging.ops.kafka_broker`) on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tests.support.ports import free_port

from bench.stats import LagSample
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.contracts.topics import CP_EVENTS, DRIVER_EVENTS, Topic
from evcharging.ops import kafka_broker
from evcharging.services.cp_auth import make_verifier, new_secret

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# EV_BENCH_DOCS redirects every result and the report (the smoke test writes to a tmp folder)
DOCS = Path(os.environ.get("EV_BENCH_DOCS") or REPO / "docs")
RESULTS = DOCS / "bench"


def shown(path: Path) -> str:
    """A path as the docs and logs name it: from the repo root when it is inside the repo."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


CENTRAL_TOPICS: tuple[Topic, ...] = (CP_EVENTS, DRIVER_EVENTS)
ADMIN_TOKEN = "bench-admin-token"
_TICK = os.sysconf("SC_CLK_TCK")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def command_line() -> str:
    """How this run was started, as a reader would type it."""
    return "python -m bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python -m bench"


# --- the machine and its processes -------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def machine_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuWatch:
    """CPU % of some processes (100 % = one core) and of the whole machine over a window."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0
    _machine0: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_busy_jiffies()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-6)
        out = {
            f"{name}_cpu_pct": round(100 * (cpu_seconds(pid) - self._start[name]) / wall, 1)
            for name, pid in self.pids.items()
        }
        busy1, total1 = machine_busy_jiffies()
        busy0, total0 = self._machine0
        cores = os.cpu_count() or 1
        out["machine_cpu_pct"] = round(100 * cores * (busy1 - busy0) / max(total1 - total0, 1), 1)
        # anything else on the machine (another test run...): a noisy window shows here
        ours = sum(v for k, v in out.items() if k != "machine_cpu_pct")
        out["others_cpu_pct"] = round(max(0.0, out["machine_cpu_pct"] - ours), 1)
        return out


def raise_fd_limit() -> int:
    """Thousands of sockets need thousands of descriptors: soft limit up to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the broker ---------------------------------------------------------------------------------


@contextlib.contextmanager
def broker(workdir: Path, bootstrap: str | None, heap: str = "512m") -> Iterator[tuple[str, int]]:
    """A broker for the run: ours on free ports, or the one at `bootstrap`; (address, pid)."""
    if bootstrap:
        yield bootstrap, 0
        return
    port, controller = free_port(), free_port()
    cfg = kafka_broker.BrokerConfig(
        port=port, controller_port=controller, data_dir=workdir / "kafka", heap=heap
    )
    log.info("starting a Kafka broker in %s", cfg.data_dir)
    kafka_broker.start(cfg)
    try:
        yield cfg.bootstrap, int(cfg.pid_file.read_text().strip())
    finally:
        kafka_broker.stop(cfg)


# --- seed files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """The CPs and drivers of one run: CP i is served by driver i."""

    prefix: str
    size: int

    def cp_id(self, i: int) -> str:
        return f"{self.prefix}{i:05d}"

    def driver_id(self, i: int) -> str:
        return f"D{self.prefix}{i:05d}"

    @staticmethod
    def price(i: int) -> str:
        return f"0.{30 + i % 20:02d}"

    @staticmethod
    def location(i: int) -> str:
        return f"Bench site {i}"

    @property
    def cp_ids(self) -> list[str]:
        return [self.cp_id(i) for i in range(self.size)]

    def write_seed(self, path: Path) -> Path:
        """YAML in the format of src/evcharging/data/sample_network.yaml."""
        lines = ["charging_points:"]
        lines += [
            f'  - {{id: {self.cp_id(i)}, location: "{self.location(i)}", '
            f'price_eur_per_kwh: "{self.price(i)}"}}'
            for i in range(self.size)
        ]
        lines.append("drivers:")
        lines += [
            f'  - {{id: {self.driver_id(i)}, name: "Driver {i}", balance_eur: "100000.00"}}'
            for i in range(self.size)
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


# --- EV_Central ---------------------------------------------------------------------------------


@dataclass
class Central:
    """One EV_Central process with its own database, ports and consumer group."""

    popen: subprocess.Popen[bytes]
    port: int
    http_port: int
    group_id: str
    log_path: Path
    argv: list[str]
    started_at: float
    stop_s: float | None = None  # how long SIGTERM took to end it
    killed: bool = False  # it had to be SIGKILLed
    audit_path: Path | None = None  # its audit log (JSON lines), one per run

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_counts(self) -> dict[str, int]:
        """What Central complained about during the run (its log is kept in the work folder)."""
        text = self.output()
        return {
            "errors": text.count(" ERROR "),
            "warnings": text.count(" WARNING "),
            "tracebacks": text.count("Traceback"),
            "ws_too_slow": text.count("client too slow"),
            "monitor_links_ended": text.count("monitor link "),
            "records_rejected": self.rejected(),
        }

    def rejected(self) -> int:
        """Records and frames Central dropped (forged, replayed, malformed...): its audit rows."""
        try:
            text = self.audit_path.read_text(encoding="utf-8") if self.audit_path else ""
        except OSError:
            return 0
        return text.count('"action": "message.rejected"')

    async def wait_loaded(self, size: int, within: float) -> float:
        """Until Central's start-up has loaded every CP (it says so); seconds since launch."""
        wanted = f"Central started: {size} CPs loaded"
        deadline = time.monotonic() + within
        while wanted not in self.output():
            if not self.alive:
                raise RuntimeError(f"EV_Central exited during start:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"EV_Central not loaded within {within}s:\n{self.output()[-3000:]}"
                )
            await asyncio.sleep(0.1)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(timeout=5, headers=headers) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.api}/api/requests")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Central's API is not up:\n{self.output()[-3000:]}")
                await asyncio.sleep(0.1)
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it has not exited within 20 s."""
        if not self.alive:
            return
        t0 = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("EV_Central pid=%s ignored SIGTERM for 20 s; killing it", self.pid)
            self.killed = True
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.stop_s = round(time.monotonic() - t0, 1)


def new_group_id(name: str) -> str:
    return f"bench-{name}-{os.getpid()}-{int(time.time())}"


BENCH_SECRET = new_secret()  # this run's one CP secret (`issue_credentials`), never written out


def issue_credentials(db: Path, net: Network) -> str:
    """Register every CP of `net` in Central's database before it starts, as the Registry does,
    but with one secret and salt for all (one scrypt stretch instead of N: registering is not what
    a scale run measures; Central's side of each AUTH is exactly a real Monitor's)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    verifier = make_verifier(BENCH_SECRET)
    repo = SqliteRepository(db)
    try:
        for i in range(net.size):
            repo.enrol_cp(net.cp_id(i), net.location(i), Decimal(net.price(i)), verifier)
    finally:
        repo.close()
    return BENCH_SECRET


def central_argv(
    kafka: str,
    db: Path,
    seed: Path,
    group: str,
    ports: tuple[int, int],
    *,
    encryption: bool = True,
    audit: Path | None = None,
) -> list[str]:
    """EV_Central's command line for a run. `encryption=False`: `--cp-encryption off`, the
    comparison mode of issue 14 (AUTH_OK without a key, plain records on cp-events and
    cp-commands); the load generator mirrors it. On, Central's master key file is its default
    (`.evcharging/central-master.key` in the work folder, made at first start)."""
    port, http_port = ports
    argv = [
        str(BIN / "EV_Central"),
        str(port),
        kafka,
        "--db",
        str(db),
        "--http-port",
        str(http_port),
        "--http-host",
        "127.0.0.1",
        "--listen-host",
        "127.0.0.1",
        "--admin-token",
        ADMIN_TOKEN,
        "--ui",
        "plain",
        "--seed",
        str(seed),
        "--group-id",
        group,
    ]
    if audit is not None:
        argv += ["--audit-file", str(audit)]
    if not encryption:
        argv += ["--cp-encryption", "off"]
    return argv


def start_central(
    kafka: str, workdir: Path, seed: Path, name: str, group: str, *, encryption: bool = True
) -> Central:
    workdir.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    db = workdir / f"{name}.db"
    audit = workdir / f"{name}-audit.jsonl"
    argv = central_argv(
        kafka, db, seed, group, (port, http_port), encryption=encryption, audit=audit
    )
    log_path = workdir / f"{name}-central.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EV_LOG_LEVEL": "INFO"}
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    log.info("started EV_Central pid=%s (%s), log %s", popen.pid, name, log_path)
    return Central(
        popen, port, http_port, group, log_path, argv, time.monotonic(), audit_path=audit
    )


# --- Kafka: the group's starting point and its lag ----------------------------------------------


def partitions(topics: Sequence[Topic]) -> list[TopicPartition]:
    return [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]


async def start_group_at_end(kafka: str, group_id: str, topics: Sequence[Topic]) -> None:
    """Commit the current end offsets for a new group, so a fresh Central reads only this run's
    events (one broker serves every run; Central's group otherwise starts at the earliest)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = partitions(topics)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


WARMUP_TOPIC = Topic("bench-warmup", 12, doc="traffic that warms a fresh broker's JVM up")


async def warm_up_broker(kafka: str, seconds: float = 8.0) -> int:
    """A fresh broker's JVM compiles its hot paths during the first seconds of traffic, using
    a core for it: send it traffic of the benchmarks' shape first (batched, and acked one by
    one), on a topic of its own, so no benchmark pays for it. Returns the messages sent."""
    await kafka_broker.create_topics(kafka, [WARMUP_TOPIC])
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5, acks="all")
    consumer = AIOKafkaConsumer(WARMUP_TOPIC.name, bootstrap_servers=kafka, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    sent = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for k in range(200):
                await producer.send(WARMUP_TOPIC.name, b"x" * 300, key=f"k{k}".encode())
            await producer.send_and_wait(WARMUP_TOPIC.name, b"y", key=b"acked")
            await consumer.getmany(timeout_ms=10)
            sent += 201
    finally:
        await producer.stop()
        await consumer.stop()
    return sent


class LagProbe:
    """Samples the end offsets of Central's topics and the offsets its group has committed."""

    def __init__(self, kafka: str, group_id: str, topics: Sequence[Topic] = CENTRAL_TOPICS):
        self.group_id = group_id
        self._tps = partitions(topics)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def sample(self) -> LagSample:
        t = time.time()
        ends = await self._consumer.end_offsets(self._tps)
        offsets = await self._admin.list_consumer_group_offsets(self.group_id, partitions=self._tps)
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        return LagSample(t, dict(ends), committed)

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()


# --- results ------------------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """JSON has no infinity: inf/NaN (never seen, never caught up) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_result(name: str, parameters: dict[str, Any], results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine(),
        "date": utc_now(),
        "command": command_line(),
        "parameters": finite(parameters),
        "results": finite(results),
    }
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    log.info("wrote %s", shown(path))
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data
