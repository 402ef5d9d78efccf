"""Kafka topics of the network, with their partition counts.

Every message is keyed by the entity whose order matters (a CP id or a driver id), so Kafka keeps
per-entity order inside one partition.  Consumers that only care about one entity (an Engine, a
Driver) read only the partition their key hashes to, never the whole topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE_RULE = re.compile(r"^[A-Za-z0-9_-]{0,40}$")
_prefix = ""


def set_namespace(namespace: str) -> None:
    """Several networks on one Kafka cluster (tests, a staging network beside production): every
    topic and consumer group of this process is then named `NAMESPACE.<name>`. Set once by a
    program's main (`--kafka-namespace`, env EV_KAFKA_NAMESPACE); "" is the plain network."""
    global _prefix
    if not NAMESPACE_RULE.match(namespace):
        raise ValueError(f"a Kafka namespace is 0-40 of A-Z a-z 0-9 _ -, got {namespace!r}")
    _prefix = f"{namespace}." if namespace else ""


def namespaced(name: str) -> str:
    """A topic's or consumer group's name in this process's namespace."""
    return _prefix + name


def base_of(name: str) -> str:
    """A topic's name in the plain network, from its name in this process's namespace."""
    return name[len(_prefix) :] if _prefix and name.startswith(_prefix) else name


@dataclass(frozen=True, slots=True)
class Topic:
    base: str  # the name in the plain network; `name` is the one to use
    partitions: int
    compacted: bool = False
    doc: str = ""

    @property
    def name(self) -> str:
        return _prefix + self.base


DRIVER_EVENTS = Topic(
    "driver-events",
    6,
    doc="Driver (or a CP's own menu) -> Central: supply requests and stops. Key: driver id.",
)
CENTRAL_EVENTS = Topic(
    "central-events",
    12,
    doc="Central -> Drivers: answers, progress, tickets, CP errors. Key: driver id (cp id if no driver).",
)
CP_EVENTS = Topic(
    "cp-events", 12, doc="Engine -> Central: supply start, telemetry, supply end. Key: CP id."
)
CP_COMMANDS = Topic(
    "cp-commands",
    12,
    doc="Central -> Engine: authorise, stop supply, stop/resume the CP. Key: CP id.",
)
CP_STATUS = Topic(
    "cp-status",
    3,
    compacted=True,
    doc="Central -> everyone: the public board of CP states (latest per CP). Key: CP id.",
)

ALL_TOPICS: tuple[Topic, ...] = (DRIVER_EVENTS, CENTRAL_EVENTS, CP_EVENTS, CP_COMMANDS, CP_STATUS)
