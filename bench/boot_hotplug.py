"""Boot and hotplug figures for the default guest (printed, never asserted).

- boot: QEMU start -> sshd console marker -> first SSH command -> NVMe controllers in the guest,
  cold (a fresh overlay each boot), over N boots;
- hotplug: device_del -> controller gone in the guest, and device_add -> namespace back, over N cycles;
- cijoe-style readiness on the same image: poll the serial log every 5 s for the ready line,
  then SSH (cijoe waits for "login:"; this image has no getty, so its own marker stands in).

Usage: .venv/bin/python bench/boot_hotplug.py [--runs 5] [--cycles 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator import image
from orchestrator.config import topology
from orchestrator.image import MARKER_READY
from orchestrator.machines import Machine
from orchestrator.vm import accel


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.3f}  median {statistics.median(xs):.3f}  max {max(xs):.3f}  (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    img = image.ensure()
    acc = accel.resolve("auto", img)
    topo = topology.default()
    out = Path(tempfile.mkdtemp(prefix="tbctl-bench-"))
    marker, ready, nvme, removed, added, deleted_ev, cijoe = [], [], [], [], [], [], []
    for i in range(args.runs):
        with Machine(topo, img, out / f"boot{i}", accel=acc) as m:
            t = m.timings
            marker.append(t["marker"] - t["launched"])
            ready.append(t["ready"] - t["launched"])
            nvme.append(t["nvme"] - t["launched"])
            if i == 0:
                for _ in range(args.cycles):
                    r = m.hot_remove("nvme0")
                    removed.append(r["guest"])
                    deleted_ev.append(r["device_deleted"])
                    added.append(m.hot_add("nvme0")["guest"])
    for i in range(args.runs):
        m = Machine(topo, img, out / f"cijoe{i}", accel=acc, boot_timeout=300)
        t0 = time.monotonic()
        # launch without tbctl's readiness wait, then poll the serial log the way cijoe does
        m.wait_ready = lambda timeout: None  # type: ignore[method-assign]
        with m:
            log = m.artifacts / "console.log"
            while MARKER_READY not in (log.read_text(errors="replace") if log.exists() else ""):
                time.sleep(5)
            m.connect_ssh(60).run("true", timeout=30, check=True)
            cijoe.append(time.monotonic() - t0)
    print(f"accelerator: {acc}; image {img.digest}; artifacts under {out}")
    print(f"boot -> sshd marker (s):            {stats(marker)}")
    print(f"boot -> first SSH command (s):      {stats(ready)}")
    print(f"boot -> NVMe in guest (s):          {stats(nvme)}")
    print(f"cijoe-style (5 s serial poll) (s):  {stats(cijoe)}")
    print(f"ratio cijoe-style / tbctl (median):  {statistics.median(cijoe) / statistics.median(ready):.2f}x")
    print(f"hot-remove: seen by guest (s):      {stats(removed)}")
    print(f"hot-remove: DEVICE_DELETED (s):     {stats(deleted_ev)}")
    print(f"hot-add: namespace in guest (s):    {stats(added)}")


if __name__ == "__main__":
    main()
