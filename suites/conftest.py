"""Suites run on tbctl's pytest plugin (fixtures: machine, machines, ssh, qmp, hotplug, injectors,
fabric, artifacts, run)."""

pytest_plugins = ["orchestrator.pytest_plugin"]
