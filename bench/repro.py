"""Flake reproduction speed (printed, never asserted): readiness of a machine booted cold against
one restored from a saved guest (median of 5 each, controllers hot-added included), and runs per
minute of `tbctl repro` on a one-test suite with --jobs 1 and --jobs 2, cold and from the save.

Usage: .venv/bin/python bench/repro.py [RUNS]   (default 10 runs per repro)
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import image
from orchestrator.config import topology
from orchestrator.machines import Machine, snapshot
from orchestrator.vm import accel

REPO = Path(__file__).resolve().parent.parent
FLAKY = REPO / "tests" / "engine_suites" / "flaky.py"


def readiness(out: Path, restore: snapshot.Saved | None, n: int = 5) -> float:
    img = image.ensure()
    times = []
    for i in range(n):
        t0 = time.monotonic()
        with Machine(topology.default(), img, out / f"{'snap' if restore else 'cold'}-{i}",
                     accel=accel.resolve("auto", img), restore=restore):
            times.append(time.monotonic() - t0)
    return statistics.median(times)


def runs_per_minute(out: Path, runs: int, jobs: int, cold: bool) -> float:
    env = dict(os.environ, TBCTL_ARTIFACTS=str(out))
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "repro", str(FLAKY), "-n", str(runs),
                        "--jobs", str(jobs), "--seed", "1", *(["--cold"] if cold else [])],
                       capture_output=True, text=True, env=env, cwd=out, timeout=3600)
    rates = re.findall(r"runs \d+/\d+ .* ([\d.]+) runs/min", r.stderr)
    return float(rates[-1]) if rates else float("nan")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    img = image.ensure()
    saved = snapshot.ensure(topology.default(), img, accel.resolve("auto", img))
    with tempfile.TemporaryDirectory(prefix="tbctl-bench-repro-") as tmp:
        out = Path(tmp)
        cold, warm = readiness(out, None), readiness(out, saved)
        print(f"readiness (SSH + both NVMe controllers live), median of 5: cold boot {cold:.2f} s, "
              f"restored {warm:.2f} s ({cold / warm:.1f}x)")
        for jobs in (1, 2):
            for is_cold in (True, False):
                rate = runs_per_minute(out, runs, jobs, is_cold)
                print(f"tbctl repro flaky.py -n {runs} --jobs {jobs} {'--cold' if is_cold else '(snapshot)'}: "
                      f"{rate:.1f} runs/min")


if __name__ == "__main__":
    main()
