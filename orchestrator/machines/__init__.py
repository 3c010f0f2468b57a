"""A machine as tests see it: one QEMU (orchestrator.vm) with its guest reachable over SSH and its
NVMe controllers ready (orchestrator.guest), hotplug confirmed by the guest, a graceful poweroff;
and the snapshot fast restore, which saves such a guest once and starts later machines from it.
Imports vm, guest, config, image, net, report and the base modules."""

from orchestrator.machines.machine import Machine

__all__ = ["Machine"]
