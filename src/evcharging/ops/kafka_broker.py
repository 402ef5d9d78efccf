"""A project-owned, single-node Apache Kafka broker (KRaft mode, no ZooKeeper).

Why: the programs and the integration tests need a real broker, and we do not want to depend on a
system-wide Kafka install or on Docker.  The jars come from ``kafka/pom.xml`` (Maven); the broker
runs as a detached JVM whose config, pid file, log and data all live under one data directory.
That makes ``start`` and ``stop`` idempotent, and lets ``stop`` prove that the pid it signals is
our broker (its command line names our ``server.properties``), so no other process is ever killed.

Unix only (sessions, signals, ``fcntl`` locks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from evcharging.contracts.topics import ALL_TOPICS, Topic

logger = logging.getLogger(__name__)

_POLL_S = 0.1
_LOG_TAIL_LINES = 40
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


def _find_kafka_home(start: Path) -> Path:
    """The repo's ``kafka/`` folder: the first ancestor of ``start`` holding ``kafka/pom.xml``."""
    for folder in start.resolve().parents:
        if (folder / "kafka" / "pom.xml").is_file():
            return folder / "kafka"
    raise BrokerError(f"no kafka/pom.xml above {start}; pass BrokerConfig(kafka_home=...)")


def _default_kafka_home() -> Path:
    return _find_kafka_home(Path(__file__))


@dataclass
class BrokerConfig:
    """Where the broker listens and where it keeps its files."""

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int | None = None
    advertised_host: str | None = None
    data_dir: Path = Path(".run/kafka")
    heap: str = "512m"
    kafka_home: Path = field(default_factory=_default_kafka_home)

    def __post_init__(self) -> None:
        # Absolute paths: the pid check matches them against the JVM's command line.
        self.data_dir = Path(self.data_dir).resolve()
        self.kafka_home = Path(self.kafka_home).resolve()
        if self.controller_port is None:
            self.controller_port = self.port + 1
        if self.advertised_host is None:
            if self.host in _WILDCARD_HOSTS:
                raise BrokerError(f"host {self.host!r} binds all interfaces: set advertised_host")
            self.advertised_host = self.host
        if self.controller_port == self.port:
            raise BrokerError(f"controller_port must differ from port ({self.port})")

    @property
    def bootstrap(self) -> str:
        """The address clients connect to (the advertised one, which is ``host`` by default)."""
        return f"{self.advertised_host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.data_dir / "log4j.properties"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def lib_dir(self) -> Path:
        return self.kafka_home / "lib"

    @property
    def classpath(self) -> str:
        return f"{self.lib_dir}/*"


# --- jars -------------------------------------------------------------------------------------


