"""The dashboards' HTML pages, with the contracts' field rules written in where the forms use them.

Why: a form that checks an id or a location in the browser must apply the server's rule, and the
rule has one home (`contracts/fields.py`). The page files carry placeholders (`{{ID_PATTERN}}`,
`{{ID_MAX}}`, `{{LOCATION_MAX}}`, and the audit log's actions for its filter, `{{AUDIT_ACTIONS}}`);
each page is filled in once, when first asked for.

Markup the admin dashboard and the public front both show (the live supply of a tile, which
`EVLive.fillTile` in static/shared/live.js fills) has one home too: `static/parts/NAME.html`,
written into a page where it says `{{PART NAME}}`.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from fastapi.responses import HTMLResponse

from evcharging.contracts.audit import AuditAction
from evcharging.contracts.fields import ID_PATTERN, MAX_ID, MAX_LOCATION

RULES = {
    "{{ID_PATTERN}}": ID_PATTERN,
    "{{ID_MAX}}": str(MAX_ID),
    "{{LOCATION_MAX}}": str(MAX_LOCATION),
    "{{AUDIT_ACTIONS}}": " ".join(action.value for action in AuditAction),
}
PARTS = Path(__file__).resolve().parent / "static" / "parts"
_PART = re.compile(r"\{\{PART ([a-z][a-z-]*)\}\}")


def _part(match: re.Match[str]) -> str:
    return (PARTS / f"{match.group(1)}.html").read_text(encoding="utf-8").rstrip("\n")


@lru_cache(maxsize=8)
def filled(path: Path) -> str:
    """The page at `path` with its shared parts written in and every rule placeholder replaced
    (attribute-escaped)."""
    text = _PART.sub(_part, path.read_text(encoding="utf-8"))
    for placeholder, value in RULES.items():
        text = text.replace(placeholder, html.escape(value, quote=True))
    return text


def page(path: Path, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(filled(path), headers=headers)
