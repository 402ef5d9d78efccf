"""What every client of another program's HTTP API shares (the Monitor's Registry client, EV_W's
provider and Central clients, Central's Registry probe): the rule for a base URL, the TLS context
that trusts our own CA, and a failure said in one line.

httpx wraps httpcore, which wraps the socket's or ssl's error: the innermost cause is what a
person can act on ("connection refused", "certificate verify failed").
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx


def quiet_http_logs() -> None:
    """httpx logs every request's URL at INFO: noise every few seconds (Central's Registry probe,
    EV_W's cycle), and a URL may hold a secret (OpenWeather's API key)."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def base_url(value: str, *, https_only: bool = False) -> str:
    """'http(s)://HOST[:PORT]' -> the same without a trailing '/'; else a ValueError saying what
    was expected (with `https_only`, an http:// URL is refused: a secret would travel in clear)."""
    expected = "https://HOST:PORT" if https_only else "http(s)://HOST[:PORT]"
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # only checked: a bad port is a ValueError
    except ValueError:
        raise ValueError(f"expected {expected}") from None
    if https_only and parts.scheme == "http":
        raise ValueError(f"HTTPS only (a secret would travel in clear): use {expected}")
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"expected {expected}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected {expected} (no path, query or user)")
    return text.rstrip("/")


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the server against `ca_file` (our own CA) or, without one, the system's CAs;
    ValueError when the file cannot be used."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use the CA file {ca_file}: {one_line(exc)}") from None


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of `exc` (cycles in the chain are cut)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def one_line(exc: BaseException) -> str:
    """The exception's text on one line, or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def fastapi_detail(response: httpx.Response) -> str:
    """A FastAPI answer's `detail` on one line: its text, or (422) up to three field errors as
    'field: message; ...'; "" when there is none."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    if isinstance(detail, str):
        return " ".join(detail.split())[:200]
    if isinstance(detail, list):
        fields = []
        for item in detail[:3]:
            if isinstance(item, dict):
                where = [str(p) for p in item.get("loc", ()) if p not in ("body", "path", "query")]
                fields.append(f"{'.'.join(where) or 'request'}: {item.get('msg', 'invalid')}")
        return "; ".join(fields)[:200]
    return ""