def fetch_jars(cfg: BrokerConfig) -> Path:
    """Make sure ``kafka/lib`` holds the broker jars; runs Maven only when they are missing."""
    if any(cfg.lib_dir.glob("kafka_2.13-*.jar")):
        return cfg.lib_dir
    pom = cfg.kafka_home / "pom.xml"
    logger.info("fetching Kafka jars with Maven from %s", pom)
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BrokerError("Maven (mvn) is not installed; it is needed to fetch Kafka") from exc
    if done.returncode != 0 or not any(cfg.lib_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return cfg.lib_dir


# --- our process ------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    """The process's command line, or "" when it is gone or a zombie."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            return ""
    ps = ["ps", "-o", "args=", "-p", str(pid)]
    return subprocess.run(ps, capture_output=True, text=True, check=False).stdout.strip()


def _is_our_broker(pid: int, cfg: BrokerConfig) -> bool:
    cmd = _cmdline(pid)
    return "kafka.Kafka" in cmd and str(cfg.server_properties) in cmd


def _running_pid(cfg: BrokerConfig) -> int | None:
    """The pid from our pid file if that process is alive and is our broker; else None."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _is_our_broker(pid, cfg) else None


def _gone(pid: int, cfg: BrokerConfig) -> bool:
    """True once our broker has exited; if it is our child, also reap it (no zombie left)."""
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # started by another process: its command line tells
        return not _is_our_broker(pid, cfg)
    return reaped == pid


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _locked(cfg: BrokerConfig) -> Iterator[None]:
    """Serialise start/stop on one data dir, so two callers never spawn two JVMs."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.data_dir / "broker.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"
    return text or f"({path} is empty)"


# --- config files and storage -----------------------------------------------------------------


def _server_properties(cfg: BrokerConfig) -> str:
    ctrl = f"127.0.0.1:{cfg.controller_port}"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{ctrl}",
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{cfg.advertised_host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(cfg.storage_dir),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _write_configs(cfg: BrokerConfig) -> None:
    cfg.server_properties.write_text(_server_properties(cfg))
    cfg.log4j_properties.write_text(_LOG4J)


def _java(cfg: BrokerConfig, *args: str) -> list[str]:
    log4j = f"-Dlog4j.configuration=file:{cfg.log4j_properties}"
    return ["java", "-Djava.awt.headless=true", log4j, "-cp", cfg.classpath, *args]


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, url-safe base64 without padding, as Kafka makes it."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # a leading "-" would read as a CLI option
            return cluster_id


def _format_storage(cfg: BrokerConfig) -> None:
    """Format the KRaft log dir once; a formatted dir keeps its cluster id and its topics."""
    if (cfg.storage_dir / "meta.properties").exists():
        return
    cmd = _java(cfg, "kafka.tools.StorageTool", "format", "-t", _new_cluster_id())
    done = subprocess.run(
        [*cmd, "-c", str(cfg.server_properties)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BrokerError(f"formatting {cfg.storage_dir} failed:\n{done.stdout}\n{done.stderr}")
    logger.info("formatted Kafka storage in %s", cfg.storage_dir)


def _spawn(cfg: BrokerConfig) -> subprocess.Popen[bytes]:
    """Start the JVM in its own session, so it outlives us and ignores our terminal's ^C."""
    cmd = _java(cfg, f"-Xmx{cfg.heap}", "kafka.Kafka", str(cfg.server_properties))
    with cfg.log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cfg.pid_file.write_text(f"{proc.pid}\n")
    logger.info("started Kafka broker pid=%s at %s", proc.pid, cfg.bootstrap)
    return proc


# --- readiness and topics ---------------------------------------------------------------------


async def _answers(bootstrap: str) -> bool:
    """True once the broker serves a metadata request and lists itself."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster["brokers"])
    except (KafkaError, OSError) as exc:
        logger.debug("broker at %s not ready yet: %s", bootstrap, exc)
        return False
    finally:
        await admin.close()


async def _wait_ready(cfg: BrokerConfig, alive: Callable[[], bool], deadline: float) -> None:
    """Wait until the broker answers a Kafka request; fail fast if the JVM exits."""
    host, port = str(cfg.advertised_host), cfg.port
    while True:
        if not alive():
            raise BrokerError(f"Kafka broker exited during start:\n{_tail(cfg.log_file)}")
        # TCP first: aiokafka logs an ERROR for every refused connection.
        if _port_open(host, port) and await _answers(cfg.bootstrap):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"Kafka not ready before the start timeout:\n{_tail(cfg.log_file)}")
        await asyncio.sleep(_POLL_S)


async def _ready_with_topics(cfg: BrokerConfig, alive: Callable[[], bool], deadline: float) -> None:
    await _wait_ready(cfg, alive, deadline)
    await create_topics(cfg.bootstrap)
    await _warm_up_group_coordinator(cfg.bootstrap, deadline)


async def _warm_up_group_coordinator(bootstrap: str, deadline: float) -> None:
    """A fresh broker creates its offsets topic on the first group request and answers
    "coordinator not available" meanwhile; asking here first keeps the programs' logs clean."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while time.monotonic() < deadline:
            try:
                await admin.find_coordinator("evcharging-warm-up")
            except KafkaError as exc:
                logger.debug("group coordinator not ready yet: %s", exc)
                await asyncio.sleep(_POLL_S)
            else:
                return
        logger.warning("group coordinator not ready before the start timeout; clients will retry")
    finally:
        await admin.close()


def _new_topic(topic: Topic) -> NewTopic:
    configs = {"cleanup.policy": "compact"} if topic.compacted else {}
    return NewTopic(topic.name, topic.partitions, 1, topic_configs=configs)


async def create_topics(bootstrap: str, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Create our topics explicitly (auto-creation is off, so partition counts are ours).

    Idempotent: topics that already exist are left as they are.
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics([_new_topic(t) for t in wanted])
    finally:
        await admin.close()
    for name, code, *rest in response.topic_errors:
        error = for_code(code)
        if code == 0:
            logger.info("created topic=%s", name)
        elif error is TopicAlreadyExistsError:
            logger.debug("topic=%s already exists", name)
        else:
            raise BrokerError(f"creating topic {name} failed: {error.__name__} {rest}")


# --- public commands --------------------------------------------------------------------------


def _start_locked(cfg: BrokerConfig) -> subprocess.Popen[bytes] | None:
    """Spawn a broker unless ours is already running; returns the new process or None."""
    pid = _running_pid(cfg)
    if pid is not None:
        if not _port_open(str(cfg.advertised_host), cfg.port):
            raise BrokerError(f"broker pid={pid} runs but does not answer at {cfg.bootstrap}")
        logger.info("Kafka broker already running pid=%s at %s", pid, cfg.bootstrap)
        return None
    local = "127.0.0.1" if cfg.host in _WILDCARD_HOSTS else cfg.host
    for host, port in ((local, cfg.port), ("127.0.0.1", cfg.controller_port)):
        if port is not None and _port_open(host, port):
            raise BrokerError(f"port {host}:{port} is already used by another process")
    fetch_jars(cfg)
    _write_configs(cfg)
    _format_storage(cfg)
    return _spawn(cfg)


def start(cfg: BrokerConfig, timeout: float = 60) -> str:
    """Start the broker (or find ours running), create the topics, return the bootstrap address.

    Blocks until the broker answers a Kafka request.  Call from synchronous code; from async code
    use ``await asyncio.to_thread(start, cfg)``.
    """
    with _locked(cfg):
        proc = _start_locked(cfg)
        if proc is None:
            asyncio.run(create_topics(cfg.bootstrap))
            return cfg.bootstrap
        try:
            deadline = time.monotonic() + timeout
            asyncio.run(_ready_with_topics(cfg, lambda: proc.poll() is None, deadline))
        except BaseException:
            _terminate(proc.pid, cfg, timeout=10)  # no half-started broker left behind
            raise
    return cfg.bootstrap


def _wait_gone(pid: int, cfg: BrokerConfig, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid, cfg):
            return True
        time.sleep(_POLL_S)
    return False


def _terminate(pid: int, cfg: BrokerConfig, timeout: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL if it is still there after ``timeout``."""
    if not _gone(pid, cfg):  # checked first: never signal a pid that is no longer ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, cfg, timeout):
        logger.warning("Kafka broker pid=%s ignored SIGTERM for %.0fs; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, cfg, 10):
            raise BrokerError(f"Kafka broker pid={pid} survived SIGKILL")
    cfg.pid_file.unlink(missing_ok=True)


def stop(cfg: BrokerConfig, timeout: float = 30) -> bool:
    """Stop the broker named in our pid file; False if none of ours was running."""
    with _locked(cfg):
        pid = _running_pid(cfg)
        if pid is None:
            cfg.pid_file.unlink(missing_ok=True)  # stale
            return False
        logger.info("stopping Kafka broker pid=%s", pid)
        _terminate(pid, cfg, timeout)
        return True


def status(cfg: BrokerConfig) -> str:
    """One line for humans: is our broker running, and where."""
    pid = _running_pid(cfg)
    return "not running" if pid is None else f"running pid {pid} at {cfg.bootstrap}"
