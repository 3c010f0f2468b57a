"""tbctl: a QEMU-based VM test-bed for NVMe and SPDK testing.

Packages by layer; an import only ever points down this list (scripts/layers checks it in CI):

    cli/       argparse and printing: one module per command group
    engine/    the suite engine on pytest (the only package that imports pytest)
    results/   what runs leave, read without pytest: outcomes, merge, baseline, shards, JUnit, HTML, repro
    faults/    hotplug, registers, traces: fault injection into a machine
    vagrant/   the same machines for the top-level Vagrantfile (vagrant-libvirt)
    spdk/      the user's SPDK tree: its files, its apps in a guest, its JSON-RPC
    machines/  a machine as tests see it: a QEMU with its guest reachable and ready; snapshots
    vm/        one QEMU process and what talks to it (QMP, console, qtest); the QEMU binary
    guest/     inside the guest over SSH: commands, NVMe state, binding, apps that watch hotplug
    image/     guest images: recipes, the build, the image's userland on the host
    net/       host resources several machines share: loopback ports
    report/    text in, findings out: crash titles, hotplug and queue verdicts (no I/O)
    config/    topologies: plain data and validation, before anything boots
    errors, paths, render: the base every package may use
"""

__version__ = "0.1.0"
