"""Start a Kafka client, however long the broker takes to come up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


async def start_with_retry(
    start: Callable[[], Awaitable[None]],
    bootstrap: str,
    what: str,
    *,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
) -> None:
    """Retry `start` with capped exponential backoff, saying so each time."""
    delay = first_delay
    while True:
        try:
            await start()
        except (KafkaError, OSError) as exc:
            log.warning(
                "Kafka not reachable at %s, retrying in %.1fs (%s: %s)", bootstrap, delay, what, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            return
