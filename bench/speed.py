"""The figures a user waits on (issue 16), each beside a baseline measured in the same run: the
same figures of another revision of tbctl (default: the one before the speed work), checked out
in a temporary worktree and run on this machine, on each QEMU given. Printed, never asserted.

- boot -> first SSH command, and where that time goes (QEMU and firmware, kernel, initrd, PID 1,
  network, sshd listening, first handshake, controller probe), from the host's timings and the
  guest's console markers;
- restored from the snapshot -> NVMe ready;
- `tbctl run sw_hotplug` wall (image cached), and its tests' set-up, body and teardown;
- `tbctl repro sw_hotplug::test_orderly_hotplug` runs per minute (--jobs 2);
- a bed test's run from restored beds (`tbctl run --snapshot`, what each run of a repro is: a
  revision without restored beds boots them cold), whole command against the test's body, and
  the overhead around the body as a part of it (after one run that makes the saves);
- `tbctl up`, then its first `tbctl ssh X -- true`, and a warm one (after the first), each a
  whole command as a person types it;
- the unit tests (`-m "not vm"`) wall.

Usage: .venv/bin/python bench/speed.py [--runs 5] [--baseline REV] [--qemu NAME ...] [--only FIGURE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = "91c12e5"  # stop 21: the figures issue 16 was filed with
FIGURES = ("boot", "restore", "run", "repro", "bed", "ssh", "unit")
BED_TEST = "nvmf_shutdown::test_target_stopped_under_io[kernel_target-kernel_host-tcp]"

# Runs inside the tree being measured (its own orchestrator on PYTHONPATH): only APIs both have.
BOOTS = r"""
import json, sys, tempfile
from pathlib import Path
from orchestrator import image
from orchestrator.config import topology
from orchestrator.machines import Machine, snapshot
from orchestrator.vm import accel
restore, n = sys.argv[1] == "restore", int(sys.argv[2])
img = image.ensure()
acc = accel.resolve("auto", img)
topo = topology.default()
saved = snapshot.ensure(topo, img, acc) if restore else None
out = Path(tempfile.mkdtemp(prefix="boots-", dir="."))  # in the run's temporary directory, removed with it
for i in range(n):
    with Machine(topo, img, out / str(i), accel=acc, restore=saved) as m:
        t = dict(m.timings)
    console = (out / str(i) / "console.log").read_text(errors="replace")
    print(json.dumps({"t": {k: v - t["launched"] for k, v in t.items()}, "console": console[:4000]}), flush=True)
"""
_BOOT = re.compile(r"TBCTL-BOOT initrd ([\d.]+), root mounted ([\d.]+)")
_READY = re.compile(r"TBCTL-READY sshd ([\d.]+) \(rc ([\d.]+), net ([\d.]+)\)")


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def phases(sample: dict) -> dict[str, float]:
    """One boot's time by phase, in seconds; guest times are its uptime at each console marker."""
    t, console = sample["t"], sample["console"]
    out = {"boot -> first SSH command": t["ready"], "boot -> NVMe ready": t["nvme"]}
    b, r = _BOOT.search(console), _READY.search(console)
    if b and r:
        initrd, root, sshd, rc, net = map(float, (*b.groups(), *r.groups()))
        out.update({"QEMU + firmware": t["marker"] - sshd, "kernel to initrd": initrd,
                    "initrd (root mounted)": root - initrd, "PID 1 to boot script": rc - root, "network": net - rc, "sshd listening": sshd - net,
                    "first SSH command": t["ready"] - t["marker"], "controllers probed": t["nvme"] - t["ready"]})
    return out


class Tree:
    """A revision of tbctl on this machine: the checkout itself, or a temporary worktree."""

    def __init__(self, rev: str | None, tmp: Path):
        self.rev = rev or "this checkout"
        self.root = REPO
        if rev:
            self.root = tmp / f"tree-{rev}"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(self.root), rev],
                           check=True, capture_output=True, timeout=120)

    def env(self, qemu: str | None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        if qemu:
            env["TBCTL_QEMU"] = qemu
        return env

    def run(self, args: list[str], qemu: str | None, cwd: Path,
            timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], env=self.env(qemu), cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)

    def remove(self) -> None:
        if self.root != REPO:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.root)],
                           capture_output=True, timeout=120)


def boots(tree: Tree, qemu: str | None, how: str, runs: int, tmp: Path) -> list[dict[str, float]]:
    r = tree.run(["-c", BOOTS, how, str(runs)], qemu, tmp)
    if r.returncode != 0:
        raise SystemExit(f"{tree.rev}: {how} boots failed:\n{r.stderr[-3000:]}")
    return [phases(json.loads(line)) for line in r.stdout.splitlines() if line.startswith("{")]


def suite_run(tree: Tree, qemu: str | None, runs: int, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"tbctl run sw_hotplug wall": [], "setup": [], "call": [], "teardown": []}
    for i in range(runs):
        t0 = time.monotonic()
        r = tree.run(["-m", "orchestrator.cli", "run", "sw_hotplug", "--json", f"r{i}.json"], qemu, tmp)
        out["tbctl run sw_hotplug wall"].append(time.monotonic() - t0)
        if r.returncode not in (0, 1):
            raise SystemExit(f"{tree.rev}: tbctl run sw_hotplug exit {r.returncode}:\n{r.stdout[-3000:]}")
        for k, v in phase_seconds(tmp / f"r{i}.json").items():
            out[k].append(v)
    return out


def phase_seconds(results: Path) -> dict[str, float]:
    """A run's tests' set-up, body and teardown, added up, from its results.json."""
    tests = json.loads(results.read_text())["tests"]
    spent = dict.fromkeys(("setup", "call", "teardown"), 0.0)
    for t in (tests.values() if isinstance(tests, dict) else tests):
        for e in t.get("events", []):
            if e["kind"] == "phase" and e["what"] in spent:
                spent[e["what"]] += e["end"] - e["at"]
    return spent


