"""pytest, for the CLI (which imports no pytest): a run of suites, and a listing of their tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGIN = "orchestrator.pytest_plugin"


def run(args: list[str]) -> int:
    """pytest with tbctl's plugin on `args`; its own exit status (tbctl's is in results.json)."""
    return int(pytest.main([*args, "-p", PLUGIN, "-p", "no:cacheprovider"]))


class _Lister:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        module = None
        for item in session.items:
            mod = getattr(item, "module", None)
            if mod is not module:
                module = mod
                doc = (mod.__doc__ or "").strip().splitlines()
                self.lines.append(f"{Path(str(item.fspath)).stem}: {doc[0] if doc else ''}")
            doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()  # type: ignore[union-attr]
            self.lines.append(f"  {item.name:40} {doc[0] if doc else ''}")


def list_tests(paths: list[str]) -> int:
    """Print each suite's first docstring line and each test's (once pytest is done: a reader that
    goes away is the CLI's to handle, not pytest's); 0 when collection worked."""
    lister = _Lister()
    rc = pytest.main([*paths, "--collect-only", "-o", "addopts=", "-p", "no:terminal", "-p", "no:cacheprovider",
                      "-p", PLUGIN], plugins=[lister])
    for line in lister.lines:
        print(line)
    return 0 if rc == 0 else 2


class _Names:
    def __init__(self) -> None:
        self.names: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.names = [item.name for item in session.items]


def test_names(path: str) -> list[str]:
    """The test ids (with their parameters) of one suite file, collected quietly."""
    names = _Names()
    pytest.main([path, "--collect-only", "-o", "addopts=", "-p", "no:terminal", "-p", "no:cacheprovider",
                 "-p", PLUGIN], plugins=[names])
    return names.names
