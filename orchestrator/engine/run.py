"""pytest, for the CLI (which imports no pytest): a run of suites, and a listing of their tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from orchestrator.config.runspec import RunSpec
from orchestrator.config.topology import Topology
from orchestrator.engine.session import run_of
from orchestrator.errors import ConfigError

PLUGIN = "orchestrator.pytest_plugin"


def run(args: list[str]) -> int:
    """pytest with tbctl's plugin on `args`; its own exit status (tbctl's is in results.json)."""
    return int(pytest.main([*args, "-p", PLUGIN, "-p", "no:cacheprovider"]))


class _Collected:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def _collect(paths: list[str]) -> tuple[int, list[pytest.Item]]:
    """pytest's collection of `paths` with tbctl's plugin, quietly: its status and the tests."""
    found = _Collected()
    rc = pytest.main([*paths, "--collect-only", "-o", "addopts=", "-p", "no:terminal", "-p", "no:cacheprovider",
                      "-p", PLUGIN], plugins=[found])
    return int(rc), found.items


def topologies_of(paths: list[str], spec: Path) -> list[Topology]:
    """The machine shapes the tests of `paths` start under `spec`, each once: a test's own
    machine's, or its module's bed's (a test that takes `machines`)."""
    rc, items = _collect([*paths, "--tb-spec", str(spec)])
    if rc != 0 or not items:
        raise ConfigError(f"{' '.join(paths)}: no test collected (pytest status {rc})")
    shapes: dict[Topology, None] = {}
    for item in items:
        run = run_of(item.config)
        bed = "machines" in getattr(item, "fixturenames", ())
        shapes.update(dict.fromkeys(run.bed_for(item.module).machines.values() if bed  # type: ignore[attr-defined]
                                    else [run.topology_for(item)]))
    return list(shapes)


def list_tests(paths: list[str]) -> int:
    """Print each suite's first docstring line and each test's (once pytest is done: a reader that
    goes away is the CLI's to handle, not pytest's); 0 when collection worked."""
    rc, items = _collect(paths)
    module = None
    for item in items:
        mod = getattr(item, "module", None)
        if mod is not module:
            module = mod
            doc = (mod.__doc__ or "").strip().splitlines()
            print(f"{item.path.stem}: {doc[0] if doc else ''}")
        doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()
        print(f"  {item.name:40} {doc[0] if doc else ''}")
    return 0 if rc == 0 else 2


def names_of(path: str) -> list[str]:
    """The test ids (with their parameters) of one suite file, all of them: a job that is one
    shard of a pipeline (its scheduler's variables) still names any test."""
    with tempfile.TemporaryDirectory(prefix="tbctl-names-") as tmp:
        whole = RunSpec(shard="1/1").dump(Path(tmp) / "spec.json")
        return [item.name for item in _collect([path, "--tb-spec", str(whole)])[1]]
