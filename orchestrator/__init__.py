"""tbctl: a QEMU-based VM test-bed for NVMe and SPDK testing."""

__version__ = "0.1.0"
