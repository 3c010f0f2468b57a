"""SMART critical warnings raised at run time: QEMU's NVMe controller keeps its SMART / Health
log's Critical Warning in its `smart_critical_warning` property, settable with qom-set while the
guest runs; each bit it newly sets also posts a SMART / Health AER to a host that enabled that
event (SPDK enables them; Linux 6.1 does not, and finds the warning in the log)."""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, Kind, Param, Timing
from orchestrator.faults.timing import Timed

PROPERTY = "smart_critical_warning"
# Critical Warning bits of the SMART / Health log (NVMe base spec, log page 02h, byte 0).
BITS = {"spare": 0x01, "temperature": 0x02, "reliability": 0x04, "read-only": 0x08, "volatile-memory": 0x10}


def _path(ctrl_id: str) -> str:
    return f"/machine/peripheral/{ctrl_id}"


def warning(machine: Injectable, ctrl_id: str, timeout: float = 10) -> int:
    """The controller's Critical Warning byte, as QEMU holds it."""
    return int(machine.qmp.execute("qom-get", {"path": _path(ctrl_id), "property": PROPERTY}, timeout))


def _smart_warning(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    m.topology.controller(a["ctrl"])  # one the topology has
    timed = t.timed()
    timed.delay(f"smart-warning {a['ctrl']} {a['bit']}")
    before = warning(m, a["ctrl"], t.timeout)
    value = 0 if a["bit"] == "none" else before | BITS[a["bit"]]  # bits add up; `none` clears them all
    m.qmp.execute("qom-set", {"path": _path(a["ctrl"]), "property": PROPERTY, "value": value}, t.timeout)
    return f"{a['ctrl']}: SMART critical warning {before:#04x} -> {value:#04x}", timed


KINDS = (
    Kind("smart-warning", "raise a SMART critical warning bit on a controller (QEMU's smart_critical_warning): "
         "in its SMART log, and a SMART/Health AER where the host enabled it; none clears them",
         (CTRL, Param("bit", "the warning", (*BITS, "none"))), _smart_warning),
)
