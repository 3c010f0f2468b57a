"""The code's layering holds (scripts/layers): imports point down the layer list, no import cycle,
pytest only in engine/, no reaching into another module's private names, short engine hooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "layers"


def test_the_layering_holds() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "cli       -> " in r.stdout and "0 problem(s)" in r.stderr


def test_a_back_edge_is_caught(tmp_path: Path) -> None:
    """The check can fail: a copy of the tree with vm/ importing the engine is refused."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(SCRIPT.parent.parent / "orchestrator", copy / "orchestrator")
    (copy / "scripts").mkdir()
    shutil.copy(SCRIPT, copy / "scripts" / "layers")
    bad = copy / "orchestrator" / "vm" / "console.py"
    bad.write_text(bad.read_text() + "\nfrom orchestrator.results import outcome  # noqa\n")
    r = subprocess.run([sys.executable, str(copy / "scripts" / "layers")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "vm/ imports orchestrator.results.outcome (results/), which is not below it" in r.stderr
