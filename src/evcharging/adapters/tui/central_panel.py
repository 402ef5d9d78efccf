"""EV_Central's live terminal panel (statement, figure 1): CPs, ongoing requests, messages.

Each frame is laid out for the terminal's size at that moment and fills it exactly: never taller
than the screen (so nothing scrolls away), and complete at 80x24.

- Roomy terminals (e.g. 150x45) show a tile per CP, as in the statement's figure.
- Otherwise each CP is one coloured line: id, state, price, location and, while supplying, the
  live kW, kWh, € and driver. CPs that do not fit are counted ("+3 more CPs"), never cut silently.
- The requests table and the messages area always keep a few lines; the messages area shows the
  program's latest log lines (every application message is logged), newest at the bottom.
- When Central's terminal can type (`live_panel`), the last line is a command line: "revoke CP01"
  ("restaurar claves"), "rotate keys", "stop"/"resume" one CP or all (`panel_commands.py`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from evcharging.adapters.tui.log_capture import Line, TerminalLogCapture
from evcharging.adapters.tui.panel_commands import (
    HELP,
    Answer,
    CommandLine,
    PanelCommands,
    Prompt,
)
from evcharging.adapters.tui.terminal_input import TerminalInput
from evcharging.domain.cp_state import CPState, StopReason
from evcharging.services.admin import AdminDesk
from evcharging.services.central import CentralService
from evcharging.services.central_views import CPView, RequestView

log = logging.getLogger(__name__)

TITLE = "*** EV CHARGING SOLUTION. MONITORING PANEL ***"
REQUESTS_TITLE = "*** ON-GOING DRIVERS REQUESTS ***"
MESSAGES_TITLE = "*** APPLICATION MESSAGES ***"
REQUEST_COLUMNS = ("DATE", "START TIME", "User ID", "CP", "STATUS")

_STYLE = {
    "green": "black on green3",
    "orange": "black on dark_orange",
    "red": "white on red3",
    "grey": "black on grey62",
}
_LEVEL_STYLE = {"warning": "yellow", "error": "bold red", "critical": "bold red"}
_HEADING = "bold reverse"

MAX_QUEUED = 10  # commands entered while one runs (a paste of several lines)
TILE_WIDTH = 30
TILE_HEIGHT = 7  # border + location, price, state and two lines of live figures
_MIN_MESSAGES = 2  # lines the messages area always keeps
_MIN_REQUESTS = 3  # request lines always kept (when there are that many)


@dataclass(frozen=True)
class PanelView:
    """What one frame shows. Copied in the event loop's thread, drawn in the display's thread."""

    cps: Sequence[CPView]
    requests: Sequence[RequestView]
    messages: Sequence[Line]
    now: datetime
    prompt: Prompt | None = None  # the command line (None: nothing can be typed)


def snapshot(
    service: CentralService,
    messages: Iterable[Line] | None = None,
    now: datetime | None = None,
    prompt: Prompt | None = None,
) -> PanelView:
    """The service's state now; `messages` defaults to the service's application messages."""
    return PanelView(
        cps=service.cps(),
        requests=service.requests(),
        messages=[m.line for m in service.messages()] if messages is None else list(messages),
        now=now or datetime.now(UTC),
        prompt=prompt,
    )


def render(service: CentralService, messages: Iterable[Line] | None = None) -> MonitoringPanel:
    """A frame of the service as it is now (in the event loop's thread)."""
    return MonitoringPanel(snapshot(service, messages))


# --- CPs ---------------------------------------------------------------------------------


def _weather_where(view: CPView) -> str | None:
    """The city and reading of the CP's weather alert: "Teruel, -3 °C" (None: no alert)."""
    note = view.json["weather"]
    if note is None:
        return None
    temperature = note["temperature_c"]
    return note["city"] if temperature is None else f"{note['city']}, {temperature:g} °C"


def _stop_reasons(view: CPView, detail: bool = True) -> list[str]:
    """Why a Parado CP is out of service, one item per reason; a weather alert with its city
    and reading when `detail`: "weather alert (Teruel, -3 °C)"."""
    if not view.stop_reason:
        return []
    where = _weather_where(view) if detail else None
    return [
        f"{reason} ({where})" if reason == StopReason.WEATHER_ALERT and where else reason
        for reason in view.stop_reason.split("; ")
    ]


def _live_figures(view: CPView) -> list[str]:
    """What a CP is doing beyond its state: live figures, a reservation, a fault's reason or why
    it is stopped ("keys revoked", "weather alert (Teruel, -3 °C)")."""
    if view.state is CPState.SUMINISTRANDO:
        return [
            f"{view.kw} kW",
            f"{view.energy_kwh} kWh",
            f"{view.amount_eur} €",
            f"driver {view.driver_id}",
        ]
    if view.session_id:
        return [f"reserved: driver {view.driver_id}"]
    if view.fault_reason:
        return [view.fault_reason]
    return ["; ".join(_stop_reasons(view))] if view.stop_reason else []


def _tile_lines(view: CPView) -> list[str]:
    """The tile's two last lines: figures two by two, or each reason of a stop on its own line
    (a weather alert alone: the reason, then its city and reading)."""
    if view.state is CPState.PARADO and view.stop_reason:
        where = _weather_where(view)
        if view.stop_reason == StopReason.WEATHER_ALERT and where:
            return [StopReason.WEATHER_ALERT.value, where]
        reasons = _stop_reasons(view)
        return reasons[:1] + (["; ".join(reasons[1:])] if reasons[1:] else [])
    figures = _live_figures(view)
    return ["  ".join(figures[i : i + 2]) for i in range(0, len(figures), 2)]


def tile(view: CPView) -> Panel:
    lines = [
        Text(view.location, overflow="ellipsis", no_wrap=True),
        Text(f"{view.price_eur_per_kwh} €/kWh  {view.key}", overflow="ellipsis", no_wrap=True),
        Text(view.caption, style="bold"),
        *(Text(line, overflow="ellipsis", no_wrap=True) for line in _tile_lines(view)),
    ]
    return Panel(
        Group(*lines),
        title=f"[bold]{view.id}",
        width=TILE_WIDTH,
        height=TILE_HEIGHT,
        style=_STYLE[view.colour],
    )


def _tiles(cps: Sequence[CPView], per_row: int) -> Table:
    grid = Table.grid(padding=(0, 1))
    for _ in range(per_row):
        grid.add_column(width=TILE_WIDTH)
    for start in range(0, len(cps), per_row):
        grid.add_row(*(tile(view) for view in cps[start : start + per_row]))
    return grid


def cp_line(view: CPView, width: int, id_width: int = 5) -> Text:
    """A CP on one line of `width`, coloured by state: id, state, price, location (cut to what is
    left) and, at the right end, what it is doing (live figures, reservation, fault)."""
    line = Text(f"{view.id:<{id_width}} ", style="bold")
    line.append(f"{view.caption:<13} {view.price_eur_per_kwh} €/kWh ")
    figures = _live_figures(view)
    doing = f" {' '.join(figures)} " if figures else ""
    if view.stop_reason and line.cell_len + len(doing) > width:  # the reasons, without the city
        doing = f" {'; '.join(_stop_reasons(view, detail=False))} "
    room = width - line.cell_len - len(doing)
    if room > 0:  # on a narrow terminal, what the CP is doing matters more than where it is
        location = Text(view.location)
        location.truncate(room, overflow="ellipsis", pad=True)
        line.append_text(location)
    line.append(doing)
    line.truncate(width, overflow="ellipsis", pad=True)
    line.stylize(_STYLE[view.colour])
    line.no_wrap = True
    return line


def cp_lines(cps: Sequence[CPView], width: int, fit: int) -> list[Text]:
    """As many CPs as fit in `fit` lines; if not all do, the last line says how many are left."""
    shown = cps if len(cps) <= fit else cps[: max(fit - 1, 0)]
    id_width = max((len(view.id) for view in shown), default=0)
    lines = [cp_line(view, width, id_width) for view in shown]
    if len(shown) < len(cps):
        more = Text(f"+{len(cps) - len(shown)} more CPs (all on the dashboard)", "italic")
        more.no_wrap, more.overflow = True, "ellipsis"
        lines.append(more)
    return lines


# --- requests and messages ----------------------------------------------------------------


def _requests(rows: Sequence[RequestView], room: int) -> tuple[RenderableType, int]:
    """The column headings, then the rows that fit in `room` lines (the last saying how many more
    there are); with the number of lines it takes."""
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold underline")
    for column in REQUEST_COLUMNS:
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    if not rows:
        return Group(table, Text("no ongoing requests", style="dim")), 2
    shown = rows if len(rows) <= room else rows[: max(room - 1, 0)]
    for row in shown:
        table.add_row(
            row.date,
            f"{row.start} UTC",
            row.driver_id,
            row.cp_id,
            Text(row.status, style="green" if row.status == "supplying" else ""),
        )
    more = len(rows) - len(shown)
    if more:
        table.add_row(Text(f"+{more} more requests", style="italic"))
    return table, 1 + len(shown) + (1 if more else 0)


def _message_lines(console: Console, messages: Sequence[Line], width: int, room: int) -> list[Text]:
    """The newest messages that fit in `room` lines of `width` (long ones wrapped), oldest first."""
    lines: list[Text] = []
    for at, level, text in reversed(messages):
        if len(lines) >= room:
            break
        style = _LEVEL_STYLE.get(level, "")
        message = Text.assemble(
            (f"{at.astimezone(UTC):%H:%M:%S} UTC ", "dim"),
            (f"{level.upper()} " if style else "", style),
            (text, style),
        )
        lines[:0] = list(message.wrap(console, width))
    lines = lines[-room:] if room > 0 else []
    for line in lines:
        line.no_wrap, line.overflow = True, "crop"
    return lines


def _heading(text: str, right: str = "") -> Table:
    """A full-width reversed bar with `text` centred (and `right` at its right end)."""
    bar = Table.grid(expand=True)
    bar.add_column(ratio=1)
    bar.add_column(no_wrap=True, overflow="ellipsis")
    bar.add_column(ratio=1, justify="right", no_wrap=True, overflow="crop")
    bar.add_row("", text, right, style=_HEADING)
    return bar


def prompt_line(prompt: Prompt, width: int) -> Text:
    """The command line: what is being typed (with a block for the cursor), a command still
    running, the last command's answer, or what can be typed."""
    if prompt.text:
        shown = prompt.text[-max(width - 3, 1) :]
        line = Text.assemble(("> ", "bold"), shown, (" ", "reverse"))
    elif prompt.running is not None:
        line = Text.assemble(("> ", "bold"), prompt.running, ("  … running", "dim"))
    elif prompt.answer is not None:
        line = Text(prompt.answer.text, style="green" if prompt.answer.ok else "yellow")
    else:
        line = Text.assemble(("> ", "bold"), (HELP, "dim"))
    line.truncate(width, overflow="ellipsis", pad=True)
    line.no_wrap = True
    return line


# --- the frame ----------------------------------------------------------------------------


class MonitoringPanel:
    """One frame, laid out for the width and height it is given (the whole terminal): exactly
    that many lines, none wrapped."""

    def __init__(self, view: PanelView) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = options.max_width, options.height or options.max_height
        v = self.view
        prompt = None if v.prompt is None or height < 2 else prompt_line(v.prompt, width)
        height -= prompt is not None  # the command line is the last line
        # Always there: the title, the requests' heading and column headings, the messages' heading.
        room = height - 4
        requests_wanted = max(len(v.requests), 1)  # an empty table says so on one line
        keep = min(requests_wanted, _MIN_REQUESTS) + _MIN_MESSAGES

        per_row = max(1, (width + 1) // (TILE_WIDTH + 1))
        tile_rows = math.ceil(len(v.cps) / per_row)
        cps: RenderableType
        if v.cps and per_row >= 2 and tile_rows * TILE_HEIGHT + keep <= room:
            cps, used = _tiles(v.cps, per_row), tile_rows * TILE_HEIGHT
        else:
            rows = cp_lines(v.cps, width, max(room - keep, 1))
            cps, used = Group(*rows), len(rows)
        room -= used
        requests, used = _requests(
            v.requests, min(requests_wanted, max(room - _MIN_MESSAGES, _MIN_REQUESTS))
        )
        room -= used - 1  # the column headings were counted among the four lines

        clock = f"{v.now.astimezone(UTC):%H:%M:%S} UTC "
        whole = Group(
            _heading(TITLE, clock if width >= len(TITLE) + 2 * len(clock) else ""),
            cps,
            _heading(REQUESTS_TITLE),
            requests,
            _heading(MESSAGES_TITLE),
            *_message_lines(console, v.messages, width, max(room, 0)),
        )
        # Exactly the screen: padded below the messages; cut only if too small for the headings.
        lines = console.render_lines(whole, options.update(height=None), pad=True)[:height]
        shaped = Segment.set_shape(lines, width, height)
        if prompt is not None:
            shaped += Segment.set_shape(console.render_lines(prompt, options, pad=True)[:1], width)
        for n, line in enumerate(shaped):
            if n:
                yield Segment.line()
            yield from line


# --- the live display ---------------------------------------------------------------------


class CentralPanel:
    """The panel on the terminal for as long as the `with` block runs (inside the event loop).

    Each frame fills the terminal exactly, so the next one, drawn from where this one starts,
    overwrites all of it: nothing stale stays on the screen, whatever the size or a resize. Log
    lines never reach the terminal on their own (a raw line between two frames is what used to
    leave a stale copy of the header and get drawn over): the drawing thread prints them above the
    frame, into the terminal's scrollback, and the messages area shows the latest ones.

    The service changes only in the event loop's thread, so a copy of what to show is taken
    there, `refresh_per_second` times a second (and at once when a key is typed); the drawing
    thread draws from that copy (so a slow terminal never holds up the event loop).

    `input_fd`: where the operator types commands (Central's stdin; None: no command line).
    `desk`: the admin front door they go through (default: one for this terminal alone).
    """

    def __init__(
        self,
        service: CentralService,
        console: Console | None = None,
        refresh_per_second: int = 4,
        *,
        input_fd: int | None = None,
        desk: AdminDesk | None = None,
    ) -> None:
        self.service = service
        self.logs = TerminalLogCapture()
        self._interval = 1 / refresh_per_second
        self._view = snapshot(service, [])
        self._tick: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drawer = threading.Thread(target=self._draw_until_stopped, name="panel", daemon=True)
        self.live = Live(console=console, auto_refresh=False, redirect_stderr=True)
        self.line = CommandLine()
        self.commands = PanelCommands(desk if desk is not None else AdminDesk(service, None))
        self.input = (
            None if input_fd is None else TerminalInput(input_fd, self._typed, self._input_ended)
        )
        self._typing = False  # the command line is shown (the input is being read)
        self._queued: deque[str] = deque()  # entered (or pasted) while a command runs
        self._command: asyncio.Task[None] | None = None

    @property
    def _prompt(self) -> Prompt | None:
        return self.line.prompt if self._typing else None

    def _follow(self) -> None:
        self._view = snapshot(self.service, self.logs.lines(), prompt=self._prompt)
        self._tick = asyncio.get_running_loop().call_later(self._interval, self._follow)

    def _redraw_soon(self, whole: bool = False) -> None:
        """A key or an answer is shown at once, not at the next tick."""
        if whole:
            self._view = snapshot(self.service, self.logs.lines(), prompt=self._prompt)
        else:
            self._view = replace(self._view, prompt=self._prompt)
        self._wake.set()

    # --- the command line (in the event loop's thread) ---------------------------------------

    def _typed(self, text: str) -> None:
        for line in self.line.feed(text):
            self._submit(line)
        self._redraw_soon()

    def _submit(self, line: str) -> None:
        """Commands run one at a time, in the order they were entered."""
        if len(self._queued) >= MAX_QUEUED:
            self.line.answer = Answer(False, f"too many commands at once: {line!r} not run")
            return
        self._queued.append(line)
        if self._command is None or self._command.done():
            self._command = asyncio.create_task(self._carry_out(), name="panel-command")

    async def _carry_out(self) -> None:
        while self._queued:
            line = self.line.running = self._queued.popleft()
            try:
                self.line.answer = await self.commands.run(line)
            finally:
                self.line.running = None
                self._redraw_soon(whole=True)

    def _input_ended(self) -> None:
        log.info("typed commands off: the terminal's input ended")
        self._typing = False
        self._redraw_soon()

    def _draw(self) -> None:
        self.live.update(MonitoringPanel(self._view))
        unprinted = self.logs.take_unprinted()
        if unprinted:  # printed above the frame, which is drawn again below them
            self.live.console.print(Text("\n".join(unprinted)), highlight=False)
        else:
            self.live.refresh()

    def _draw_until_stopped(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._draw()

    def __enter__(self) -> CentralPanel:
        self.logs.__enter__()
        try:
            self.live.__enter__()
        except BaseException:
            self.logs.__exit__(None, None, None)
            raise
        if self.input is not None:
            self._typing = self.input.start()
        self._follow()
        self._drawer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self.input is not None:
            self.input.stop()  # the terminal's echo back before anything else
        if self._command is not None:
            self._command.cancel()
        self._stop.set()
        self._wake.set()
        self._drawer.join(timeout=5)  # a frame at most (unless the terminal stopped reading)
        try:
            self._view = snapshot(self.service, self.logs.lines())
            self._draw()
            self.live.__exit__(*exc)
        finally:
            self.logs.__exit__(*exc)


def _stdin_fd() -> int | None:
    """Central's standard input, where the operator types (None: there is none)."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None and not sys.stdin.closed else None
    except (AttributeError, ValueError, OSError):  # replaced by an object with no descriptor
        return None


def live_panel(
    service: CentralService, console: Console | None = None, desk: AdminDesk | None = None
) -> CentralPanel:
    """The panel with its command line on Central's standard input. `desk`: Central's admin
    front door (default: one that admits only this terminal)."""
    return CentralPanel(service, console, input_fd=_stdin_fd(), desk=desk)
