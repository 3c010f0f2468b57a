"""Host resources that outlive one QEMU and that several machines share: loopback ports, and the
ends of a bed's networks (links). Imports config and the base modules."""
