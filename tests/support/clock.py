"""A clock the test moves by hand (`clock.now += 5`), given where a program reads
`time.monotonic`: tests move time instead of sleeping."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
