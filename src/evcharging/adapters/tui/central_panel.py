"""EV_Central's live terminal panel (statement, figure 1): CP tiles, ongoing requests, messages."""

from __future__ import annotations

from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from evcharging.services.central import CentralService

_STYLE = {
    "green": "black on green3",
    "orange": "black on dark_orange",
    "red": "white on red3",
    "grey": "black on grey62",
}


def tile(view: dict[str, Any]) -> Panel:
    lines = [
        Text(view["location"], overflow="ellipsis", no_wrap=True),
        Text(f"{view['price_eur_per_kwh']} €/kWh"),
        Text(view["caption"], style="bold"),
    ]
    if view["state"] == "Suministrando":
        lines += [
            Text(f"{view['kw']} kW  {view['energy_kwh']} kWh"),
            Text(f"{view['amount_eur']} €  driver {view['driver_id']}"),
        ]
    elif view["session_id"]:
        lines.append(Text(f"reserved: driver {view['driver_id']}"))
    return Panel(Group(*lines), title=f"[bold]{view['id']}", width=30, style=_STYLE[view["colour"]])


def render(service: CentralService) -> RenderableType:
    tiles = Columns([tile(cp.view()) for cp in service.cps.values()], equal=True)
    requests = Table(title="*** ON-GOING DRIVERS REQUESTS ***", expand=True)
    for column in ("DATE", "START TIME", "User ID", "CP", "STATUS"):
        requests.add_column(column)
    for row in service.request_rows():
        requests.add_row(row["date"], row["start"], row["driver_id"], row["cp_id"], row["status"])
    messages = Text()
    for at, level, text in list(service.messages)[-8:]:
        style = "yellow" if level == "warning" else ""
        messages.append(f"{at:%H:%M:%S} {text}\n", style=style)
    return Group(
        Panel(tiles, title="*** EV CHARGING SOLUTION. MONITORING PANEL ***"),
        requests,
        Panel(messages, title="*** APLICATION MESSAGES ***"),
    )


def live_panel(service: CentralService, console: Console | None = None) -> Live:
    """A Live display that re-renders from the service's state four times a second."""
    return Live(
        get_renderable=lambda: render(service),
        console=console,
        refresh_per_second=4,
        screen=False,
        redirect_stderr=False,
    )
