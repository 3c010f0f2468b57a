"""The guest's CPU: which model QEMU is given, and the features QEMU itself says that model has.

A tree compiled for the build host's CPU (SPDK's default is -march=native) may use
instructions TCG's `max` model lacks (AVX-512): `tbctl spdk check` compares against this list,
read from QEMU (`query-cpu-model-expansion` on a machine-less QEMU), not from a table of ours.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache

from orchestrator.errors import MachineError
from orchestrator.vm import qemu_binary

PROBE_TIMEOUT = 20.0


def model(accel: str) -> str:
    """The -cpu every machine gets: the host's own under KVM, QEMU's most capable under TCG."""
    return "host" if accel == "kvm" else "max"


def features(accel: str) -> frozenset[str]:
    """The feature names (QEMU's spelling: "avx512f", "sse4.2", ...) the guest CPU has, on the chosen QEMU."""
    return _features(qemu_binary.current(), accel)


@cache
def _features(qemu: qemu_binary.Qemu, accel: str) -> frozenset[str]:
    requests = [{"execute": "qmp_capabilities"},
                {"execute": "query-cpu-model-expansion",
                 "arguments": {"type": "full", "model": {"name": model(accel)}}},
                {"execute": "quit"}]
    argv = [*qemu.argv(), "-machine", "none", "-accel", accel, "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", "stdio"]
    try:
        proc = subprocess.run(argv, input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT, env=qemu.environ())
    except subprocess.TimeoutExpired:
        raise MachineError(f"{qemu.path} -machine none did not answer query-cpu-model-expansion within "
                           f"{PROBE_TIMEOUT:g} s (killed)") from None
    except FileNotFoundError:
        raise MachineError(f"{qemu.path} is not installed") from None
    for line in proc.stdout.splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        ret = reply.get("return")
        if isinstance(ret, dict) and "model" in ret:
            return frozenset(k for k, v in ret["model"].get("props", {}).items() if v is True)
    raise MachineError(f"{qemu.path} gave no CPU model expansion for {model(accel)!r} under {accel}: "
                       f"{(proc.stderr or proc.stdout).strip()[-300:]}")
