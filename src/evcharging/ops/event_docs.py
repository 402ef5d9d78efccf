"""Generates docs/events.md from the event models, so the contract's document cannot drift."""

from __future__ import annotations

from typing import Any

from evcharging.contracts.events import EVENT_TYPES, Event
from evcharging.contracts.topics import ALL_TOPICS

ENVELOPE = ("event_id", "event_type", "ts", "source", "v")


def _type_name(info: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in info:  # a shared definition, e.g. the CP states (domain.cp_state.CPState)
        return _type_name(defs[info["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in info:
        return " or ".join(_type_name(i, defs) for i in info["anyOf"])
    if "enum" in info:
        return " or ".join(repr(v) for v in info["enum"])
    if "const" in info:
        return repr(info["const"])
    fmt = info.get("format")
    return str(fmt or info.get("type", "?"))


def _fields(cls: type[Event]) -> list[str]:
    schema = cls.model_json_schema()
    required = set(schema.get("required", []))
    defs = schema.get("$defs", {})
    rows = []
    for name, info in schema["properties"].items():
        if name in ENVELOPE:
            continue
        need = "yes" if name in required else "no"
        limits = ", ".join(
            f"{k}={info[k]}"
            for k in ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "pattern")
            if k in info
        )
        rows.append(f"| `{name}` | {_type_name(info, defs)} | {need} | {limits} |")
    return rows


def render() -> str:
    out = [
        "# Kafka event contract",
        "",
        "Generated from `src/evcharging/contracts/events.py` by `evcharging docs events`;",
        "`tests/unit/test_event_docs.py` fails when this file and the models disagree.",
        "",
        "## Envelope (every event)",
        "",
        "| field | type | meaning |",
        "|---|---|---|",
        "| `event_id` | UUID | unique per event; handlers use it (and natural keys) to stay idempotent |",
        "| `event_type` | string | selects the model below |",
        "| `ts` | ISO-8601 UTC | when the sender created it |",
        "| `source` | string | who sent it (`central`, `driver:D001`, `engine:ALC01`, ...) |",
        "| `v` | 1 | contract version |",
        "",
        'Money and energy travel as decimal strings (`"0.35"`), never binary floats.',
        "A message that is not JSON, has an unknown `event_type` or fails validation is logged with",
        "its reason and skipped; the consumer goes on with the next one.",
        "",
        "## Topics",
        "",
        "| topic | partitions | compacted | carries |",
        "|---|---|---|---|",
    ]
    out += [
        f"| `{t.name}` | {t.partitions} | {'yes' if t.compacted else 'no'} | {t.doc} |"
        for t in ALL_TOPICS
    ]
    out += ["", "## Events", ""]
    for cls in EVENT_TYPES:
        event_type = cls.model_fields["event_type"].default
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        out += [
            f"### `{event_type}`",
            "",
            f"Topic `{cls.TOPIC.name}`, key `{cls.KEY_FIELD}`. {doc}".rstrip(),
            "",
            "| field | type | required | limits |",
            "|---|---|---|---|",
            *_fields(cls),
            "",
        ]
    return "\n".join(out)
