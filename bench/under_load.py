"""Green under load, measured (printed, never asserted): `tbctl repro TARGET` on an idle host, then
with CPU hogs beside it (default: one per core, so VMs and hogs want twice the host's CPUs), each
followed by repro's own summary (failure rate with its interval, the signatures seen).

Usage: .venv/bin/python bench/under_load.py TARGET [RUNS] [HOGS] [-- REPRO-ARGS]
  e.g. bench/under_load.py sw_hotplug 20        bench/under_load.py dm_mount 10 2 -- --qemu backports
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def repro(target: str, runs: int, extra: list[str], out: Path) -> tuple[float, list[str]]:
    """Seconds taken and repro's summary lines."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "repro", target, "-n", str(runs), "--jobs", "1",
                        "--seed", "1", *extra], capture_output=True, text=True, cwd=out, timeout=4 * 3600,
                       env=dict(os.environ, TBCTL_ARTIFACTS=str(out)))
    return time.monotonic() - t0, [ln for ln in r.stdout.splitlines() if ln.strip()]


def main() -> None:
    args, extra = (sys.argv[1:], []) if "--" not in sys.argv else \
        (sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:])
    target, runs = args[0], int(args[1]) if len(args) > 1 else 10
    hogs = int(args[2]) if len(args) > 2 else os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="tbctl-bench-load-") as tmp:
        for load in (0, hogs):
            procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
            for p in procs:
                p.start()
            try:
                took, lines = repro(target, runs, extra, Path(tmp))
            finally:
                for p in procs:
                    p.kill()
            print(f"== {target} x{runs}, {load} CPU hog(s) on {os.cpu_count()} cores: {took:.0f} s")
            for ln in lines:
                print(f"   {ln}")


if __name__ == "__main__":
    main()
