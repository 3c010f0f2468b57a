"""The user's SPDK tree, as they built it: its files read on the host (tree: libraries, symbol
versions, CPU features, release), checked against an image and the QEMU's CPU before a boot, its
apps run in a guest (runtime, hotplug_app), driven over SPDK's own JSON-RPC client (rpc). Imports
guest, vm (the guest CPU model), image, report, config and the base modules."""

from orchestrator.spdk.runtime import (
                                       DOORBELL_AERS,
                                       DOORBELL_CASES,
                                       HOTPLUG,
                                       HUGEPAGES,
                                       MOUNT,
                                       PROBE_APPS,
                                       RPC_HUGEPAGES,
                                       AppDidNotStart,
                                       DoorbellAers,
                                       app,
                                       claimed,
                                       command,
                                       doorbell_aers,
                                       driver,
                                       not_started,
                                       preflight,
                                       prepare,
                                       running,
                                       serve,
                                       start_probe,
)

__all__ = ["DOORBELL_AERS", "DOORBELL_CASES", "HOTPLUG", "HUGEPAGES", "MOUNT", "PROBE_APPS", "RPC_HUGEPAGES",
           "AppDidNotStart", "DoorbellAers", "app", "claimed", "command", "doorbell_aers", "driver", "not_started", "preflight",
           "prepare", "running", "serve", "start_probe"]
