"""Which QEMU runs the machines, and what it can do.

Chosen once per run: `--qemu PATH|NAME`, else `TBCTL_QEMU`, else the topology's `qemu`, else the
first `qemu-system-x86_64` on PATH (a NAME is one `tbctl qemu install` made, e.g. backports).
What tbctl uses that differs by version (NVMe properties, netdev backends, trace events) is read
from the binary itself (`-device nvme,help`, `-netdev help`, `-L help`, `-trace help`), once per
binary (cached by its content hash), never assumed from a version number. A binary in a
private prefix (`tbctl qemu install`) carries a manifest: its module directory and its own data
directory, searched before the host's, so its firmware (qboot, option ROMs) is its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, MachineError
from orchestrator.paths import cache_dir

ENV = "TBCTL_QEMU"
DEFAULT = "qemu-system-x86_64"
MANIFEST = "tbctl-qemu.json"  # at the top of a private prefix
PROBE_TIMEOUT = 30.0
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)")
TRACED = ("pci_nvme_", "acpi_pci_")  # trace event families tbctl enables and parses
# QEMU 10.0's multi-threaded TCG (a host thread per vCPU) at times leaves a vCPU's local timer
# interrupt in service with no handler running (`info lapic`: ISR 236, PPR 0xe0): that vCPU then
# idles in HLT for good, taking neither timer nor device interrupts (RCU stalls, "timer wakeup
# didn't happen", a missed hotplug event, fio stuck). Seen in 3 of 3 guests looping PCI remove +
# rescan on 10.0.2 (stuck within 80-150 s, xAPIC or x2APIC alike), never on 7.2 (223 cycles) nor
# on 10.0.2 with one TCG thread for all vCPUs (2 guests, 647 cycles).
TCG_SINGLE_THREAD_FROM = (10, 0)
PROBE_SCHEMA = 2  # bumped when the probe learns something new: older cached probes are asked again


@dataclass(frozen=True)
class Qemu:
    path: Path
    chosen_by: str  # "--qemu", "TBCTL_QEMU", "topology", "PATH"
    origin: str  # where the binary came from: "host" or the prefix's manifest ("Debian bookworm-backports ...")
    version_line: str
    version: tuple[int, int, int]
    env: tuple[tuple[str, str], ...] = ()  # QEMU_MODULE_DIR of a private prefix
    own_datadirs: tuple[str, ...] = ()  # given with -L, before the compiled-in ones
    datadirs: tuple[str, ...] = ()  # every directory it searches for firmware, in order
    nvme_properties: frozenset[str] = frozenset()
    netdevs: frozenset[str] = frozenset()
    trace_events: frozenset[str] = frozenset()  # of the families tbctl reads (TRACED)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.version[:2] >= (major, minor)

    def accel_option(self, accel: str) -> str:
        """Its -accel for `accel`: TCG in one thread for all vCPUs where its multi-threaded TCG
        loses timer interrupts (TCG_SINGLE_THREAD_FROM)."""
        if accel == "tcg" and self.at_least(*TCG_SINGLE_THREAD_FROM):
            return "tcg,thread=single"
        return accel

    def argv(self) -> list[str]:
        """The binary and its own data directories: the start of every command line."""
        return [str(self.path)] + [a for d in self.own_datadirs for a in ("-L", d)]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **dict(self.env)}

    def firmware(self, name: str) -> Path | None:
        """`name` as this QEMU would find it: in its own data directories first."""
        return next((Path(d) / name for d in self.datadirs if (Path(d) / name).is_file()), None)

    def describe(self) -> str:
        return f"QEMU {self.version_text} ({self.path}, {self.origin}; chosen by {self.chosen_by})"

    def record(self) -> dict[str, str]:
        """What results.json says about the QEMU a result came from."""
        return {"path": str(self.path), "version": self.version_text, "version_line": self.version_line,
                "origin": self.origin, "chosen_by": self.chosen_by}


_current: Qemu | None = None


def use(q: Qemu) -> Qemu:
    """Make `q` the QEMU this process runs (the CLI and the suite engine choose once)."""
    global _current
    _current = q
    return q


def current() -> Qemu:
    """The chosen QEMU; without a choice, the one TBCTL_QEMU or PATH gives."""
    return _current if _current is not None else use(select())


def select(explicit: str | None = None, topology_qemu: str | None = None, topology_source: str = "") -> Qemu:
    """The QEMU to run, by precedence: --qemu, TBCTL_QEMU, the topology's `qemu`, PATH."""
    value, how = next((v, h) for v, h in ((explicit, "--qemu"), (os.environ.get(ENV), ENV),
                                          (topology_qemu, "topology"), (DEFAULT, "PATH")) if v)
    return probe(_resolve(value, f"{topology_source}: qemu" if how == "topology" else how), how)