def bed_runs(tree: Tree, qemu: str | None, runs: int, tmp: Path) -> dict[str, list[float]]:
    """`tbctl run BED_TEST --snapshot`, as a repro's run: the whole command, the test's body, and
    what is around the body as a part of it; one run first makes the saves and is not counted."""
    out: dict[str, list[float]] = {"bed test run wall (--snapshot)": [], "bed test body": [],
                                   "bed overhead / body (ratio)": []}
    for i in range(runs + 1):
        t0 = time.monotonic()
        r = tree.run(["-m", "orchestrator.cli", "run", BED_TEST, "--snapshot", "--json", f"bed{i}.json"], qemu, tmp)
        wall = time.monotonic() - t0
        if r.returncode not in (0, 1):  # a failed test still took its time: the guest kernel's fio bugs
            raise SystemExit(f"{tree.rev}: tbctl run {BED_TEST} exit {r.returncode}:\n{r.stdout[-3000:]}")
        if i:
            body = phase_seconds(tmp / f"bed{i}.json")["call"]
            out["bed test run wall (--snapshot)"].append(wall)
            out["bed test body"].append(body)
            out["bed overhead / body (ratio)"].append((wall - body) / body)
    return out


def repro_rate(tree: Tree, qemu: str | None, runs: int, tmp: Path) -> float:
    r = tree.run(["-m", "orchestrator.cli", "repro", "sw_hotplug::test_orderly_hotplug", "-n", str(max(runs, 10)),
                  "--jobs", "2", "--seed", "1"], qemu, tmp)
    rates = re.findall(r"([\d.]+) runs/min", r.stderr + r.stdout)
    return float(rates[-1]) if rates else float("nan")


def up_and_ssh(tree: Tree, qemu: str | None, runs: int, tmp: Path) -> dict[str, list[float]]:
    """Each run: `tbctl up`, the first `tbctl ssh -- true`, a warm one; a registry of its own."""
    out: dict[str, list[float]] = {"tbctl up": [], "first tbctl ssh -- true": [], "warm tbctl ssh -- true": []}
    env = {**tree.env(qemu), "TBCTL_STATE": str(tmp / f"state-{tree.rev}")}

    def timed(*args: str) -> float:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, cwd=tmp, capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"{tree.rev}: tbctl {' '.join(args)} exit {r.returncode}:\n{r.stderr[-3000:]}")
        return time.monotonic() - t0
    for i in range(runs):
        name = f"speed{i}"
        out["tbctl up"].append(timed("up", "--name", name))
        try:
            out["first tbctl ssh -- true"].append(timed("ssh", name, "--", "true"))
            out["warm tbctl ssh -- true"].append(timed("ssh", name, "--", "true"))
        finally:
            timed("down", name)
    return out


def unit_tests(tree: Tree, runs: int, tmp: Path) -> list[float]:
    walls = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not vm", "-p", "no:cacheprovider"],
                       cwd=tree.root, env=tree.env(None), capture_output=True, timeout=3600)
        walls.append(time.monotonic() - t0)
    return walls


def measure(tree: Tree, qemu: str | None, runs: int, only: set[str], tmp: Path) -> dict[str, float]:
    fig: dict[str, float] = {}
    if "boot" in only:
        samples = boots(tree, qemu, "cold", runs, tmp)
        for name in samples[0]:
            fig[name] = med([s[name] for s in samples if name in s])
    if "restore" in only:  # a restored guest's NVMe ready counts from its load, not a boot
        fig["restored -> NVMe ready"] = med([s["boot -> NVMe ready"] for s in boots(tree, qemu, "restore", runs, tmp)])
    if "run" in only:
        fig.update({k: med(v) for k, v in suite_run(tree, qemu, runs, tmp).items()})
    if "repro" in only:
        fig["repro runs/min (--jobs 2)"] = repro_rate(tree, qemu, runs, tmp)
    if "bed" in only:
        fig.update({k: med(v) for k, v in bed_runs(tree, qemu, runs, tmp).items()})
    if "ssh" in only:
        fig.update({k: med(v) for k, v in up_and_ssh(tree, qemu, runs, tmp).items()})
    if "unit" in only and qemu is None:
        fig["unit tests wall"] = med(unit_tests(tree, runs, tmp))
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per figure; the median is printed (default 5)")
    ap.add_argument("--baseline", default=BASELINE, help=f"the revision to compare with (default {BASELINE})")
    ap.add_argument("--qemu", action="append", default=[], metavar="NAME",
                    help="a QEMU besides PATH's (tbctl qemu list), e.g. backports; again for more")
    ap.add_argument("--only", action="append", choices=FIGURES, help="only these figures (default: all)")
    args = ap.parse_args()
    only = set(args.only or FIGURES)
    with tempfile.TemporaryDirectory(prefix="tbctl-speed-") as tmp_name:
        tmp = Path(tmp_name)
        trees = [Tree(args.baseline, tmp), Tree(None, tmp)]
        try:
            for qemu in [None, *args.qemu]:
                base, now = (measure(t, qemu, args.runs, only, tmp) for t in trees)
                print(f"\nQEMU {qemu or 'from PATH'}, medians of {args.runs} (seconds unless said)")
                print(f"{'figure':34} {'baseline ' + args.baseline:>18} {'now':>9} {'now/baseline':>13}")
                for name in now:
                    b, n = base.get(name, float("nan")), now[name]
                    print(f"{name:34} {b:18.2f} {n:9.2f} {n / b if b else float('nan'):12.2f}x")
        finally:
            for t in trees:
                t.remove()


if __name__ == "__main__":
    main()
