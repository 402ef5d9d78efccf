"""The audit log as JSON lines in one rotated file: what a SIEM ships (beside the database table).

`logging.handlers.RotatingFileHandler` does the rotation (size-based, `backups` old files kept);
a logger of its own that does not propagate keeps the rows out of the terminal and the program's
log.  Each line is one `AuditEntry` as a JSON object, UTC time first.
"""

from __future__ import annotations

import json
import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from evcharging.services.audit import AuditEntry


class AuditFile:
    """An `AuditSink`: appends each entry as one JSON line, rotating at `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int = 10_000_000, backups: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._log = logging.getLogger(f"evcharging.audit_file.{path}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._log.addHandler(self._handler)

    def append_audit(self, entry: AuditEntry) -> None:
        self._log.info("%s", json.dumps(as_json(entry), ensure_ascii=False, sort_keys=False))

    def close(self) -> None:
        self._log.removeHandler(self._handler)
        self._handler.close()


def as_json(entry: AuditEntry) -> dict[str, object]:
    """The shape of a row everywhere it is shown: this file and `GET /api/audit`."""
    return {
        "at": entry.at.isoformat(),
        "action": entry.action.value,
        "actor": entry.actor,
        "ip": entry.ip,
        "outcome": entry.outcome.value,
        "cp_id": entry.cp_id,
        "detail": entry.detail,
        "params": dict(entry.params),
        **({"seq": entry.seq} if entry.seq is not None else {}),
    }
