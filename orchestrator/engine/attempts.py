"""A failing test run again (`tbctl run --retries N`; pytest-rerunfailures runs it): each attempt
starts clean (its own verdict, slices of the machines it gets, timeline and artifacts directory,
`...-attempt-K` from the second on), and the test's results keep the earlier attempts under
`attempts`. A test that failed and then passed stays `passed` with its failed attempts listed:
flaky, which the summary says and a baseline reports as a new flake instead of hiding it."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.engine import deadline, results, slices, timeline
from orchestrator.engine.session import Run
from orchestrator.results import repro

KEPT = ("outcome", "message", "duration", "artifacts", "discarded")


def number(item: pytest.Item) -> int:
    """1 for the first attempt (pytest-rerunfailures counts executions on the item)."""
    return max(1, int(getattr(item, "execution_count", 1) or 1))


def begin(run: Run, item: pytest.Item) -> None:
    """From the second attempt on: the previous one moved to `attempts`, the test's state reset."""
    if number(item) == 1:
        return
    e = results.entry(run, item)
    done = {k: e[k] for k in KEPT if k in e} | {"signature": repro.signature(e)}
    kept = e.get("attempts", []) + [done]
    e.clear()
    e.update(nodeid=item.nodeid, duration=0.0, attempts=kept)
    keys: tuple[pytest.StashKey[Any], ...] = (results.VERDICT, deadline.FIRED)
    for key in keys:
        if key in item.stash:
            del item.stash[key]
    slices.forget(item)
    timeline.forget(item)

