"""Boot figures for the built-in `pair` bed (two VMs joined by a dgram network), printed beside a
single default guest booted in the same run as the baseline (printed, never asserted).

For each boot: launch -> every machine answers SSH and shows its NVMe controllers; then the two
ends of the fabric reach each other. A bed boots its machines side by side, so on 2 host cores
its time is what two guests booting at once cost, not twice one.

Usage: .venv/bin/python bench/bed_boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator import image
from orchestrator.config import bed as beds
from orchestrator.config import topology
from orchestrator.guest import net
from orchestrator.machines import Machine
from orchestrator.machines import bed as machine_beds
from orchestrator.vm import accel


def stats(xs: list[float]) -> str:
    return f"min {min(xs):6.2f}  median {statistics.median(xs):6.2f}  max {max(xs):6.2f} s  (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    img = image.ensure()
    acc = accel.resolve("auto", img)
    out = Path(tempfile.mkdtemp(prefix="tbctl-bench-bed-"))
    single, pair, reach = [], [], []
    for i in range(args.runs):
        t0 = time.monotonic()
        with Machine(topology.default(), img, out / f"single{i}", accel=acc):
            single.append(time.monotonic() - t0)
        t0 = time.monotonic()
        machines = machine_beds.boot(beds.pair(), img, acc, out / f"pair{i}")
        try:
            pair.append(time.monotonic() - t0)
            host, target = machines["host"], machines["target"]
            t1 = time.monotonic()
            assert net.reachable(host.ssh, target.topology.nics[0].ip), "the bed's ends do not reach each other"
            reach.append(time.monotonic() - t1)
        finally:
            machine_beds.shutdown(machines, graceful=False)
    print(f"accel {acc}, image {img.manifest['name']}, artifacts {out}")
    print(f"baseline: one default guest, launch -> ready   {stats(single)}")
    print(f"pair bed: two guests, launch -> both ready     {stats(pair)}")
    print(f"pair bed: first ping across the fabric          {stats(reach)}")


if __name__ == "__main__":
    main()
