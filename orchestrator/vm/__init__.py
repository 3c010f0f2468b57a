"""One QEMU process and the channels to it, modelled on QEMU's python/qemu/machine: the binary and
what it can do (qemu_binary, qemu_install), the accelerator, the command line, launch, console,
QMP, qtest, its own crash (qemu_core), escalating shutdown, and the registry of live VMs. Knows
nothing of the guest's insides, of pytest or of fault injection. Imports config, report, image,
net and the base modules."""
