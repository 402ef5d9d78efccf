"""Whether Kafka is reachable, as the Kafka watch says it and the dashboards show it.

Its own module so that the web adapters show it without importing the Kafka adapter (the
adapters never import each other; the app wires the watch to the pages).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KafkaState:
    """What a dashboard shows: `up`, or why not and since when (epoch seconds)."""

    up: bool
    problem: str = ""
    since: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"up": self.up, "problem": self.problem, "since": self.since}
