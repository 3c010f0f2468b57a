"""When a fault fires: after a delay drawn from the test's seeded random source in [0, jitter)
seconds, so the timing varies from run to run to shake races out and the run's seed replays it."""

from __future__ import annotations

import random
import time


class Timed:
    """A fault injector's schedule: `delay(what)` before each fault, recorded as fired."""

    def __init__(self, rng: random.Random | None = None, jitter: float = 0.0):
        self.rng, self.jitter = rng or random.Random(0), jitter
        self.schedule: list[tuple[str, float]] = []  # (fault, delay before it) as fired
        self.fired: list[tuple[float, str]] = []  # (host time.time(), fault): for the test's timeline

    def delay(self, what: str) -> None:
        seconds = self.rng.uniform(0, self.jitter) if self.jitter > 0 else 0.0
        self.schedule.append((what, round(seconds, 4)))
        if seconds:
            time.sleep(seconds)
        self.fired.append((time.time(), what))
