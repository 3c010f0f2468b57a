"""Flake reproduction: one test (or suite) run many times, in parallel VMs, each run its own
`tbctl run` with its own seed and artifacts; then the failure rate with a confidence interval,
the failure signatures, and a replay bundle for the first failing run.

Each run is a separate tbctl process, so runs share nothing but the image cache: no port, name
or file can race (VM names are random, ports are picked and retried, artifacts are per run).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orchestrator.config import runspec
from orchestrator.errors import OUTCOMES
from orchestrator.render import render
from orchestrator.results import shard

RUN_TIMEOUT = 3600.0  # a run's hard deadline on top of its own per-test deadlines


@dataclass
class ReproRun:
    index: int
    seed: int
    exit_code: int = -1
    outcome: str = "infrastructure error"  # the worst outcome among its tests
    signature: str = ""
    artifacts: Path | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome not in ("passed", "skipped")


# Numbers that differ between runs; not a file offset ("qemu-system-x86_64+0xaee864"): one build's crash site.
_NUMBERS = re.compile(r"(?<!\+)\b0x[0-9a-f]+\b|\b\d+(?:\.\d+)?\b")


def signature(test: dict[str, Any]) -> str:
    """What a failed test's failure looks like, stable across runs: its outcome and the first
    line of its message without numbers (crash titles, missed-event lists and assertion texts
    are already stable; durations and addresses are not)."""
    message = (test.get("message") or "").strip().splitlines()
    first = _NUMBERS.sub("N", message[0]) if message else ""
    outcome = test.get("outcome")
    # a crash's message already starts with its outcome ("qemu crashed: QEMU SIGSEGV in ...")
    return (first if first.startswith(f"{outcome}: ") else f"{outcome}: {first}")[:300]


def judge(results: dict[str, Any]) -> tuple[str, str]:
    """(worst outcome, signature of the worst test) of one run's results.json."""
    tests = results.get("tests", [])
    if not tests:
        return "infrastructure error", "infrastructure error: no test ran"
    worst = max(tests, key=lambda t: OUTCOMES.index(t.get("outcome", "infrastructure error")))
    outcome = worst.get("outcome", "infrastructure error")
    return outcome, "" if outcome in ("passed", "skipped") else signature(worst)