def prefixes() -> Path:
    """Where `tbctl qemu install` puts private prefixes, one per source."""
    return cache_dir() / "qemu"


def installed() -> dict[str, Path]:
    """Installed private QEMUs: their name (the source) -> binary."""
    found = {}
    for manifest in sorted(prefixes().glob(f"*/{MANIFEST}")):
        found[manifest.parent.name] = manifest.parent / json.loads(manifest.read_text())["binary"]
    return found


def _resolve(value: str, where: str) -> Path:
    """A path, a name `tbctl qemu install` gave (backports), or a name on PATH."""
    named = installed().get(value) if "/" not in value else None
    if named is not None:
        return named
    found = shutil.which(value) if "/" not in value else (value if os.access(value, os.X_OK) else None)
    if not found:
        what = "no such executable" if "/" in value else "not found on PATH"
        raise ConfigError(f"{where}: {value!r}: {what}; give the path of a qemu-system-x86_64 or the name of "
                          "an installed one (tbctl qemu list)")
    return Path(found).resolve()


def _manifest(binary: Path) -> tuple[Path, dict[str, Any]] | None:
    for d in binary.parents:
        if (d / MANIFEST).is_file():
            return d, json.loads((d / MANIFEST).read_text())
    return None


def _digest(binary: Path) -> str:
    h = hashlib.sha256(str(binary).encode())
    with open(binary, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def probe(binary: Path, chosen_by: str = "PATH") -> Qemu:
    """What `binary` is and can do, asked of the binary itself; cached by its content hash."""
    found = _manifest(binary)
    prefix, manifest = found if found else (None, {})
    env = {k: str(prefix / v) for k, v in manifest.get("env", {}).items()} if prefix else {}
    own = tuple(str(prefix / d) for d in manifest.get("datadirs", [])) if prefix else ()
    cache = cache_dir() / f"qemu-probe-{_digest(binary)}-v{PROBE_SCHEMA}.json"
    try:
        facts = json.loads(cache.read_text())
    except (OSError, ValueError):
        facts = _ask(binary, env, own)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(facts, indent=1) + "\n")
    m = _VERSION.search(facts["version_line"])
    if m is None:
        raise MachineError(f"{binary}: not a QEMU system emulator (its --version says {facts['version_line']!r})")
    return Qemu(binary, chosen_by, manifest.get("origin", "host"), facts["version_line"],
                (int(m[1]), int(m[2]), int(m[3])), tuple(sorted(env.items())), own, tuple(facts["datadirs"]),
                frozenset(facts["nvme_properties"]), frozenset(facts["netdevs"]), frozenset(facts["trace_events"]))


def _ask(binary: Path, env: dict[str, str], own: tuple[str, ...]) -> dict[str, Any]:
    base = [str(binary)] + [a for d in own for a in ("-L", d)]

    def run(*args: str) -> str:
        try:
            r = subprocess.run(base + list(args), capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                               env={**os.environ, **env}, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise MachineError(f"{binary} {' '.join(args)} did not answer within {PROBE_TIMEOUT:g} s") from None
        except OSError as e:
            raise MachineError(f"{binary}: cannot run: {e}") from None
        return r.stdout

    version = run("--version").splitlines()
    nvme = re.findall(r"^\s+([\w.-]+)=", run("-device", "nvme,help"), re.M)
    netdevs = [ln.strip() for ln in run("-netdev", "help").splitlines()[1:] if ln.strip()]
    # A build without a trace backend lists none: tbctl then enables none and says so where it matters.
    traces = [t for t in run("-trace", "help").split() if t.startswith(TRACED)]
    return {"version_line": version[0] if version else "", "datadirs": run("-L", "help").split(),
            "nvme_properties": sorted(nvme), "netdevs": sorted(netdevs), "trace_events": sorted(traces)}
