"""Start a Kafka client, however long the broker takes to come up; and how loud a failure is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)


def failure_level(exc: BaseException) -> int:
    """DEBUG for what an unreachable or restarting broker causes (the process's `KafkaWatch`
    says that once, in words); WARNING for anything else, which a retry will not cure."""
    transient = isinstance(exc, OSError | KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    )
    return logging.DEBUG if transient else logging.WARNING


def describe(exc: BaseException) -> str:
    """An error in words, without Python's repr of it."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def start_with_retry(
    start: Callable[[], Awaitable[None]],
    bootstrap: str,
    what: str,
    *,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
) -> None:
    """Retry `start` with capped exponential backoff, quietly: a broker that is not up yet (or has
    no topics yet) is the watch's to say, once."""
    delay = first_delay
    while True:
        try:
            await start()
        except (KafkaError, OSError) as exc:
            log.log(
                failure_level(exc),
                "%s: Kafka at %s not usable yet (%s); retrying in %.1fs",
                what,
                bootstrap,
                describe(exc),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            return
