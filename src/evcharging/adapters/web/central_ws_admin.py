"""The admin actions the dashboards send over `/ws`: a text frame in, one reply frame out.

Only the WebSocket's framing is here (a JSON object with `type`, `token` and the command's
fields; replies as in docs/dashboards.md); the token check, the commands, their rules and their
reply texts are Central's one admin front door, `services/admin.py`, shared with the HTTP API.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from evcharging.services.admin import (
    AdminDesk,
    AdminRefusal,
    AdminReply,
    Caller,
    Command,
    ResetCP,
    SimulateError,
    Transport,
)
from evcharging.services.audit import UNKNOWN_IP

log = logging.getLogger(__name__)

Frame = dict[str, Any]

MAX_FRAME_CHARS = 16_384
LOGIN = "login"  # only checks the token: the page's *Log in*


class _BadFrame(Exception):
    """A frame that is no admin request at all (not JSON, not an object, no known action)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse(text: str) -> tuple[str, dict[str, Any]]:
    if len(text) > MAX_FRAME_CHARS:
        raise _BadFrame(f"message too large (over {MAX_FRAME_CHARS} characters)")
    try:
        data = json.loads(text)
    except ValueError:
        raise _BadFrame("malformed JSON") from None
    if not isinstance(data, dict):
        raise _BadFrame("a message must be a JSON object")
    kind = data.pop("type", None)
    if kind != LOGIN and kind not in Command.__members__.values():
        raise _BadFrame(f"unknown action {str(kind)[:50]!r}")
    return str(kind), data


def reply_frame(reply: AdminReply) -> Frame:
    """A carried-out command as the page is answered."""
    if reply.bulk is not None:
        ids = [view.id for view in reply.bulk.changed]
        skipped = reply.bulk.json["skipped"]
        return {"type": reply.done, "cp_ids": ids, "skipped": skipped, "message": reply.message}
    if reply.asked is not None:
        return {"type": reply.done, "cp_ids": list(reply.asked), "message": reply.message}
    assert reply.cp is not None
    frame: Frame = {
        "type": reply.done,
        "cp_id": reply.cp.id,
        "message": reply.message,
        "cp": reply.cp.json,
    }
    if isinstance(reply.command, SimulateError):
        frame["error_type"] = reply.command.error_type
    elif isinstance(reply.command, ResetCP):
        frame["hard"] = reply.command.hard
    return frame


def error_frame(action: str | None, reason: str) -> Frame:
    return {"type": "error", "action": action, "reason": reason}


class WsAdmin:
    """Parse -> the front door (token, fields, action) -> reply frame."""

    def __init__(self, desk: AdminDesk) -> None:
        self.desk = desk

    async def handle(self, text: str | None, peer: str, ip: str = UNKNOWN_IP) -> Frame:
        """The reply to one frame from socket `peer` at address `ip` (None: a binary frame)."""
        caller = Caller(Transport.WEBSOCKET, peer, ip=ip)
        kind: str | None = None
        try:
            if text is None:
                raise _BadFrame("binary frames are not accepted")
            kind, data = _parse(text)
            admin = self.desk.admit(caller, data.pop("token", None), kind)
            if kind == LOGIN:
                return {"type": "logged_in", "message": self.desk.logged_in(admin)}
            command = self.desk.command(admin, Command(kind), data)
            return reply_frame(await self.desk.run(admin, command))
        except _BadFrame as bad:
            return error_frame(kind, self.desk.reject(caller, kind, bad.reason).reason)
        except AdminRefusal as refused:  # recorded by the desk
            return error_frame(kind, refused.reason)
        except Exception:  # a bug: details in the log, a generic reply on the wire
            log.exception("%s: action %s failed", caller, kind)
            return error_frame(kind, "internal error")
