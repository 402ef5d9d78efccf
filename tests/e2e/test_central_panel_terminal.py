"""EV_Central's live panel as a person sees it: the real program in a pseudo-terminal whose output
feeds a terminal emulator (pyte), at 80x24 and then, resized, at 150x45, while a real CP and a
driver come and go, an admin stops and resumes CPs over the HTTP API, and the operator types a
command at the panel's command line."""

from __future__ import annotations

import re

import pytest

from tests.support.processes import Network
from tests.support.terminal import Terminal, central_in_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

TITLE = "*** EV CHARGING SOLUTION. MONITORING PANEL ***"
SECTIONS = ("*** ON-GOING DRIVERS REQUESTS ***", "*** APPLICATION MESSAGES ***")
CPS = [f"{city}0{n}" for city in ("ALC", "BCN", "MAD", "VLC") for n in (1, 2, 3)]
PROMPT = "> stop|resume CP|all · report CP · reset CP [hard] · revoke CP · rotate keys"
LIVE_SUPPLY = ("Suministrando", "0.35 €/kWh", " kW ", " kWh ", " € ", "driver D001")


def line_of(screen: str, cp_id: str) -> str:
    """The compact layout's line of a CP ('' if none)."""
    return next((line for line in screen.splitlines() if line.startswith(f"{cp_id} ")), "")


def request_row(line: str) -> list[str]:
    """User ID, CP and STATUS of a request row, whose date and start time (UTC) come first."""
    words = line.split()
    return words[3:] if len(words) == 6 and words[0][:2] == "20" and words[2] == "UTC" else []


def written(term: Terminal) -> str:
    """Everything the program wrote, as words (no escape codes, no line breaks): what scrolled
    into the terminal's scrollback included."""
    raw = term.log.read_text(encoding="utf-8", errors="replace")
    return " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).split())


def complete(screen: str) -> bool:
    """The whole panel is on the screen: the title on the first line (nothing scrolled off the
    top), every CP, both sections. (A screen read while a frame is being written is not.)"""
    return (
        TITLE in screen.split("\n", 1)[0]
        and all(cp in screen for cp in CPS)
        and all(section in screen for section in SECTIONS)
    )


def assert_whole_and_clean(term: Terminal, rows: int) -> str:
    """Complete, and the title nowhere else: no stale copy of an earlier frame."""
    assert len(term.lines()) == rows
    screen = term.wait_until(complete, "the whole panel on the screen")
    assert screen.count(TITLE) == 1, screen
    return screen


def test_panel_is_whole_and_clean_at_80x24_and_after_a_resize_to_150x45(network: Network) -> None:
    with central_in_terminal(network, 80, 24) as term:
        term.wait_until(
            lambda s: (
                all(line_of(s, cp) for cp in CPS)
                and s.endswith(PROMPT)
                and "Central started: 12 CPs loaded" in written(term)
            ),
            "every CP on its own line, the command line last, and the start message",
        )
        assert_whole_and_clean(term, 24)

        network.charging_point("ALC01", "--auto-plug")
        term.wait_until(
            lambda s: "Activado" in line_of(s, "ALC01") and "CP ALC01 authenticated" in s,
            "ALC01 Activado once its Monitor connects",
        )
        network.driver("D001", "--cp", "ALC01")
        term.wait_until(
            lambda s: (
                all(part in line_of(s, "ALC01") for part in LIVE_SUPPLY)
                and any(
                    request_row(line) == ["D001", "ALC01", "supplying"] for line in s.splitlines()
                )
            ),
            "ALC01 supplying D001 with live figures, and the request in the table",
        )
        assert network.admin("/api/cps/BCN01/stop").status_code == 200
        term.wait_until(
            lambda s: "CP BCN01 stopped by Central" in s, "the stop's message in the messages area"
        )
        assert_whole_and_clean(term, 24)

        term.type("stop bcn02")  # not echoed by the terminal: drawn by the panel, on its last line
        term.wait_until(lambda s: s.endswith("> stop bcn02"), "what is typed, on the last line")
        term.type("\r")
        screen = term.wait_until(
            lambda s: s.endswith("CP BCN02 stopped: Desconectado"),  # no Monitor: kept stopped
            "the answer on the last line",
        )
        assert screen.count("stop bcn02") == 0, "nothing echoed anywhere else"
        assert network.cp("BCN02")["admin_stopped"] is True
        assert_whole_and_clean(term, 24)

        term.resize(150, 45)
        term.wait_until(
            lambda s: "╭" in s and "Suministrando" in s and "driver D001" in s,
            "tiles on the larger screen, the live supply in ALC01's",
        )
        assert network.admin("/api/cps/ALC01/stop").status_code == 200
        assert network.admin("/api/cps/BCN01/resume").status_code == 200
        screen = term.wait_until(
            lambda s: (
                "CP ALC01 stopped by Central -> Out of Order" in s
                and "CP BCN01 resumed by Central" in s
                and "Suministrando" not in s
            ),
            "both admin actions in the messages area, the supply ended",
        )
        assert "Out of Order" in screen
        assert_whole_and_clean(term, 45)

        # "restaurar claves" typed at Central's terminal, for the CP whose Monitor is connected
        term.type("revoke ALC01\r")
        term.wait_until(
            lambda s: (
                s.endswith(
                    "CP ALC01 keys revoked: out of service until its Monitor authenticates again"
                )
                and "0.35 €/kWh  keys revoked" in s
            ),
            "the answer on the last line, ALC01's tile with its keys revoked",
        )
        assert network.cp("ALC01")["stop_reason"] == "stopped by Central; keys revoked"
        assert_whole_and_clean(term, 45)
