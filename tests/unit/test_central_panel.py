"""The terminal panel: every CP state with its caption and figures, laid out for the terminal's size
(one line per CP at 80x24, tiles when roomy), never taller than the screen; log lines reach the
terminal only through the panel, so nothing is left stale between frames; its command line
("revoke CP01", "rotate keys", ...) goes through Central's admin front door."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import termios
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyte
import pytest
from rich.console import Console

from evcharging.adapters.db.seed import load_seed_file, seed
from evcharging.adapters.db.sqlite_repository import SqliteRepository
from evcharging.adapters.tui import terminal_input
from evcharging.adapters.tui.central_panel import (
    TITLE,
    CentralPanel,
    MonitoringPanel,
    render,
    snapshot,
)
from evcharging.adapters.tui.log_capture import TerminalLogCapture
from evcharging.adapters.tui.panel_commands import (
    HELP,
    Answer,
    CommandLine,
    PanelCommands,
    Prompt,
)
from evcharging.contracts import events as ev
from evcharging.contracts.audit import AuditAction
from evcharging.domain.cp_state import CPState
from evcharging.services.admin import AdminDesk, AdminRefusal, Caller, Transport
from evcharging.services.audit import AuditQuery
from evcharging.services.central import CentralService
from evcharging.services.central_keys import CentralKeys
from evcharging.services.cp_keys import MasterKey
from tests.support.builders import a_cp, a_driver, a_repo
from tests.support.fakes import RecordingPublisher
from tests.support.waiting import eventually

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "evcharging" / "data" / "sample_network.yaml"
NOON = datetime(2026, 11, 27, 12, tzinfo=UTC)


def frame(panel: MonitoringPanel, width: int, height: int) -> list[str]:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(panel)
    return console.export_text().splitlines()


async def busy_central(cp_count: int | None = None, requests: int = 2) -> CentralService:
    """The sample network (or `cp_count` CPs) with one CP supplying, one reserved, one stopped,
    one faulted, some connected and some not."""
    repo = a_repo()
    if cp_count is None:
        seed(repo, load_seed_file(SAMPLE))
    else:
        for n in range(cp_count):
            a_cp(repo, f"CP{n:03}", location=f"Town {n}")
    for n in range(max(requests, 6)):
        a_driver(repo, f"D{n:03}", balance="100.00")
    central = CentralService(repo, RecordingPublisher(), now=lambda: NOON)
    await central.load()
    ids = [view.id for view in central.cps()]
    for cp in ids[: len(ids) * 2 // 3]:
        await central.monitor_auth(cp, object())
    for n in range(min(requests, len(ids) // 2)):
        await central.on_authorization_request(
            ev.AuthorizationRequest(driver_id=f"D{n:03}", cp_id=ids[n])
        )
    first = central.cp(ids[0])
    if first is not None and first.session_id is not None:
        await central.on_telemetry(
            ev.CpTelemetry(
                cp_id=ids[0],
                session_id=first.session_id,
                driver_id="D000",
                seq=1,
                kw=Decimal("22"),
                energy_kwh=Decimal("1.500"),
                amount_eur=Decimal("0.60"),
            )
        )
    await central.stop_cp(ids[len(ids) // 2])
    await central.simulate_error(ids[len(ids) // 2 + 1])
    return central


async def test_panel_shows_tiles_requests_and_messages() -> None:
    repo = a_repo()
    for cp in ("CP1", "CP2", "CP3", "CP4"):
        a_cp(repo, cp, location=f"Alicante {cp}")
    a_driver(repo, "D1")
    central = CentralService(repo, RecordingPublisher(), now=lambda: NOON)
    await central.load()
    for cp in ("CP1", "CP2", "CP3"):
        await central.monitor_auth(cp, object())
    await central.on_authorization_request(ev.AuthorizationRequest(driver_id="D1", cp_id="CP1"))
    sid = central.cp("CP1").session_id  # type: ignore[union-attr]
    await central.on_telemetry(
        ev.CpTelemetry(
            cp_id="CP1",
            session_id=sid,
            driver_id="D1",
            seq=1,
            kw=Decimal("22"),
            energy_kwh=Decimal("1.500"),
            amount_eur=Decimal("0.60"),
        )
    )
    await central.stop_cp("CP2")
    await central.simulate_error("CP3")
    text = "\n".join(frame(render(central), 140, 45))
    assert "╭" in text, "a roomy terminal shows tiles"
    for expected in (
        TITLE,
        "CP1",
        "Suministrando",
        "22 kW",
        "1.500 kWh",
        "0.60 €",
        "driver D1",
        "Out of Order",
        "Averiado",
        "Desconectado",
        "*** ON-GOING DRIVERS REQUESTS ***",
        "*** APPLICATION MESSAGES ***",
        "12:00:00 UTC AUTHORISED driver D1",
    ):
        assert expected in text, expected
    assert "APLICATION" not in text


async def test_at_80x24_every_cp_of_the_sample_is_one_line_with_requests_and_messages() -> None:
    central = await busy_central()
    lines = frame(render(central), 80, 24)
    assert len(lines) == 24
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for cp in (view.id for view in central.cps()):
        assert sum(line.startswith(cp) for line in lines) == 1, cp
    supplying = next(line for line in lines if "Suministrando" in line)
    assert "ALC01" in supplying
    for figure in ("0.35 €/kWh", "22 kW", "1.500 kWh", "0.53 €", "driver D000"):
        assert figure in supplying, figure
    assert "reserved: driver D001" in next(line for line in lines if line.startswith("ALC02"))
    for expected in ("Out of Order", "Averiado", "Desconectado", "Alicante - Playa San Juan"):
        assert expected in text, expected
    at = lines.index(next(line for line in lines if "ON-GOING DRIVERS REQUESTS" in line))
    assert lines[at + 1].split() == ["DATE", "START", "TIME", "User", "ID", "CP", "STATUS"]
    assert lines[at + 2].split() == ["2026-11-27", "12:00:00", "UTC", "D000", "ALC01", "supplying"]
    assert "APPLICATION MESSAGES" in text
    assert "WARNING CP MAD02 error simulated" in lines[-1], "the newest message is at the bottom"


@pytest.mark.parametrize(
    ("width", "height"), [(80, 24), (150, 45), (100, 30), (60, 15), (40, 8), (20, 5)]
)
async def test_a_frame_fills_the_terminal_exactly_whatever_there_is_to_show(
    width: int, height: int
) -> None:
    central = await busy_central(cp_count=40, requests=15)
    for n in range(50):
        central._say(f"message {n} " + "long words " * (n % 12))
    lines = frame(render(central), width, height)
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)
    assert TITLE in lines[0] or width < len(TITLE)


async def test_cps_that_do_not_fit_are_counted_and_the_other_sections_keep_their_lines() -> None:
    central = await busy_central(cp_count=40, requests=15)
    lines = frame(render(central), 80, 24)
    text = "\n".join(lines)
    shown = sum(line.startswith("CP0") for line in lines)
    assert f"+{40 - shown} more CPs" in text
    assert shown >= 10
    requests = sum(line.startswith("2026-11-27") for line in lines)
    assert requests >= 2
    assert f"+{15 - requests} more requests" in text
    assert "WARNING CP CP021 error simulated" in lines[-1]


async def test_long_messages_wrap_and_the_newest_stays_visible() -> None:
    central = await busy_central()
    central._say("a very long warning " * 8 + "THE END", "warning")
    lines = frame(render(central), 80, 24)
    assert lines[-1].rstrip().endswith("THE END")
    assert "12:00:00 UTC WARNING a very long warning" in "\n".join(lines)


async def test_with_no_requests_the_table_says_so() -> None:
    central = await busy_central(requests=0)
    assert "no ongoing requests" in "\n".join(frame(render(central), 80, 24))


# --- the live display -------------------------------------------------------------------


class EmulatedTerminal(io.TextIOBase):
    """What a console writes, fed into a pyte screen that keeps what scrolls off its top."""

    def __init__(self, cols: int, rows: int) -> None:
        self.screen = pyte.HistoryScreen(cols, rows, history=1000)
        self._stream = pyte.Stream(self.screen)
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._stream.feed(text.replace("\n", "\r\n"))  # as a tty's ONLCR does
        return len(text)

    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        with self._lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def scrolled_off(self) -> str:
        with self._lock:
            rows = [
                "".join(row[x].data for x in range(self.screen.columns))
                for row in self.screen.history.top
            ]
        return "\n".join(row.rstrip() for row in rows)


class TtyLog(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal_log_handler() -> Iterator[logging.StreamHandler[TtyLog]]:
    """A log handler writing to 'the terminal', as logging.basicConfig sets one up."""
    handler = logging.StreamHandler(TtyLog())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


async def test_log_lines_go_into_the_panel_and_above_it_never_between_frames(
    terminal_log_handler: logging.StreamHandler[TtyLog],
) -> None:
    central = await busy_central()
    term = EmulatedTerminal(80, 24)
    console = Console(file=term, force_terminal=True, width=80, height=24, color_system="256")
    written_before = terminal_log_handler.stream.getvalue()
    with CentralPanel(central, console, refresh_per_second=20):
        assert terminal_log_handler not in logging.getLogger().handlers
        for cp in ("MAD02", "MAD03", "BCN01"):  # MAD01 is stopped already
            await central.stop_cp(cp)
            await eventually(
                lambda cp=cp: f"CP {cp} stopped by Central" in term.text(), what=f"{cp} stopped"
            )
        logging.getLogger("evcharging.elsewhere").warning("Kafka is unreachable")
        await eventually(
            lambda: "WARNING Kafka is unreachable" in term.text(),
            what="the warning in the messages area",
        )
        screen = term.text()
        assert screen.count(TITLE) == 1
        assert all(view.id in screen for view in central.cps())
        await eventually(
            lambda: "evcharging.elsewhere: Kafka is unreachable" in term.scrolled_off(),
            what="the log line printed above the panel",
        )
    assert terminal_log_handler in logging.getLogger().handlers
    assert terminal_log_handler.stream.getvalue() == written_before, "nothing went past the panel"
    assert "INFO evcharging.services.central: CP MAD03 stopped" in term.scrolled_off()


def test_log_capture_sets_aside_only_terminal_handlers_and_gives_back_what_it_kept() -> None:
    logger = logging.getLogger("evcharging.test_capture")
    logger.propagate = False
    to_terminal, to_file = logging.StreamHandler(TtyLog()), logging.StreamHandler(io.StringIO())
    logger.addHandler(to_terminal)
    logger.addHandler(to_file)
    try:
        with TerminalLogCapture() as capture:
            logger.warning("first")
            assert capture.take_unprinted() == ["first"]
            logger.warning("second")
            assert [text for _, _, text in capture.lines()] == ["first", "second"]
            assert to_terminal not in logger.handlers
        assert to_terminal in logger.handlers
        assert to_terminal.stream.getvalue() == "second\n", "what was not printed is written"
        assert to_file.stream.getvalue() == "first\nsecond\n"
    finally:
        logger.removeHandler(to_terminal)
        logger.removeHandler(to_file)
        logger.propagate = True


def test_snapshot_copies_what_the_drawing_thread_reads() -> None:
    repo = a_repo()
    a_cp(repo, "CP1")
    central = CentralService(repo, RecordingPublisher(), now=lambda: NOON)
    view = snapshot(central, [(NOON, "info", "hello")], now=NOON)
    central._say("later")
    assert list(view.messages) == [(NOON, "info", "hello")]
    assert view.now == NOON


def test_log_lines_feed_the_messages_area_even_when_logs_go_to_a_file() -> None:
    """Standard error redirected to a file: lines still go there, and to the panel."""
    to_file = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(to_file)
    try:
        with TerminalLogCapture() as capture:
            logging.getLogger("evcharging.test_file").warning("to the file")
            assert [text for _, _, text in capture.lines()] == ["to the file"]
            assert capture.take_unprinted() == []
        assert to_file.stream.getvalue() == "to the file\n"
    finally:
        logging.getLogger().removeHandler(to_file)


# --- the command line (issue 14: "restaurar claves" and rotate all keys at Central's terminal) --


async def keyed_central() -> tuple[CentralService, SqliteRepository]:
    """The sample network at a Central with keys; ALC01 and ALC02 connected, each with a key."""
    repo = a_repo()
    seed(repo, load_seed_file(SAMPLE))
    a_driver(repo, "D000")
    keys = CentralKeys(repo, MasterKey(MasterKey.generate()))
    central = CentralService(repo, RecordingPublisher(), now=lambda: NOON, keys=keys)
    await central.load()
    for cp_id in ("ALC01", "ALC02"):
        await central.monitor_auth(cp_id, object())
        await central.issue_key(cp_id)
    return central, repo


def test_the_command_line_edits_what_is_typed_and_ignores_control_keys() -> None:
    line = CommandLine()
    assert line.feed("revoke AL") == []
    assert line.prompt == Prompt("revoke AL")
    assert line.feed("X\x7f\x08LC01") == []  # Backspace (DEL or BS)
    assert line.text == "revoke ALC01"
    line.feed("\x1b[A\x1b[1;5C\x1bOP\x01")  # arrows, Ctrl+arrow, F1, Ctrl+A: nothing
    assert line.text == "revoke ALC01"
    line.feed("\x15")  # Ctrl+U
    assert line.text == ""
    assert line.feed("rotate keys\r\r  stop all \n") == ["rotate keys", "stop all"]
    line.feed("typo")
    line.feed("\x1b")  # Esc on its own
    assert line.text == ""
    line.feed("x" * 100)
    assert len(line.text) == 70


async def test_typed_commands_go_through_the_admin_front_door_and_are_audited() -> None:
    central, repo = await keyed_central()
    commands = PanelCommands(AdminDesk(central, None))
    answer = await commands.run("revoke alc01")  # the id as Central knows it
    assert answer == Answer(
        True, "CP ALC01 keys revoked: out of service until its Monitor authenticates again"
    )
    view = central.cp("ALC01")
    assert view is not None
    assert (view.state, view.stop_reason, view.key) == (
        CPState.PARADO,
        "keys revoked",
        "keys revoked",
    )
    assert await commands.run("revoke keys ALC01") == Answer(
        False, "Refused: CP ALC01's keys are already revoked: its Monitor must authenticate again"
    )
    assert await commands.run("rotate keys") == Answer(
        True, "1 connected CP asked to authenticate again for a new key"
    )
    assert await commands.run("revoke NOPE") == Answer(False, "Refused: unknown CP NOPE")
    assert await commands.run("stop ALC02") == Answer(True, "CP ALC02 stopped: Out of Order")
    assert (await commands.run("resume all")).text == "1 CP resumed; 11 skipped (not stopped)"
    rows = [
        (r.action.value, r.actor, r.ip, r.cp_id, r.params.get("transport"))
        for r in reversed(repo.find_audit(AuditQuery(limit=100)))
        if r.action in (AuditAction.KEYS_REVOKED, AuditAction.KEYS_ROTATED)
        or r.action.value.startswith("admin.")
    ]
    assert rows[:5] == [
        ("key.revoked", "admin", "-", "ALC01", None),
        ("admin.action", "admin", "-", "ALC01", "terminal"),
        ("admin.refused", "admin", "-", "ALC01", "terminal"),
        ("key.rotated", "admin", "-", None, None),
        ("admin.action", "admin", "-", None, "terminal"),
    ]


async def test_report_and_reset_typed_at_the_terminal_ask_the_cp_through_the_front_door() -> None:
    """Issue 16: `report CP` and `reset CP [hard]`, with the same replies and audit rows as the
    HTTP API and the dashboard; a Desconectado CP is refused (nobody would hear it)."""
    central, repo = await keyed_central()
    commands = PanelCommands(AdminDesk(central, None))
    assert await commands.run("report alc01") == Answer(True, "CP ALC01 asked to report its status")
    assert await commands.run("report status ALC02") == Answer(
        True, "CP ALC02 asked to report its status"
    )
    assert await commands.run("reset ALC01") == Answer(True, "CP ALC01 asked to reset (soft)")
    assert await commands.run("RESET alc02 HARD") == Answer(True, "CP ALC02 asked to reset (hard)")
    assert await commands.run("reset MAD01") == Answer(
        False,
        "Refused: CP MAD01 is Desconectado: no Monitor link, so nobody would hear the request",
    )
    assert isinstance(central.publisher, RecordingPublisher)
    asks = [
        (e.event_type, e.cp_id, getattr(e, "hard", None))
        for e in central.publisher.sent
        if isinstance(e, (ev.CpReportStatus, ev.CpReset))
    ]
    assert asks == [
        ("CP_REPORT_STATUS", "ALC01", None),
        ("CP_REPORT_STATUS", "ALC02", None),
        ("CP_RESET", "ALC01", False),
        ("CP_RESET", "ALC02", True),
    ]
    rows = [
        (r.action.value, r.cp_id, r.params.get("command"), r.params.get("transport"))
        for r in reversed(repo.find_audit(AuditQuery(limit=100)))
        if r.action.value.startswith("admin.")
    ]
    assert rows == [
        ("admin.action", "ALC01", "report_status", "terminal"),
        ("admin.action", "ALC02", "report_status", "terminal"),
        ("admin.action", "ALC01", "reset_cp", "terminal"),
        ("admin.action", "ALC02", "reset_cp", "terminal"),
        ("admin.refused", "MAD01", "reset_cp", "terminal"),
    ]


def test_the_help_line_names_every_command_within_80_columns() -> None:
    assert len(f"> {HELP}") <= 80
    for command in ("stop", "resume", "report", "reset", "hard", "revoke", "rotate keys"):
        assert command in HELP


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        ("help", Answer(True, HELP)),
        ("report", Answer(False, "say which CP: report CP_ID")),
        ("reset", Answer(False, "say which CP: reset CP_ID (or reset CP_ID hard)")),
        ("reset ALC01 now", Answer(False, "say which CP: reset CP_ID (or reset CP_ID hard)")),
        ("revoke", Answer(False, "say which CP: revoke CP_ID")),
        ("stop", Answer(False, "say which CP: stop CP_ID (or stop all)")),
        ("rotate everything", Answer(False, f"unknown command 'rotate': {HELP}")),
        ("frobnicate ALC01", Answer(False, f"unknown command 'frobnicate': {HELP}")),
        ("revoke ALC 01", Answer(False, "say which CP: revoke CP_ID")),
        ("revoke ALC#01", Answer(False, "Refused: invalid fields: cp_id: String should match")),
    ],
)
async def test_a_command_that_cannot_be_read_says_so_and_changes_nothing(
    typed: str, answer: Answer
) -> None:
    central, _ = await keyed_central()
    before = central.cps()
    got = await PanelCommands(AdminDesk(central, None)).run(typed)
    assert got.ok == answer.ok
    assert got.text.startswith(answer.text)
    assert central.cps() == before


async def test_the_terminals_desk_admits_no_remote_caller() -> None:
    central, _ = await keyed_central()
    desk = AdminDesk(central, None)
    for token in ("", "anything", None):
        with pytest.raises(AdminRefusal):
            desk.admit(Caller(Transport.HTTP, "10.0.0.9:4000"), token)


@pytest.mark.parametrize(
    ("prompt", "last_line"),
    [
        (Prompt(), f"> {HELP}"),
        (Prompt("revoke ALC0"), "> revoke ALC0"),
        (Prompt(running="revoke ALC01"), "> revoke ALC01  … running"),
        (Prompt(answer=Answer(False, "Refused: unknown CP X")), "Refused: unknown CP X"),
    ],
)
async def test_the_command_line_is_the_last_line_of_a_frame_that_still_fits(
    prompt: Prompt, last_line: str
) -> None:
    central, _ = await keyed_central()
    lines = frame(MonitoringPanel(snapshot(central, prompt=prompt)), 80, 24)
    assert len(lines) == 24
    assert lines[-1].rstrip() == last_line
    assert TITLE in lines[0]
    assert all(sum(line.startswith(v.id) for line in lines) == 1 for v in central.cps())


@pytest.mark.parametrize(("width", "height"), [(80, 24), (150, 45), (40, 8), (20, 5), (20, 2)])
async def test_a_frame_with_a_command_line_fills_the_terminal_exactly(
    width: int, height: int
) -> None:
    central = await busy_central(cp_count=40, requests=15)
    lines = frame(MonitoringPanel(snapshot(central, prompt=Prompt("x" * 90))), width, height)
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)
    assert lines[-1].startswith("> x")


async def test_a_stopped_cp_says_why_on_its_line_and_its_tile_shows_the_key() -> None:
    central, _ = await keyed_central()
    await central.revoke_keys("ALC01")
    await central.stop_cp("ALC02")
    lines = frame(render(central), 80, 24)
    assert "keys revoked" in next(line for line in lines if line.startswith("ALC01"))
    assert "stopped by Central" in next(line for line in lines if line.startswith("ALC02"))
    roomy = "\n".join(frame(render(central), 150, 45))
    assert "0.35 €/kWh  keys revoked" in roomy  # ALC01's tile
    assert "0.49 €/kWh  no key" in roomy  # MAD01's: never authenticated


async def test_a_cp_stopped_by_a_weather_alert_says_so_with_its_city_within_80_columns() -> None:
    central, _ = await keyed_central()
    await central.weather_alert("ALC01", "Teruel", -3.0)
    await central.stop_cp("ALC02")
    await central.weather_alert("ALC02", "Alcoy de la Sierra Mariola", -12.5)
    lines = frame(render(central), 80, 24)
    assert all(len(line) <= 80 for line in lines)
    alc01 = next(line for line in lines if line.startswith("ALC01"))
    assert alc01.rstrip().endswith("weather alert (Teruel, -3 °C)")
    alc02 = next(line for line in lines if line.startswith("ALC02"))
    assert alc02.rstrip().endswith("stopped by Central; weather alert")  # no room for the city
    roomy = frame(render(central), 150, 45)
    tiles = [line.split("│")[1:4:2] for line in roomy if line.startswith("│")]
    assert [" ".join(pair[0].split()) for pair in tiles[3:5]] == ["weather alert", "Teruel, -3 °C"]
    assert [" ".join(pair[1].split()) for pair in tiles[3:5]] == [
        "stopped by Central",
        "weather alert (Alcoy de l…",
    ]


async def test_keys_typed_at_the_terminal_are_not_echoed_and_revoke_a_cps_keys(
    terminal_log_handler: logging.StreamHandler[TtyLog],
) -> None:
    """Central in a pseudo-terminal: what is typed shows on the panel's last line only (the
    terminal's echo is off while the panel runs, and back after), Enter carries it out."""
    central, _ = await keyed_central()
    term = EmulatedTerminal(80, 24)
    console = Console(file=term, force_terminal=True, width=80, height=24, color_system="256")
    keyboard, tty = os.openpty()
    try:
        assert termios.tcgetattr(tty)[3] & termios.ECHO
        with CentralPanel(central, console, refresh_per_second=20, input_fd=tty):
            assert not termios.tcgetattr(tty)[3] & (termios.ECHO | termios.ICANON)
            await eventually(lambda: term.text().endswith(f"> {HELP}"))
            os.write(keyboard, b"revoke alc0")
            await eventually(lambda: term.text().endswith("> revoke alc0"), what="the typing")
            os.write(keyboard, b"1\r")
            await eventually(
                lambda: term.text().endswith(
                    "CP ALC01 keys revoked: out of service until its Monitor authenticates again"
                ),
                what="the answer on the last line",
            )
            await eventually(
                lambda: (
                    "keys revoked"
                    in next(line for line in term.text().splitlines() if line.startswith("ALC01"))
                ),
                what="ALC01's line says why it is stopped",
            )
            assert term.text().count(TITLE) == 1
        assert termios.tcgetattr(tty)[3] & termios.ECHO, "the terminal's echo is back"
    finally:
        os.close(keyboard)
        os.close(tty)
    assert central.cp("ALC01").keys_revoked  # type: ignore[union-attr]


