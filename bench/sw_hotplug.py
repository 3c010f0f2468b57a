"""Wall time of `tbctl run sw_hotplug -k kernel` (event-driven) against the same event schedule
driven with the fixed sleeps of SPDK's old test/nvme/hotplug.sh: 6 s after starting the app,
4 s after each removal, 6 s after each insertion (printed, never asserted).

The fixed-sleep run boots its own VM and replays the kernel tests' schedule: orderly hotplug of
both controllers x4, surprise removal x2, and 2 x 2 cycles for the I/O test (without fio).

Usage: .venv/bin/python bench/sw_hotplug.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator import image
from orchestrator.config import topology
from orchestrator.faults import Hotplug
from orchestrator.guest.hotplug_app import KernelHotplugApp
from orchestrator.machines import Machine
from orchestrator.vm import accel

REPO = Path(__file__).resolve().parent.parent
SLEEP_START, SLEEP_REMOVE, SLEEP_ADD = 6, 4, 6


def fixed_sleep_run(out: Path) -> float:
    img = image.ensure()
    t0 = time.monotonic()
    with Machine(topology.default(), img, out / "vm", accel=accel.resolve("auto", img)) as m:
        hp = Hotplug(m)
        schedule = [(["nvme0", "nvme1"], 4, False), (["nvme0", "nvme1"], 2, True), (["nvme0"], 2, False),
                    (["nvme1"], 2, False)]
        for i, (ctrls, cycles, surprise) in enumerate(schedule):
            n = len(ctrls) * cycles
            with KernelHotplugApp(m.ssh, out / f"app{i}.log") as app:
                app.start(inserts=n, removals=n, seconds=600)
                time.sleep(SLEEP_START)
                for _ in range(cycles):
                    for c in ctrls:
                        if surprise:
                            hp.surprise_remove(c)
                        else:
                            hp.remove(c)
                        time.sleep(SLEEP_REMOVE)
                        if surprise:
                            hp.rescan()
                        else:
                            hp.add(c)
                        time.sleep(SLEEP_ADD)
                s = app.finish()
                assert (s.rc, s.inserts, s.removals) == (0, n, n), s
    return time.monotonic() - t0


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="tbctl-bench-hotplug-"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "sw_hotplug", "-k", "kernel"],
                       cwd=out, capture_output=True, text=True)
    event_driven = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"tbctl run failed ({r.returncode}):\n{r.stdout[-3000:]}")
    fixed = fixed_sleep_run(out)
    print(f"tbctl run sw_hotplug -k kernel (event-driven, incl. boot): {event_driven:6.1f} s")
    print(f"same schedule with fixed 6/4/6 s sleeps (incl. boot):     {fixed:6.1f} s")
    print(f"ratio fixed-sleep / event-driven:                         {fixed / event_driven:6.2f}x")
    print(f"artifacts under {out}")


if __name__ == "__main__":
    main()
