"""docs/events.md is generated from the models: this fails when someone edits one and not the other."""

from __future__ import annotations

from pathlib import Path

from evcharging.ops.event_docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_events_doc_matches_the_models() -> None:
    assert DOC.read_text(encoding="utf-8") == render() + "\n", "run: evcharging docs events"
