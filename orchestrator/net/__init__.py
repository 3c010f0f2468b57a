"""Host resources that outlive one QEMU and that several machines share: loopback ports. Imports
only the base modules."""
