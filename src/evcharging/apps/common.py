"""What every program's main shares: the one command-line rule, logging, stdin, running.

The command-line rule (`Parser`): every option and positional may instead come from its `EV_*`
variable; a value from either place goes through the same value type below; a bad value or a
missing argument is one line on stderr naming where it came from, and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

from evcharging.adapters.db import CannotOpenDatabase, sqlite_path
from evcharging.adapters.kafka.watch import quiet_client_logs
from evcharging.adapters.listening import CannotListen
from evcharging.adapters.outbound_http import quiet_http_logs
from evcharging.contracts.fields import ID_RULE, is_valid_id
from evcharging.contracts.topics import NAMESPACE_RULE

log = logging.getLogger(__name__)

ValueType = Callable[[str], Any]
"""Text -> value; raises ValueError with the reason (e.g. "not a number") when the text is bad."""


def env(name: str, default: str | None = None) -> str | None:
    """The only place programs read the environment: flags fall back to EV_* variables."""
    return os.environ.get(name, default)


# --- value types: one home for each ------------------------------------------------------------


def text(value: str) -> str:
    return value


def path(value: str) -> Path:
    if not value:
        raise ValueError("expected a path")
    return Path(value)


DATABASE_HELP = "SQLite file (or sqlite:///PATH), or postgresql://USER@HOST:PORT/DBNAME"


def database(value: str) -> str:
    """A `--db`: a SQLite path or URL, or a PostgreSQL URL (opened later, by `open_repository`)."""
    if value.startswith(("postgresql://", "postgres://")) or sqlite_path(value) is not None:
        return value
    raise ValueError("expected a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME")


def boolean(value: str) -> bool:
    """The one rule for switches and their variables; anything unexpected is an error."""
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def _float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("not a number")
    return number


def positive_seconds(value: str) -> float:
    seconds = _float(value)
    if not seconds > 0:
        raise ValueError("must be more than 0 seconds")
    return seconds


def seconds(value: str) -> float:
    """Seconds where 0 means "no wait"."""
    seconds = _float(value)
    if seconds < 0:
        raise ValueError("must be 0 seconds or more")
    return seconds


_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(value: str) -> float:
    """'40s', '5m', '1h' or plain seconds -> seconds (> 0)."""
    word = value.strip().lower()
    unit = _UNITS.get(word[-1:], 0)
    try:
        return positive_seconds(word[:-1] if unit else word) * (unit or 1)
    except ValueError:
        raise ValueError("expected a duration such as 40s, 5m or 1h") from None


def positive_decimal(value: str) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite():
        raise ValueError("not a number")
    if not number > 0:
        raise ValueError("must be more than 0")
    return number


def _whole(value: str, least: int) -> int:
    if not value.strip().isdecimal() or int(value) < least:
        raise ValueError(f"expected a whole number >= {least}")
    return int(value)


def count(value: str) -> int:
    """A whole number >= 1 (how many of something)."""
    return _whole(value, 1)


def whole_number(value: str) -> int:
    """A whole number >= 0."""
    return _whole(value, 0)


def port(value: str) -> int:
    """A TCP port to listen on or connect to: 1-65535."""
    if not value.strip().isdecimal() or not 0 < int(value) < 65536:
        raise ValueError("not a TCP port (1-65535)")
    return int(value)


def port_or_any(value: str) -> int:
    """A port to listen on where 0 means any free port (only where that is documented)."""
    if not value.strip().isdecimal() or not 0 <= int(value) < 65536:
        raise ValueError("not a TCP port (1-65535, or 0 for any free port)")
    return int(value)


def host_port(value: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); an IPv6 host may be written with or without brackets."""
    host, sep, number = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise ValueError("expected HOST:PORT")
    try:
        return host, port(number)
    except ValueError:
        raise ValueError("expected HOST:PORT with a port 1-65535") from None


def bootstrap(value: str) -> str:
    """Kafka's bootstrap: HOST:PORT, or several comma-separated; kept as text for the client."""
    servers = [s.strip() for s in value.split(",")]
    for server in servers:
        try:
            host_port(server)
        except ValueError:
            raise ValueError("expected HOST:PORT (or several, comma-separated)") from None
    return ",".join(servers)


def ident(value: str) -> str:
    """A CP or driver id, by the contracts' rule (so a bad id fails here, not in an event)."""
    if not is_valid_id(value):
        raise ValueError(f"not an id ({ID_RULE})")
    return value


