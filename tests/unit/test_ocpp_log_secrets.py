"""A charger's Basic credential is its CP's secret: it never reaches a log line, at any level."""

from __future__ import annotations

import base64
import logging

import pytest

from evcharging.adapters.ocpp.server import WEBSOCKET_LOG


def test_the_authorization_header_is_hidden_in_websockets_debug_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = base64.b64encode(b"CP01:s3cr3t-value").decode()
    with caplog.at_level(logging.DEBUG, logger=WEBSOCKET_LOG.name):
        WEBSOCKET_LOG.debug("< %s: %s", "Authorization", f"Basic {secret}")
        WEBSOCKET_LOG.debug("< %s: %s", "Host", "127.0.0.1:9000")
    text = caplog.text
    assert secret not in text
    assert "Authorization: [hidden]" in text
    assert "Host: 127.0.0.1:9000" in text
