"""tbctl's machines under Vagrant (the top-level Vagrantfile, vagrant-libvirt): the same topology
files and image as `tbctl up`, and the same device template. Imports vm, spdk, guest, image,
config and the base modules."""

from orchestrator.vagrant.libvirt import VagrantMachine, clean, config, kvm_warning, machines, prepare

__all__ = ["VagrantMachine", "clean", "config", "kvm_warning", "machines", "prepare"]