def one_of(*choices: str) -> ValueType:
    def choice(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return choice


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def kafka_namespace(value: str) -> str:
    if not NAMESPACE_RULE.match(value.strip()):
        raise ValueError("expected 0-40 of A-Z a-z 0-9 _ -")
    return value.strip()


# --- the parser ---------------------------------------------------------------------------------


class _NotGiven:
    """What argparse stores for an argument absent from the command line (no real value is it)."""

    def __repr__(self) -> str:
        return "<not given>"


_NOT_GIVEN = _NotGiven()

EPILOG = (
    "Each argument may instead come from the environment variable shown; the command line wins "
    "and an empty variable counts as unset. Switches and their variables take 1/true/yes/on or "
    "0/false/no/off."
)


@dataclass(frozen=True)
class _Source:
    label: str  # how an error names the command line's value: --http-port, or PORT
    env: str | None
    type: ValueType
    default: Any


class Parser(argparse.ArgumentParser):
    """argparse with the one rule of every program: flag or EV_* variable, same type, one line.

    Values reach argparse as text; `parse_known_args` then turns each into its value with its
    type, from the command line, else its variable, else its default.  An error is one line
    (`PROG: error: EV_X='abc': not a number (see --help)`) and exit code 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)
        self._sources: dict[str, _Source] = {}

    def option(
        self,
        flag: str,
        *,
        env: str | None = None,
        type: ValueType = text,
        default: Any = None,
        help: str,
        metavar: str | None = None,
        choices: Sequence[str] = (),
        dest: str | None = None,
        group: argparse._ArgumentGroup | None = None,
    ) -> None:
        if choices:
            type, metavar = one_of(*choices), "{" + ",".join(choices) + "}"
        action = (group or self).add_argument(
            flag,
            default=_NOT_GIVEN,
            metavar=metavar,
            help=_help(help, env, default),
            dest=dest or flag.lstrip("-").replace("-", "_"),
        )
        self._sources[action.dest] = _Source(flag, env, type, default)

    def switch(
        self,
        flag: str,
        *,
        env: str | None = None,
        help: str,
        group: argparse._ArgumentGroup | None = None,
    ) -> None:
        """An on/off flag; its variable follows the one boolean rule (`boolean`)."""
        action = (group or self).add_argument(
            flag,
            action="store_true",
            default=_NOT_GIVEN,
            help=_help(help, env and f"{env}=yes|no", None),
        )
        self._sources[action.dest] = _Source(flag, env, boolean, False)

    def positional(
        self,
        name: str,
        *,
        env: str | None = None,
        type: ValueType = text,
        help: str,
        metavar: str | None = None,
    ) -> None:
        """Required on the command line unless its variable is set (then it may be left out)."""
        label = metavar or name.upper()
        self.add_argument(
            name,
            nargs="?" if env is not None and _env_value(env) is not None else None,
            default=_NOT_GIVEN,
            metavar=label,
            help=_help(help, env, None),
        )
        self._sources[name] = _Source(label, env, type, None)

    def kafka_namespace_option(self) -> None:
        self.option(
            "--kafka-namespace",
            env="EV_KAFKA_NAMESPACE",
            type=kafka_namespace,
            default="",
            metavar="NAME",
            help="run as the network NAME on a shared Kafka cluster: topics and consumer groups "
            "are named NAME.<topic> (empty: the plain network)",
        )

    def log_level_option(self) -> None:
        self.option(
            "--log-level",
            env="EV_LOG_LEVEL",
            type=log_level,
            default="INFO",
            metavar="LEVEL",
            help=f"log detail: {', '.join(LOG_LEVELS)}",
        )

    # One signature for typeshed's three overloads; subcommands' parsers pass through here too.
    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for dest, source in self._sources.items():
            self._resolve(parsed, dest, source)
        return parsed, extras

    def _resolve(self, parsed: argparse.Namespace, dest: str, source: _Source) -> None:
        given = getattr(parsed, dest, _NOT_GIVEN)
        if isinstance(given, _NotGiven):
            raw = _env_value(source.env) if source.env else None
            if raw is None:
                setattr(parsed, dest, source.default)
                return
            where = source.env
        elif isinstance(given, str):
            raw, where = given, source.label
        else:  # a switch given on the command line
            return
        try:
            setattr(parsed, dest, source.type(raw))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            self.error(f"{where}={raw!r}: {exc}")

    def error(self, message: str) -> NoReturn:
        """One line, no usage dump: the message names the argument, --help says the rest."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _env_value(name: str) -> str | None:
    return env(name) or None


def _help(text: str, env_name: str | None, default: Any) -> str:
    notes = [f"env {env_name}"] if env_name else []
    if default not in (None, "", False):
        notes.append(f"default {default}")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return f"{text}{suffix}".replace("%", "%%")


def setup_logging(component: str, level: str = "INFO") -> None:
    """Every log line starts with the time, in UTC and labelled so (the network's one clock,
    whatever host a program runs on), and the component's name, so merged terminals read well.

    `level` is one of LOG_LEVELS, as the `--log-level` option gives it."""
    chosen = level.upper()
    formatter = logging.Formatter(
        f"%(asctime)s UTC {component} %(levelname)s %(name)s: %(message)s"
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logging.basicConfig(level=chosen, handlers=[handler])
    if chosen != "DEBUG":  # a broker outage is said once by the program's KafkaWatch
        quiet_client_logs()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    quiet_http_logs()  # at DEBUG too: a request line may carry a secret in its URL


async def answer_menu(
    lines: AsyncIterator[str],
    handle: Callable[[str], list[str]],
    help_text: str,
    who: str,
    said_by: logging.Logger,
) -> None:
    """A menu whose commands answer with lines to show (`said_by` the program's logger): help
    first, each answer logged, and the end of stdin only ends the menu (`who` keeps running)."""
    said_by.info(help_text)
    async for line in lines:
        for said in handle(line):
            said_by.info("%s", said)
    said_by.info("stdin closed: menu disabled, %s keeps running", who)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin for a program's menu, without blocking the loop: a daemon thread reads, so
    exit never waits on it; the iteration ends with stdin (a closed pipe, Ctrl+D)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def post(item: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop closed first: the program is exiting
            return False
        return True

    def reader() -> None:
        while line := sys.stdin.readline():
            if not post(line):
                return
        post(None)

    threading.Thread(target=reader, name="stdin-menu", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


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
        except (CannotListen, CannotOpenDatabase) as exc:
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
