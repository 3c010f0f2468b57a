"""Green under load, measured (printed, never asserted): `tbctl repro TARGET` on an idle host, then
beside each load, on each QEMU asked for, each followed by repro's own summary (failure rate with
its interval, the signatures seen), and a last table of pass counts per target, load and QEMU.

Loads (--loads, comma-separated; default idle,vm):
  idle     nothing else runs
  hogs     one CPU spinner per host core beside the runs (VMs and hogs want twice the CPUs)
  vm       another tbctl VM beside the suite (`tbctl up`), its guest busy with random I/O on both
           its NVMe namespaces and a spinning CPU: what `tbctl repro --jobs 2`, two suites at
           once or a developer's own VM put on a 2-core host
  suites   two copies of the same repro at once (the counts are the first copy's)

Usage: .venv/bin/python bench/under_load.py TARGET [TARGET...] [--runs N] [--loads L] [--qemu Q,Q] [--keep DIR]
                                            [-- REPRO-ARGS]
  e.g. bench/under_load.py sw_hotplug dm_mount --runs 10 --loads vm --qemu host,backports
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TBCTL = [sys.executable, "-m", "orchestrator.cli"]
BUSY_VM = "bench-busy"
# The busy guest's work: fio's random I/O on each namespace and a shell spinning on a CPU, until killed.
BUSY = ("for d in /dev/nvme0n1 /dev/nvme1n1; do setsid fio --name=busy --filename=$d --rw=randrw --bs=4k "
        "--direct=1 --ioengine=libaio --iodepth=8 --time_based --runtime=86400 >/dev/null 2>&1 </dev/null & done; "
        "setsid sh -c 'while :; do :; done' >/dev/null 2>&1 </dev/null &")
_RATE = re.compile(r"^repro: (\d+) of \d+ runs, (\d+) failed")


def _spin() -> None:
    while True:
        pass


def tbctl(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TBCTL, *args], capture_output=True, text=True, timeout=timeout, env=env)


@contextlib.contextmanager
def load(kind: str, env: dict[str, str], qemu: list[str]) -> Iterator[None]:
    """The load running beside the block."""
    procs: list[multiprocessing.Process] = []
    if kind == "hogs":
        procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
        for p in procs:
            p.start()
    elif kind == "vm":
        up = tbctl(env, "up", "--name", BUSY_VM, *qemu)
        if up.returncode != 0:
            raise SystemExit(f"bench: the busy VM did not come up: {up.stderr.strip()[-500:]}")
        busy = tbctl(env, "ssh", BUSY_VM, "--", BUSY, timeout=120)
        if busy.returncode != 0:
            raise SystemExit(f"bench: the busy VM's load did not start: {busy.stderr.strip()[-500:]}")
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        if kind == "vm":
            tbctl(env, "down", BUSY_VM)


def repro(target: str, runs: int, extra: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*TBCTL, "repro", target, "-n", str(runs), "--jobs", "1", "--seed", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=out, env=env)


def measure(target: str, kind: str, runs: int, extra: list[str], env: dict[str, str], out: Path,
            qemu: list[str]) -> tuple[float, list[str]]:
    """Seconds taken and repro's summary lines (the first copy's, for `suites`)."""
    t0 = time.monotonic()
    with load(kind, env, qemu):
        copies = [repro(target, runs, extra + qemu, env, out) for _ in range(2 if kind == "suites" else 1)]
        try:
            outputs = [p.communicate(timeout=6 * 3600)[0] for p in copies]
        finally:  # a bench stopped (SIGTERM, Ctrl-C) stops its repros too: they tear their VMs down
            for p in copies:
                if p.poll() is None:
                    p.terminate()
                    p.wait(120)
    return time.monotonic() - t0, [ln for ln in outputs[0].splitlines() if ln.strip()]


def main() -> None:
    # a bench stopped with SIGTERM still takes its busy VM down (the `finally` of `load`)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--loads", default="idle,vm")
    p.add_argument("--qemu", default="host", help="QEMUs by tbctl's --qemu name (host: the one on PATH)")
    p.add_argument("--keep", type=Path, help="keep every run's artifacts in this directory (default: deleted)")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    table = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep.resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbctl-bench-load-"))
        env = dict(os.environ, TBCTL_ARTIFACTS=tmp)
        for q in args.qemu.split(","):
            qemu = [] if q == "host" else ["--qemu", q]
            for target in args.targets:
                for kind in args.loads.split(","):
                    took, lines = measure(target, kind, args.runs, extra, env, Path(tmp), qemu)
                    print(f"== {target} x{args.runs}, load {kind}, QEMU {q}: {took:.0f} s", flush=True)
                    for ln in lines:
                        print(f"   {ln}", flush=True)
                    m = next((m for ln in lines if (m := _RATE.match(ln))), None)
                    passed = f"{int(m[1]) - int(m[2])}/{m[1]}" if m else "no result"
                    table.append((target, kind, q, passed))
    print(f"\n{'target':40} {'load':8} {'QEMU':10} passed")
    for row in table:
        print(f"{row[0]:40} {row[1]:8} {row[2]:10} {row[3]}")


if __name__ == "__main__":
    main()