def wilson(failures: int, runs: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a failure rate: sound at 0 and n failures and small n."""
    if runs == 0:
        return 0.0, 1.0
    p = failures / runs
    denom = 1 + z * z / runs
    centre = (p + z * z / (2 * runs)) / denom
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def default_jobs(memory_mib: int) -> int:
    """One VM per core (TCG keeps a core busy per vCPU thread), as many as free memory holds."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        avail = memory_mib + 1024
    return max(1, min(os.cpu_count() or 1, avail // (memory_mib + 512)))


@dataclass
class Repro:
    target: str
    runs: int
    jobs: int
    seed: int
    out: Path
    spec: Path  # every run's settings (its seed aside): `tbctl run --spec`
    until_fail: bool = False
    progress: TextIO = sys.stderr
    _done: list[ReproRun] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: float = 0.0

    def seeds(self) -> list[int]:
        """Each run's seed, drawn from the repro's: `--seed` replays the same schedules."""
        rng = random.Random(self.seed)
        return [rng.randrange(1 << 31) for _ in range(self.runs)]

    def command(self, run: ReproRun) -> list[str]:
        return [sys.executable, "-m", "orchestrator.cli", "run", self.target, "--spec", str(self.spec),
                "--seed", str(run.seed), "--json", str(self.out / f"run-{run.index:04d}" / "results.json")]

    def _one(self, run: ReproRun) -> ReproRun:
        if self._stop.is_set():
            return run
        d = self.out / f"run-{run.index:04d}"
        d.mkdir(parents=True, exist_ok=True)
        env = dict(shard.unsharded(os.environ), TBCTL_ARTIFACTS=str(d))
        t0 = time.monotonic()
        with open(d / "tbctl.log", "w") as log:
            try:
                proc = subprocess.run(self.command(run), stdout=log, stderr=subprocess.STDOUT, env=env,
                                      timeout=RUN_TIMEOUT)
                run.exit_code = proc.returncode
            except subprocess.TimeoutExpired:
                log.write(f"\ntbctl repro: run {run.index} passed its {RUN_TIMEOUT:g} s deadline and was killed\n")
        run.seconds = time.monotonic() - t0
        run.artifacts = d
        try:
            run.outcome, run.signature = judge(json.loads((d / "results.json").read_text()))
        except (OSError, ValueError):
            run.outcome, run.signature = "infrastructure error", "infrastructure error: the run wrote no results"
        with self._lock:
            self._done.append(run)
            if run.failed and self.until_fail:
                self._stop.set()
            self._report()
        return run

    def _report(self) -> None:
        n = len(self._done)
        fails = sum(r.failed for r in self._done)
        minutes = (time.monotonic() - self._started) / 60
        rate = n / minutes if minutes > 0 else 0.0
        left = self.runs - n
        eta = f"{left / rate:.1f} min" if rate > 0 and left and not self._stop.is_set() else "-"
        line = f"runs {n}/{self.runs}  failures {fails}  {rate:.1f} runs/min  ETA {eta}"
        if self.progress.isatty():
            self.progress.write("\r" + line.ljust(70))
        else:
            self.progress.write(line + "\n")
        self.progress.flush()

    def execute(self) -> list[ReproRun]:
        self.out.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        runs = [ReproRun(i + 1, s) for i, s in enumerate(self.seeds())]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(self._one, runs))
        if self.progress.isatty():
            self.progress.write("\n")
        return sorted(self._done, key=lambda r: r.index)

    def bundle(self, run: ReproRun) -> Path:
        """A directory that replays `run`: its QEMU command lines with the QMP and guest commands
        each QEMU got (and a crashed QEMU's backtraces), topology, image hash, seed and a script
        that runs the same test with the same seed."""
        assert run.artifacts is not None
        b = self.out / f"bundle-run-{run.index:04d}"
        b.mkdir(exist_ok=True)
        for i, argv in enumerate(sorted(run.artifacts.rglob("qemu.argv"))):
            shutil.copy(argv, b / f"qemu-{i}.argv")
            # what a QEMU developer replays without tbctl: the QMP commands, the guest's commands,
            # and where QEMU crashed or stuck (gdb's backtraces of its core, or of its live threads)
            for log in ("qmp-commands.log", "commands.log", "qemu-core.bt.txt", "qemu-threads.bt.txt", "qemu.stderr"):
                if (argv.parent / log).is_file():
                    shutil.copy(argv.parent / log, b / f"{Path(log).stem}-{i}{Path(log).suffix}")
        results = json.loads((run.artifacts / "results.json").read_text())
        (b / "run.json").write_text(json.dumps({
            "target": self.target, "seed": run.seed, "outcome": run.outcome, "signature": run.signature,
            "image": results.get("image"), "qemu": results.get("qemu"), "tbctl": results.get("tbctl"),
            "accel": results.get("accel"), "topology": results.get("topology"),
            "artifacts": str(run.artifacts)}, indent=2) + "\n")
        spec, copied = runspec.load(self.spec), {}
        for flag, path in (("--topology", spec.topology), ("--bed", spec.bed),
                           ("--spdk-conf", spec.spdk_conf)):  # the replay needs no original
            if path is not None:
                copied[flag] = f"{flag[2:]}{path.suffix}"
                shutil.copy(path, b / copied[flag])
        shutil.copy(self.spec, b / "spec.json")
        script = b / "replay.sh"
        script.write_text(render("repro/replay.sh.j2", target=self.target, seed=run.seed, copied=copied,
                                 index=run.index, digest=(results.get("image") or {}).get("digest", "")))
        script.chmod(0o755)
        return b


def summary(runs: list[ReproRun], planned: int, seed: int, write: Callable[[str], None]) -> None:
    n = len(runs)
    fails = [r for r in runs if r.failed]
    lo, hi = wilson(len(fails), n)
    write(f"repro: {n} of {planned} runs, {len(fails)} failed: failure rate {len(fails) / max(n, 1):.0%} "
          f"(95% CI {lo:.0%}-{hi:.0%}), seed {seed}")
    if fails:
        write("failure signatures:")
        for sig, count in Counter(r.signature for r in fails).most_common():
            write(f"  {count:4d}  {'#' * min(count, 40):40}  {sig}")
        first = min(fails, key=lambda r: r.index)
        write(f"first failing run: {first.index} (seed {first.seed}): {first.artifacts}")
    if runs:
        per_run = sorted(r.seconds for r in runs)[n // 2]
        write(f"median run: {per_run:.1f} s")
