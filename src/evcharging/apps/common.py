"""What every program's main shares: address parsing, env-backed flags, logging, running."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from evcharging.adapters.kafka.watch import quiet_client_logs
from evcharging.adapters.listening import CannotListen

log = logging.getLogger(__name__)


def host_port(value: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port), with an argparse-friendly error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def env(name: str, default: str | None = None) -> str | None:
    """The only place programs read the environment: flags fall back to EV_* variables."""
    return os.environ.get(name, default)


def positional(parser: argparse.ArgumentParser, name: str, env_name: str, **kw: Any) -> None:
    """A positional argument that may instead come from an environment variable."""
    default = env(env_name)
    parser.add_argument(
        name,
        nargs="?" if default is not None else None,
        default=default,
        help=f"{kw.pop('help', '')} (env {env_name})",
        **kw,
    )


def setup_logging(component: str, level: str | None = None) -> None:
    """Every log line starts with the component's name, so merged terminals stay readable."""
    chosen = (level or env("EV_LOG_LEVEL", "INFO") or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if chosen != "DEBUG":  # a broker outage is said once by the program's KafkaWatch
        quiet_client_logs()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def run(main: Coroutine[Any, Any, int | None]) -> int:
    """Run until done or SIGTERM/SIGINT/SIGHUP (a closed terminal), cancelling cleanly so sockets
    and clients close."""

    async def guarded() -> int | None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await main
        except asyncio.CancelledError:
            return 0
        except CannotListen as exc:
            log.error("%s", exc)
            return 2

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return int(runner.run(guarded()) or 0)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed (measured: see docs/performance.md), else asyncio's own loop.

    `EV_LOOP=asyncio` forces the standard loop, e.g. to compare the two."""
    if env("EV_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