async def test_commands_from_a_pipe_run_and_its_end_only_ends_the_command_line(
    terminal_log_handler: logging.StreamHandler[TtyLog],
) -> None:
    central, _ = await keyed_central()
    term = EmulatedTerminal(80, 24)
    console = Console(file=term, force_terminal=True, width=80, height=24, color_system="256")
    read_end, write_end = os.pipe()
    try:
        with CentralPanel(central, console, refresh_per_second=20, input_fd=read_end):
            os.write(write_end, b"rotate keys\nstop MAD01\n")
            os.close(write_end)
            await eventually(
                lambda: "CP MAD01 stopped by Central" in term.text(), what="the stop carried out"
            )
            await eventually(
                lambda: term.text().endswith("typed commands off: the terminal's input ended"),
                what="no command line once the input has ended: the newest message is last",
            )
            assert "type a command" not in term.text()
    finally:
        os.close(read_end)
    assert central.cp("MAD01").admin_stopped  # type: ignore[union-attr]


def pending(fd: int) -> int:
    """Bytes typed at a terminal and not read yet."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


async def test_a_central_in_the_background_never_touches_its_terminal_until_it_is_foreground(
    monkeypatch: pytest.MonkeyPatch, terminal_log_handler: logging.StreamHandler[TtyLog]
) -> None:
    """`EV_Central ... &`, or Ctrl+Z then `bg`: reading the terminal or changing its settings
    would get Central stopped by the kernel (SIGTTIN, SIGTTOU). It waits to be `fg` again."""
    central, _ = await keyed_central()
    term = EmulatedTerminal(80, 24)
    console = Console(file=term, force_terminal=True, width=80, height=24, color_system="256")
    monkeypatch.setattr(terminal_input, "RECHECK", 0.05)
    foreground = {"pgrp": os.getpgrp() + 1}  # another job has the terminal
    monkeypatch.setattr(os, "tcgetpgrp", lambda fd: foreground["pgrp"])
    keyboard, tty = os.openpty()
    try:
        with CentralPanel(central, console, refresh_per_second=20, input_fd=tty) as panel:
            assert panel.input is not None
            await eventually(lambda: TITLE in term.text(), what="the panel")
            os.write(keyboard, b"stop ALC02\r")
            assert termios.tcgetattr(tty)[3] & termios.ECHO, "settings untouched"
            assert not panel.input.reading
            foreground["pgrp"] = os.getpgrp()  # fg
            await eventually(
                lambda: not termios.tcgetattr(tty)[3] & termios.ECHO, what="keys taken at fg"
            )
            await eventually(
                lambda: central.cp("ALC02").admin_stopped,  # type: ignore[union-attr]
                what="what was typed meanwhile read once in the foreground",
            )
            foreground["pgrp"] = os.getpgrp() + 1  # Ctrl+Z, bg
            os.write(keyboard, b"resume ALC02\r")
            await eventually(lambda: not panel.input.reading, what="reading paused")  # type: ignore[union-attr]
            assert pending(tty) == len(b"resume ALC02\r"), "nothing read in the background"
            assert central.cp("ALC02").admin_stopped  # type: ignore[union-attr]
            foreground["pgrp"] = os.getpgrp()
            await eventually(
                lambda: not central.cp("ALC02").admin_stopped,  # type: ignore[union-attr]
                what="read again once in the foreground",
            )
        assert termios.tcgetattr(tty)[3] & termios.ECHO
    finally:
        os.close(keyboard)
        os.close(tty)
