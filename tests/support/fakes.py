"""In-memory stand-ins for pure unit tests (never what an acceptance test proves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evcharging.contracts.events import Event
from evcharging.services.driver import DriverService
from evcharging.services.ports import Delivery, DriverRefusal


class RecordingPublisher:
    """Keeps every event published, in order, whichever way it was sent."""

    def __init__(self) -> None:
        self.sent: list[Event] = []

    async def publish(
        self, event: Event, *, on_delivered: Callable[[], None] | None = None
    ) -> Delivery:
        self.sent.append(event)
        if on_delivered is not None:
            on_delivered()
        return Delivery.ACKED

    async def publish_soon(self, event: Event) -> None:
        self.sent.append(event)

    @property
    def events(self) -> list[Event]:
        return self.sent

    def of(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.sent if isinstance(e, cls)]


class LocalFeeds:
    """`DriverFeeds` whose events the test feeds to the service itself: every id is ready."""

    def __init__(self, service: DriverService) -> None:
        self.service = service

    def follow(self, driver_id: str) -> DriverRefusal | None:
        self.service.add_driver(driver_id)
        return None

    def is_ready(self, driver_id: str) -> bool:
        return True

    async def ready(self, driver_id: str) -> None:
        return None
