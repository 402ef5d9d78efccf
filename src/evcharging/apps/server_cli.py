"""What `evcharging kafka ...` and `evcharging postgres ...` share: the command-line face of a
server the project runs itself (start, stop, status and their answers).

Why one home: both print the same answers (`stopped` / `not running`; a status line with exit
code 3 when not running, as LSB init scripts do) and turn an expected failure into one logged line
and exit code 1; a third such server would say it the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from evcharging.apps.common import Parser, positive_seconds

logger = logging.getLogger(__name__)

Command = Callable[[argparse.Namespace], int]
Spec = tuple[str, Command, str, float | None]  # name, what runs, help, default --timeout (or none)


def stopped(was_running: bool) -> int:
    sys.stdout.write("stopped\n" if was_running else "not running\n")
    return 0


def status(line: str) -> int:
    sys.stdout.write(f"{line}\n")
    return 0 if line.startswith("running") else 3  # 3 = "not running", as in LSB init scripts


def add_server_commands(
    subparsers: argparse._SubParsersAction[Parser],
    name: str,
    help_text: str,
    specs: Sequence[Spec],
    options: Callable[[Parser], None],
    errors: tuple[type[Exception], ...],
    extra: Callable[[str, Parser], None] = lambda _name, _sub: None,
) -> None:
    """`name <command>` on the main CLI, each with the server's `options` (and `extra` for one
    command's own); an exception of `errors` is one line and exit code 1, not a traceback."""
    commands = subparsers.add_parser(name, help=help_text).add_subparsers(
        dest=f"{name}_command", required=True
    )
    for command_name, command, text, timeout in specs:
        sub = commands.add_parser(command_name, help=text, description=text)
        options(sub)
        if timeout is not None:
            sub.option("--timeout", type=positive_seconds, default=timeout, help="seconds")
        extra(command_name, sub)
        sub.set_defaults(func=_reporting(name, command, errors))


def _reporting(name: str, command: Command, errors: tuple[type[Exception], ...]) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except errors as exc:
            logger.error("%s %s failed: %s", name, getattr(args, f"{name}_command"), exc)
            return 1

    return run
