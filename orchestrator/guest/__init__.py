"""Inside the guest, over SSH: bounded commands (ssh), the NVMe state and driver binding (nvme),
uevents, and apps that report controllers coming and going (hotplug_app). Takes an SSH channel,
not a VM, so it works on a guest tbctl did not start. Imports config, report and the base modules."""

from orchestrator.guest.nvme import (
                                     DRIVERS,
                                     NvmeWait,
                                     NvmeWatch,
                                     UeventWatch,
                                     all_present,
                                     bind,
                                     identities,
                                     kernel_log,
                                     mount_command,
                                     mount_share,
                                     nvme_state,
                                     reserve_hugepages,
                                     settle,
)

__all__ = ["DRIVERS", "NvmeWait", "NvmeWatch", "UeventWatch", "all_present", "bind", "identities", "kernel_log", "mount_command",
           "mount_share", "nvme_state", "reserve_hugepages", "settle"]
