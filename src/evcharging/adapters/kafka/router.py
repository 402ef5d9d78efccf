"""Declared, typed handlers: one router object per program, one handler per event class."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from evcharging.contracts.events import Event

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[None]]


class EventRouter:
    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[type[Event], Handler] = {}
        self.ignored: set[type[Event]] = set()
        self.unhandled = 0

    def on(
        self, event_cls: type[E]
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        def register(fn: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            if event_cls in self._handlers:
                raise ValueError(f"{self.name}: a handler for {event_cls.__name__} exists already")
            self._handlers[event_cls] = fn
            return fn

        return register

    def add(self, event_cls: type[E], fn: Callable[[E], Awaitable[None]]) -> None:
        self.on(event_cls)(fn)

    def ignore(self, *event_classes: type[Event]) -> None:
        """Declare events this program sees on its topics but deliberately does not act on."""
        self.ignored.update(event_classes)

    @property
    def handled(self) -> frozenset[type[Event]]:
        return frozenset(self._handlers)

    async def dispatch(self, event: Event) -> bool:
        handler = self._handlers.get(type(event))
        if handler is None:
            if type(event) not in self.ignored:
                self.unhandled += 1
                log.warning(
                    "%s: no handler for %s id=%s", self.name, event.event_type, event.event_id
                )
            return False
        await handler(event)
        return True
