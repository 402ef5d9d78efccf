"""Kafka topics of the network, with their partition counts.

Every message is keyed by the entity whose order matters (a CP id or a driver id), so Kafka keeps
per-entity order inside one partition.  Consumers that only care about one entity (an Engine, a
Driver) read only the partition their key hashes to, never the whole topic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    compacted: bool = False
    doc: str = ""


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
