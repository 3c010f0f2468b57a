"""results.json as the engine writes it (orchestrator/engine/results.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.config import topology
from orchestrator.engine import results


def a_run(tests: list[dict[str, object]], tmp_path: Path) -> SimpleNamespace:
    settings = SimpleNamespace(topology=topology.default(), seed=1, spec=SimpleNamespace(jitter=0.3, spdk_dir=None),
                               known=SimpleNamespace(source=None), artifacts=tmp_path / "art")
    return SimpleNamespace(results={t["nodeid"]: t for t in tests}, shard_record=None, settings=settings, env=None,
                           start="cold boot", started=0.0, versions=lambda: {"spdk": None})


@pytest.mark.parametrize("status, said", [(pytest.ExitCode.INTERRUPTED, "interrupted during this test"),
                                          (pytest.ExitCode.INTERNAL_ERROR, "ended during this test")])
def test_a_test_the_run_ended_in_is_written_with_an_outcome(tmp_path: Path, status: int, said: str) -> None:
    """Ctrl-C or SIGTERM during a test's body: its entry (made when its setup reported) says what
    became of it, as the exit code already counted it, instead of having no outcome at all."""
    run = a_run([{"nodeid": "s.py::a", "duration": 1.0, "outcome": "passed"}, {"nodeid": "s.py::b", "duration": 0.0}],
                tmp_path)
    code = results.write(run, status, tmp_path / "r.json")  # type: ignore[arg-type]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert code == doc["exit_code"] == 2
    (ended,) = [t for t in doc["tests"] if t["nodeid"] == "s.py::b"]
    assert ended["outcome"] == "infrastructure error" and said in ended["message"]
    assert doc["counts"]["infrastructure error"] == 1 and doc["counts"]["passed"] == 1
