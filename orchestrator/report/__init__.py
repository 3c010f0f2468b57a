"""Text in, findings out, no I/O: kernel, app and QEMU crash titles from a table of patterns
(crash), why an SPDK app did not start (spdk_start), where a device removal stopped (acpi_hotplug),
what an NVMe admin queue last did (nvme_queues), where a killed command's tasks are stuck in the
kernel (stuck_tasks), the steps of an SPDK test script (spdk_steps). Tested against corpora of real
output. Imports only the base modules."""
