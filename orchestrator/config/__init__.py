"""Topologies: what a machine is made of (memory, CPUs, accelerator, vIOMMU, NVMe controllers and
namespaces), as plain data read from TOML and validated before anything boots; every mistake is
one line naming the file, the field and what is allowed. Imports only the base modules."""
