"""The command line at the foot of Central's terminal panel: what the operator types, and what is
done with it.

The panel owns the terminal, so nothing typed is echoed by the terminal itself: the keys come here
(`CommandLine.feed`), the panel draws the line being typed, and a whole line is read as a command
(`PanelCommands`) and carried out by Central's one admin front door (`services/admin.py`), the
one the HTTP API and the dashboards use: the same rules, refusals, messages and audit rows
(`admin.action` / `admin.refused` with the transport `terminal`, and the service's own
`key.revoked`, `key.rotated`, `cp.blocked` ...). Typing at Central's terminal needs no token: whoever
can type there started Central.

    stop CP01|all      resume CP01|all
    report CP01        the CP asked to report its state now (an OCPP charger: TriggerMessage)
    reset CP01 [hard]  the CP asked to restart, soft unless "hard" (an OCPP charger: Reset)
    revoke CP01        "restaurar claves": the CP's keys deleted, Parado until it re-authenticates
    rotate keys        every connected CP asked to authenticate again, for a new key
    help
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from evcharging.services.admin import AdminDesk, AdminRefusal, Command, at_terminal

log = logging.getLogger(__name__)

# What can be typed, on the panel's last line: "> " and it fit 80 columns ("help" shows it too).
HELP = "stop|resume CP|all · report CP · reset CP [hard] · revoke CP · rotate keys"
MAX_LINE = 70  # characters of a command (the longest CP id is 64)

_ERASE = {"\x7f", "\x08"}  # Backspace (DEL on most terminals, BS on some)
_ERASE_LINE = "\x15"  # Ctrl+U
_ESC = "\x1b"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a command came to, on one line: done (`ok`) or refused, and why."""

    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the panel's last line shows: the line being typed, or the last command's answer
    (until the next key), or that a command is still running."""

    text: str = ""
    answer: Answer | None = None
    running: str | None = None  # the command being carried out


class CommandLine:
    """The line being typed, fed with what the terminal sends (keys, or a pipe's lines)."""

    def __init__(self) -> None:
        self.text = ""
        self.answer: Answer | None = None
        self.running: str | None = None
        self._in_escape = False

    @property
    def prompt(self) -> Prompt:
        return Prompt(self.text, self.answer, self.running)

    def feed(self, chunk: str) -> list[str]:
        """Takes what was typed; returns the lines completed (Enter), in order. Backspace
        erases, Ctrl+U or a lone Esc clears the line, other control keys and escape sequences
        (arrows, function keys) are ignored."""
        entered: list[str] = []
        for n, ch in enumerate(chunk):
            if self._in_escape:
                # CSI/SS3 sequences end with a byte in @..~ (after '[' or 'O' and parameters)
                if (ch not in "[O" and "@" <= ch <= "~") or not ch.isprintable():
                    self._in_escape = False
                continue
            self.answer = None
            if ch in "\r\n":
                line, self.text = self.text.strip(), ""
                if line:
                    entered.append(line)
            elif ch in _ERASE:
                self.text = self.text[:-1]
            elif ch == _ERASE_LINE:
                self.text = ""
            elif ch == _ESC:
                if n == len(chunk) - 1:
                    self.text = ""  # Esc pressed on its own
                else:
                    self._in_escape = True
            elif ch.isprintable() and len(self.text) < MAX_LINE:
                self.text += ch
        return entered


class PanelCommands:
    """A typed line -> an admin command -> Central's admin front door -> one line of answer."""

    def __init__(self, desk: AdminDesk) -> None:
        self.desk = desk
        self.caller = at_terminal()

    async def run(self, line: str) -> Answer:
        words = line.split()
        verb = words[0].lower() if words else ""
        args = words[1:]
        if verb in ("help", "h", "?"):
            return Answer(True, HELP)
        try:
            parsed = self._parse(verb, args)
            if isinstance(parsed, Answer):
                return parsed
            name, fields = parsed
            command = self.desk.command(self.caller, name, fields)
            reply = await self.desk.run(self.caller, command)
        except AdminRefusal as refused:  # recorded (logged, audited) by the desk
            return Answer(False, f"Refused: {refused.reason}")
        except Exception:  # a bug: details in the log, one line on the panel
            log.exception("panel command %r failed", line)
            return Answer(False, "internal error (details in Central's log)")
        return Answer(True, reply.message)

    def _parse(self, verb: str, args: list[str]) -> tuple[Command, dict[str, Any]] | Answer:
        if verb == "rotate" and [a.lower() for a in args] in ([], ["keys"], ["all"]):
            return Command.ROTATE_KEYS, {}
        if verb == "revoke":
            if args[:1] and args[0].lower() == "keys":
                args = args[1:]
            if len(args) == 1:
                return Command.REVOKE_KEYS, {"cp_id": self._cp_id(args[0])}
            return Answer(False, "say which CP: revoke CP_ID")
        if verb == "report":
            if args[:1] and args[0].lower() == "status":
                args = args[1:]
            if len(args) == 1:
                return Command.REPORT_STATUS, {"cp_id": self._cp_id(args[0])}
            return Answer(False, "say which CP: report CP_ID")
        if verb == "reset":
            if len(args) == 2 and args[1].lower() in ("hard", "soft"):
                return Command.RESET_CP, {
                    "cp_id": self._cp_id(args[0]),
                    "hard": args[1].lower() == "hard",
                }
            if len(args) == 1:
                return Command.RESET_CP, {"cp_id": self._cp_id(args[0])}
            return Answer(False, "say which CP: reset CP_ID (or reset CP_ID hard)")
        if verb in ("stop", "resume"):
            if len(args) != 1:
                return Answer(False, f"say which CP: {verb} CP_ID (or {verb} all)")
            if args[0].lower() == "all":
                return (Command.STOP_ALL if verb == "stop" else Command.RESUME_ALL), {}
            one = Command.STOP_CP if verb == "stop" else Command.RESUME_CP
            return one, {"cp_id": self._cp_id(args[0])}
        if not verb:
            return Answer(False, HELP)
        return Answer(False, f"unknown command {verb[:20]!r}: {HELP}")

    def _cp_id(self, typed: str) -> str:
        """The CP id as Central knows it: "alc01" is ALC01 when only that CP matches."""
        service = self.desk.service
        if service.cp(typed) is not None:
            return typed
        matches = [view.id for view in service.cps() if view.id.lower() == typed.lower()]
        return matches[0] if len(matches) == 1 else typed
