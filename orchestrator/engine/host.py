"""What the host went through while a test ran: load, CPU frequency and thermal throttling,
temperatures, pressure (PSI) and steal time. A flake under TCG is often the host's doing (the
seed's analysis of a crashed NVMe-oF node could not rule out 80 °C and throttling), so every
test's results carry these, and the summary flags a test that ran throttled or overloaded
(orchestrator.results.lines).
What the host does not expose is recorded as "not available", never guessed."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NA = "not available"


@dataclass
class Sample:
    """The host's counters at one moment (cumulative ones are turned into rates by `conditions`)."""

    at: float
    cpu_jiffies: tuple[int, int] | None  # (all, steal) from /proc/stat
    throttles: int | None  # thermal_throttle core + package events, all CPUs
    root: Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def sample(root: Path = Path("/")) -> Sample:
    stat = _read(root / "proc/stat")
    jiffies = None
    if stat and (m := re.match(r"cpu\s+(.*)", stat)):
        fields = [int(x) for x in m.group(1).split()]
        jiffies = (sum(fields[:8]), fields[7] if len(fields) > 7 else 0)
    counts = [int(t) for p in (root / "sys/devices/system/cpu").glob("cpu[0-9]*/thermal_throttle/*_throttle_count")
              if (t := (_read(p) or "").strip()).isdigit()]
    return Sample(time.monotonic(), jiffies, sum(counts) if counts else None, root)


def _temperatures(root: Path) -> dict[str, float] | str:
    """°C by sensor: hwmon's temp*_input (named by chip and label), else the thermal zones."""
    temps: dict[str, float] = {}
    for t in sorted((root / "sys/class/hwmon").glob("hwmon*/temp*_input")):
        value = (_read(t) or "").strip()
        if value.lstrip("-").isdigit():
            chip = (_read(t.parent / "name") or t.parent.name).strip()
            label = (_read(t.with_name(t.name.replace("_input", "_label"))) or t.name.split("_")[0]).strip()
            temps[f"{chip}/{label}"] = int(value) / 1000
    if not temps:
        for z in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
            value = (_read(z / "temp") or "").strip()
            if value.lstrip("-").isdigit():
                temps[f"{(_read(z / 'type') or z.name).strip()}/{z.name}"] = int(value) / 1000
    return temps or NA


def _frequencies(root: Path) -> dict[str, float] | str:
    mhz = [int(v) / 1000 for p in (root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")
           if (v := (_read(p) or "").strip()).isdigit()]
    return {"min_mhz": min(mhz), "max_mhz": max(mhz)} if mhz else NA


def _pressure(root: Path) -> dict[str, float] | str:
    """PSI "some avg10" (%) for cpu, memory and io."""
    psi = {}
    for kind in ("cpu", "memory", "io"):
        text = _read(root / "proc/pressure" / kind)
        if text and (m := re.search(r"^some avg10=([\d.]+)", text, re.M)):
            psi[kind] = float(m.group(1))
    return psi or NA


def conditions(before: Sample, after: Sample) -> dict[str, Any]:
    """The host's conditions over a test, from samples taken at its start and end."""
    root = after.root
    load = (_read(root / "proc/loadavg") or "").split()[:3]
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load": [float(x) for x in load] if load else NA}
    if before.cpu_jiffies and after.cpu_jiffies and after.cpu_jiffies[0] > before.cpu_jiffies[0]:
        out["steal_pct"] = round(100 * (after.cpu_jiffies[1] - before.cpu_jiffies[1])
                                 / (after.cpu_jiffies[0] - before.cpu_jiffies[0]), 1)
    else:
        out["steal_pct"] = NA
    out["throttle_events"] = (after.throttles - before.throttles
                              if before.throttles is not None and after.throttles is not None else NA)
    out["cpu_freq"] = _frequencies(root)
    out["temperatures_c"] = _temperatures(root)
    out["pressure_pct"] = _pressure(root)
    return out
