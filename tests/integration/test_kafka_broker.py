"""The project-owned Kafka broker against a real JVM: idempotent start, topics, clean stop.

Each broker here gets its own temporary data dir and free ports, so these tests never touch
a developer's broker or the session broker of other tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from evcharging.contracts.topics import ALL_TOPICS
from evcharging.ops.kafka_broker import BrokerConfig, create_topics, start, status, stop

pytestmark = pytest.mark.kafka


def _free_ports(count: int) -> list[int]:
    """Distinct ports the OS considers free right now (all sockets held until all are bound)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def a_broker_config(data_dir: Path) -> BrokerConfig:
    port, controller_port = _free_ports(2)
    return BrokerConfig(port=port, controller_port=controller_port, data_dir=data_dir)


def _pid(cfg: BrokerConfig) -> int:
    return int(cfg.pid_file.read_text())


def _jvms_for(cfg: BrokerConfig) -> list[int]:
    """Pids of every live process whose command line names this broker's server.properties."""
    needle = str(cfg.server_properties).encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if needle in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerConfig]:
    cfg = a_broker_config(tmp_path_factory.mktemp("kafka"))
    start(cfg)
    yield cfg
    stop(cfg)


async def _admin(cfg: BrokerConfig) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap)
    await admin.start()
    return admin


def test_start_twice_keeps_one_broker(broker: BrokerConfig) -> None:
    first_pid = _pid(broker)

    assert start(broker) == broker.bootstrap

    assert _pid(broker) == first_pid
    assert _jvms_for(broker) == [first_pid]


def test_status_names_pid_and_address(broker: BrokerConfig) -> None:
    assert status(broker) == f"running pid {_pid(broker)} at 127.0.0.1:{broker.port}"


async def test_topics_have_their_declared_partition_counts(broker: BrokerConfig) -> None:
    admin = await _admin(broker)
    try:
        described = await admin.describe_topics([t.name for t in ALL_TOPICS])
    finally:
        await admin.close()

    found = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    assert found == {t.name: t.partitions for t in ALL_TOPICS}


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    [response] = await admin.describe_configs([resource])
    [(_code, _message, _type, _name, entries)] = response.resources
    return next(entry[1] for entry in entries if entry[0] == "cleanup.policy")


async def test_compacted_topics_are_created_with_compaction(broker: BrokerConfig) -> None:
    admin = await _admin(broker)
    try:
        policies = {t.name: await _cleanup_policy(admin, t.name) for t in ALL_TOPICS}
    finally:
        await admin.close()

    assert policies == {t.name: "compact" if t.compacted else "delete" for t in ALL_TOPICS}


async def test_creating_existing_topics_again_is_harmless(broker: BrokerConfig) -> None:
    await create_topics(broker.bootstrap)


def test_stop_ends_our_broker_then_reports_nothing_to_stop(tmp_path: Path) -> None:
    cfg = a_broker_config(tmp_path)
    start(cfg)
    pid = _pid(cfg)

    assert stop(cfg) is True

    assert not _port_open(cfg.port)
    assert not _process_exists(pid)
    assert not cfg.pid_file.exists()
    assert status(cfg) == "not running"
    assert stop(cfg) is False
